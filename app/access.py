"""The access rules of forward authentication: per protected host, which servers and accounts may pass.

The rules file (`TOBIRA_ACCESS_RULES`, TOML) is a list of rules; a rule names hosts (`grafana.example.com`
or `*.example.com`) and, optionally, the Misskey servers (`instances`) and the accounts (`users`,
`alice@misskey.io`) it lets through. A person passes when a rule naming the visited host lets them through;
a host no rule names lets nobody through. Without a file at all, every signed-in person passes everywhere.

    [[rules]]
    hosts = ["grafana.example.com"]
    instances = ["misskey.example.com"]
    users = ["alice@misskey.io"]

Within one rule, `instances` and `users` both apply when both are given (an account in that list *and* on
one of those servers). The file is read once at start-up and checked in one pass: every problem is listed.
Protocol code: no web framework.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import idna

from app.hosts import host_matches

RULE_KEYS = frozenset({"hosts", "instances", "users"})
# Host names as an operator writes them (local names such as `app.localhost` included), with a port for
# the development servers of TOBIRA_DEV_INSTANCES, which sessions name `host:port`.
_NAME = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?::[0-9]{1,5})?"
)


@dataclass(frozen=True, slots=True)
class Rule:
    hosts: tuple[str, ...]
    instances: tuple[str, ...] | None  # None: any server
    users: frozenset[str] | None  # None: any account; "username@host", lowercase

    def names(self, host: str) -> bool:
        return host_matches(host, self.hosts)

    def lets_through(self, username: str, instance: str) -> bool:
        if self.instances is not None and not host_matches(instance, self.instances):
            return False
        return self.users is None or f"{username}@{instance}".lower() in self.users


@dataclass(frozen=True, slots=True)
class AccessRules:
    """The rules in force; `AccessRules(None)` is "no file": everyone signed in passes."""

    rules: tuple[Rule, ...] | None

    def allows(self, host: str | None, username: str, instance: str) -> bool:
        """Whether account `username@instance` may visit `host` (None: a host nobody named)."""
        if self.rules is None:
            return True
        if host is None:
            return False
        return any(rule.names(host) and rule.lets_through(username, instance) for rule in self.rules)


def load_rules(path: Path | None) -> tuple[AccessRules, list[str]]:
    """The rules in the file at `path` (None: no file), and every problem found in it."""
    if path is None:
        return AccessRules(None), []
    try:
        document = tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        return AccessRules(()), [f"TOBIRA_ACCESS_RULES: cannot read {str(path)!r}: {exc.strerror}"]
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        return AccessRules(()), [f"TOBIRA_ACCESS_RULES: {str(path)!r} is not valid TOML: {exc}"]
    problems: list[str] = []
    unknown = sorted(set(document) - {"rules"})
    if unknown:
        problems.append(f"TOBIRA_ACCESS_RULES: unknown top-level keys {', '.join(unknown)} (only [[rules]])")
    entries = document.get("rules", [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        return AccessRules(()), [*problems, "TOBIRA_ACCESS_RULES: rules must be a list of [[rules]] tables"]
    rules = []
    for number, entry in enumerate(entries, start=1):
        rule, found = _rule(entry, f"TOBIRA_ACCESS_RULES: rule {number}")
        problems += found
        if rule is not None:
            rules.append(rule)
    return AccessRules(tuple(rules)), problems


def _rule(entry: dict[str, Any], where: str) -> tuple[Rule | None, list[str]]:
    problems = [f"{where}: unknown key {key!r}" for key in sorted(set(entry) - RULE_KEYS)]
    hosts = _names(entry, "hosts", where, problems)
    if hosts is None:
        problems.append(f"{where}: hosts is required (a list of hosts or *.domain)")
    elif not hosts:
        problems.append(f"{where}: hosts must name at least one host")
    instances = _names(entry, "instances", where, problems)
    users = _users(entry, where, problems)
    if problems or hosts is None:
        return None, problems
    return Rule(tuple(hosts), None if instances is None else tuple(instances), users), []


def _strings(entry: dict[str, Any], key: str, where: str, problems: list[str]) -> list[str] | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        problems.append(f"{where}: {key} must be a list of strings")
        return []
    return value


def _names(entry: dict[str, Any], key: str, where: str, problems: list[str]) -> list[str] | None:
    values = _strings(entry, key, where, problems)
    for value in values or ():
        if not _is_name(value.removeprefix("*.")):
            problems.append(f"{where}: {key}: {value!r} is not a host name or *.domain")
    return values


def _users(entry: dict[str, Any], where: str, problems: list[str]) -> frozenset[str] | None:
    values = _strings(entry, "users", where, problems)
    if values is None:
        return None
    users = set()
    for value in values:
        username, at, host = value.removeprefix("@").partition("@")
        if not at or not username or not _is_name(host):
            problems.append(f"{where}: users: {value!r} is not an account such as alice@misskey.io")
            continue
        users.add(f"{username}@{_canonical(host)}".lower())
    return frozenset(users)


def _is_name(value: str) -> bool:
    return _canonical(value) is not None


def _canonical(value: str) -> str | None:
    """A host as sessions and `host_matches` name it (lowercase punycode, a dev server's `host:port`)."""
    value = value.strip()
    try:
        name = value.lower() if value.isascii() else idna.encode(value, uts46=True).decode("ascii")
    except UnicodeError:
        return None
    name = name.removesuffix(".")
    return name if _NAME.fullmatch(name) else None

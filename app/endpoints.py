"""Which Misskey API endpoints the `/api/{endpoint}` proxy forwards.

The proxy spends the signed-in person's token on whatever a page of this origin asks for, so a script
injected into that page (or a careless site owner) must not be able to take over the account with it.
A built-in deny list covers what no web page needs: administration, minting or granting credentials, the
account's own security settings, and bulk moves of its data. The operator may narrow the rest with an allow
list; the deny list always applies on top of it.

Endpoint names are checked before anything else, so that what reaches the instance's URL is one plain path
(`a-z`, digits, `_`, `-` segments): no dots, encodings, backslashes or look-alikes to confuse a URL joiner.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Final

from app.errors import EndpointNotAllowed, InvalidEndpoint

MAX_NAME_LENGTH = 128
_SEGMENTS = r"[a-z0-9_-]+(?:/[a-z0-9_-]+)*"
# The lookahead bounds the length; the segments then match in linear time (no nested repetition to backtrack).
ENDPOINT_NAME: Final = re.compile(rf"(?=[a-z0-9_/-]{{1,{MAX_NAME_LENGTH}}}\Z){_SEGMENTS}", re.ASCII)


def _secure_endpoints() -> frozenset[str]:
    """Misskey's own list of endpoints only the person's web session may call (`"secure": true`)."""
    with resources.files("app").joinpath("data/endpoints.json").open("rb") as file:
        endpoints: dict[str, dict[str, object]] = json.load(file)
    return frozenset(name.strip("/") for name, spec in endpoints.items() if spec.get("secure") is True)


# Misskey refuses these to app tokens anyway; refusing them here saves a round trip and keeps them refused
# on forks that do not mark them.
SECURE_ENDPOINTS: Final = _secure_endpoints()
# Patterns: a name, or text ending in "*" for every name that starts with the text before it. They stand on
# their own, whatever endpoints.json marks: a fork may mark none of them secure.
BUILT_IN_DENY: Final[tuple[str, ...]] = (
    # Server administration: a moderator's session must never be usable from a web page.
    "admin/*",
    # Creating and approving tokens and apps: the proxy never mints or grants credentials.
    "miauth/*",
    "auth/*",
    "app/*",
    # Webhooks post the account's activity to any URL: a quiet, lasting way to exfiltrate it.
    "i/webhooks/*",
    # Two-factor authentication and passkeys guard the account itself.
    "i/2fa/*",
    # Bulk import and export move the whole account's data in or out in one call.
    "i/import-*",
    "i/export-*",
    # The account's credentials, existence and identity, the apps holding access to it, and its sign-in trail.
    "i/delete-account",
    "i/change-password",
    "i/update-email",
    "i/regenerate-token",
    "i/revoke-token",
    "i/move",
    "i/apps",
    "i/authorized-apps",
    "i/signin-history",
)

# What an allow list may contain: every endpoint, a name, or a name followed by "/*".
_ALLOW_PATTERN = re.compile(
    rf"\*|(?=[a-z0-9_/-]{{1,{MAX_NAME_LENGTH}}}(?:/\*)?\Z){_SEGMENTS}(?:/\*)?", re.ASCII
)


class _Patterns:
    """A compiled set of patterns: exact names and name prefixes."""

    def __init__(self, patterns: Iterable[str]) -> None:
        names: set[str] = set()
        prefixes: set[str] = set()
        for pattern in patterns:
            if pattern.endswith("*"):
                prefixes.add(pattern[:-1])
            else:
                names.add(pattern)
        self.names = frozenset(names)
        self.prefixes = tuple(sorted(prefixes))

    def match(self, name: str) -> bool:
        return name in self.names or name.startswith(self.prefixes)

    def cover_prefix(self, prefix: str) -> bool:
        """Whether every name starting with `prefix` matches."""
        return prefix.startswith(self.prefixes)


_DENY = _Patterns((*BUILT_IN_DENY, *SECURE_ENDPOINTS))


def validate_patterns(patterns: Sequence[str]) -> list[str]:
    """Problems with a configured allow list, one sentence each; [] when it is fine.

    A pattern that only names endpoints the built-in deny list refuses is a problem too: it would never
    take effect, and the operator who wrote it expects it to.
    """
    problems = []
    for pattern in patterns:
        if not _ALLOW_PATTERN.fullmatch(pattern):
            problems.append(
                f"{pattern!r} is not an endpoint name (such as notes/create) or a prefix (such as notes/*)"
            )
        elif pattern != "*" and (
            _DENY.cover_prefix(pattern[:-1]) if pattern.endswith("/*") else _DENY.match(pattern)
        ):
            problems.append(f"{pattern!r} is always refused by tobira's built-in deny list")
    return problems


class EndpointPolicy:
    """The operator's allow list (if any) with the built-in deny list on top."""

    def __init__(
        self, allow: Sequence[str] | None = None, *, secure: Iterable[str] = SECURE_ENDPOINTS
    ) -> None:
        """`allow` is None for every endpoint but the deny list, else names and "prefix/*" patterns;
        `secure` the names the server software marks secure (Misskey's), denied on top of BUILT_IN_DENY.

        Raises ValueError for a malformed pattern (configuration reports those first, with the rest).
        """
        if allow is not None:
            malformed = [pattern for pattern in allow if not _ALLOW_PATTERN.fullmatch(pattern)]
            if malformed:
                raise ValueError(f"malformed endpoint patterns: {malformed!r}")
        self._allow = None if allow is None or "*" in allow else _Patterns(allow)
        self._deny = _Patterns((*BUILT_IN_DENY, *secure))

    def check(self, name: str) -> None:
        """Return if the proxy may forward `name`.

        Raises InvalidEndpoint if `name` is not a well-formed endpoint name, EndpointNotAllowed if the deny
        list or the allow list refuses it.
        """
        if not isinstance(name, str) or not ENDPOINT_NAME.fullmatch(name):
            raise InvalidEndpoint()
        if self._deny.match(name) or (self._allow is not None and not self._allow.match(name)):
            raise EndpointNotAllowed()

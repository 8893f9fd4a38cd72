"""The clients file (`TOBIRA_OIDC_CLIENTS`, TOML): the apps that may use tobira as their OpenID provider.

`load_clients` reads and checks the whole file in one pass and raises `ClientsFileError` listing every
problem, so an operator fixes it in one go. Client secrets may be written as they are or as an argon2id hash
(`tobira hash-secret`); argon2-cffi does the hashing, `hmac.compare_digest` the plain comparison.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app.errors import InvalidInstance
from app.hosts import canonical_host, host_matches
from app.permissions import KNOWN_PERMISSIONS

SIGNING_ALGORITHMS = ("RS256", "ES256")
KEYS = frozenset(
    {
        "client_id",
        "client_name",
        "logo_uri",
        "redirect_uris",
        "post_logout_redirect_uris",
        "client_secret",
        "client_secret_hash",
        "instances",
        "permissions",
        "id_token_signed_response_alg",
    }
)
MIN_SECRET_LENGTH = 16
_hasher = PasswordHasher()  # argon2id, argon2-cffi's RFC 9106 low-memory profile


class ClientsFileError(Exception):
    """The clients file is unusable; `problems` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    client_name: str
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...] = ()
    logo_uri: str | None = None
    client_secret: str | None = None
    client_secret_hash: str | None = None
    instances: tuple[str, ...] = ()
    permissions: tuple[str, ...] = ()
    id_token_signed_response_alg: str = "RS256"  # noqa: S105 - an algorithm name, no secret

    def __repr__(self) -> str:  # never a secret in a log line or a traceback
        return f"Client({self.client_id!r})"

    @property
    def confidential(self) -> bool:
        return self.client_secret is not None or self.client_secret_hash is not None

    def secret_matches(self, secret: str) -> bool:
        """True when `secret` is this client's secret; always False for a public client."""
        if self.client_secret is not None:
            return hmac.compare_digest(self.client_secret.encode(), secret.encode())
        if self.client_secret_hash is not None:
            return _verified(self.client_secret_hash, secret)
        return False

    def allows_instance(self, host: str) -> bool:
        return not self.instances or host_matches(host, list(self.instances))

    def origin_of(self, uri: str) -> str:
        parts = urlsplit(uri)
        return f"{parts.scheme}://{parts.netloc}"


_VERIFIED: set[tuple[str, bytes]] = set()  # (hash, sha256 of a secret that matched): argon2 runs once
VERIFIED_ENTRIES = 256


def _verified(secret_hash: str, secret: str) -> bool:
    """argon2's verdict on `secret`; a secret that matched once is recognised again without argon2's cost."""
    key = (secret_hash, hashlib.sha256(secret.encode()).digest())
    if key in _VERIFIED:
        return True
    try:
        if not _hasher.verify(secret_hash, secret):  # argon2-cffi raises on a mismatch; never trust less
            return False
    except (VerificationError, InvalidHashError):
        return False
    if len(_VERIFIED) >= VERIFIED_ENTRIES:
        _VERIFIED.clear()
    _VERIFIED.add(key)  # only secrets that matched are remembered
    return True


def hash_secret(secret: str) -> str:
    """An argon2id hash of `secret`, for `client_secret_hash`."""
    return _hasher.hash(secret)


def is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def uri_problem(uri: Any) -> str | None:
    """Why `uri` cannot be a redirect URI (OpenID Connect Core 3.1.2.1, RFC 6749 3.1.2), or None."""
    if not isinstance(uri, str) or not uri:
        return "is not a string"
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "is not a URL"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "is not an absolute http(s) URL"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return "is plain http on a host that is not loopback"
    if parts.fragment or "#" in uri:
        return "has a fragment"
    if parts.username or parts.password:
        return "has a user name or password"
    if any(ord(c) <= 0x20 or ord(c) >= 0x7F for c in uri):
        return "has spaces or characters that are not ASCII"
    return None


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) and item for item in value)


def _identity_problems(entry: Mapping[str, Any]) -> list[str]:
    """The keys, the client_id, the name and the logo."""
    problems = [f"unknown key {key!r}" for key in sorted(set(entry) - KEYS)]
    client_id = entry.get("client_id")
    if not isinstance(client_id, str) or not client_id or len(client_id) > 255:
        problems.append("client_id must be a non-empty string")
    elif any(not (0x21 <= ord(c) <= 0x7E) or c == ":" for c in client_id):
        problems.append("client_id must be printable ASCII without spaces or ':'")
    name = entry.get("client_name")
    if not isinstance(name, str) or not name.strip() or len(name) > 128:
        problems.append("client_name must be a non-empty string of at most 128 characters")
    logo = entry.get("logo_uri")
    if logo is not None and (not isinstance(logo, str) or not logo.startswith("https://")):
        problems.append("logo_uri must be an https URL")
    return problems


def _uri_problems(entry: Mapping[str, Any]) -> list[str]:
    """The redirect URIs (at least one) and the post-logout ones."""
    problems = []
    for key in ("redirect_uris", "post_logout_redirect_uris"):
        required = key == "redirect_uris"
        uris = entry.get(key, None if required else [])
        if not _strings(uris) or (required and not uris):
            problems.append(f"{key} must be a list of URLs" + (", at least one" if required else ""))
            continue
        problems += [f"{key}: {uri!r} {reason}" for uri in uris if (reason := uri_problem(uri)) is not None]
    return problems


def _secret_problems(entry: Mapping[str, Any]) -> list[str]:
    problems = []
    secret, secret_hash = entry.get("client_secret"), entry.get("client_secret_hash")
    if secret is not None and secret_hash is not None:
        problems.append("give client_secret or client_secret_hash, not both")
    if secret is not None and (not isinstance(secret, str) or len(secret) < MIN_SECRET_LENGTH):
        problems.append(f"client_secret must be a string of at least {MIN_SECRET_LENGTH} characters")
    if secret_hash is not None and not (isinstance(secret_hash, str) and secret_hash.startswith("$argon2")):
        problems.append("client_secret_hash must be an argon2 hash from `tobira hash-secret`")
    return problems


def _instance_problems(entry: Mapping[str, Any]) -> list[str]:
    instances = entry.get("instances", [])
    if not _strings(instances):
        return ["instances must be a list of host names or *.domain"]
    problems = []
    for pattern in instances:
        try:
            canonical_host(pattern.removeprefix("*."))
        except InvalidInstance:
            problems.append(f"instances: {pattern!r} is not a host name or *.domain")
    return problems


def _permission_problems(entry: Mapping[str, Any]) -> list[str]:
    permissions = entry.get("permissions", [])
    if not _strings(permissions):
        return ["permissions must be a list of Misskey permission names"]
    problems = [
        f"permissions: unknown permission {name!r}" for name in permissions if name not in KNOWN_PERMISSIONS
    ]
    if permissions and entry.get("client_secret") is None and entry.get("client_secret_hash") is None:
        problems.append("permissions are only for confidential clients (with a client secret)")
    return problems


def _algorithm_problems(entry: Mapping[str, Any]) -> list[str]:
    if entry.get("id_token_signed_response_alg", "RS256") in SIGNING_ALGORITHMS:
        return []
    return [f"id_token_signed_response_alg must be one of {', '.join(SIGNING_ALGORITHMS)}"]


CHECKS = (
    _identity_problems,
    _uri_problems,
    _secret_problems,
    _instance_problems,
    _permission_problems,
    _algorithm_problems,
)


def _client(index: int, entry: Any, problems: list[str]) -> Client | None:
    """The client one `[[clients]]` table describes, or None with its problems added to `problems`."""
    if not isinstance(entry, Mapping):
        problems.append(f"clients[{index}]: is not a table")
        return None
    client_id = entry.get("client_id")
    where = f"client {client_id!r}" if isinstance(client_id, str) and client_id else f"clients[{index}]"
    found = [problem for check in CHECKS for problem in check(entry)]
    problems += [f"{where}: {problem}" for problem in found]
    if found:
        return None
    return Client(
        client_id=entry["client_id"],
        client_name=entry["client_name"].strip(),
        redirect_uris=tuple(entry["redirect_uris"]),
        post_logout_redirect_uris=tuple(entry.get("post_logout_redirect_uris", ())),
        logo_uri=entry.get("logo_uri"),
        client_secret=entry.get("client_secret"),
        client_secret_hash=entry.get("client_secret_hash"),
        instances=tuple(pattern.lower() for pattern in entry.get("instances", ())),
        permissions=tuple(entry.get("permissions", ())),
        id_token_signed_response_alg=entry.get("id_token_signed_response_alg", "RS256"),
    )


def parse_clients(text: str) -> dict[str, Client]:
    """The clients a clients file's text lists, by client_id. Raises ClientsFileError with every problem."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ClientsFileError([f"not valid TOML: {exc}"]) from None
    problems = [
        f"unknown key {key!r} (only [[clients]] tables)" for key in sorted(set(document) - {"clients"})
    ]
    entries = document.get("clients", [])
    if not isinstance(entries, list) or not entries:
        problems.append("no [[clients]] table")
        entries = []
    clients: dict[str, Client] = {}
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        client = _client(index, entry, problems)
        client_id = entry.get("client_id") if isinstance(entry, Mapping) else None
        if isinstance(client_id, str) and client_id in seen:
            problems.append(f"client {client_id!r}: duplicate client_id")
        if isinstance(client_id, str):
            seen.add(client_id)
        if client is not None:
            clients[client.client_id] = client
    if problems:
        raise ClientsFileError(problems)
    return clients


def load_clients(path: Path) -> dict[str, Client]:
    """The clients in the file at `path`. Raises ClientsFileError (unreadable or invalid)."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ClientsFileError([f"cannot read {path}: {exc.__class__.__name__}"]) from None
    return parse_clients(text)

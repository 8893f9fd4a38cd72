"""What a person typed as their Misskey server → a canonical instance host, or a refusal.

tobira connects to whatever comes out of here, so this is the first line of the SSRF defence: before any
network use it refuses IP literals in every spelling `inet_aton` reads, localhost and special-use names,
ports other than 443, schemes other than https, and anything else that is not a plain public DNS name. (The
network guard still checks the addresses a name resolves to; this module only decides what a *name* may be.)

Accepted: a bare name, `https://name[:443][/]`, a profile URL `https://name/@user` (`/@user@host` only when
that host is this same server), a handle `@user@name` or `user@name`. Names go through IDNA 2008 with UTS 46
mapping (the `idna` package): full-width forms fold to ASCII and internationalised names become punycode, so
a look-alike of "misskey.io" spelt with a Cyrillic U+0456 "i" is its own host, "xn--msskey-pvf.io", and
never equals "misskey.io". The input is split by hand, not with urllib.parse, which is lenient exactly
where we must be strict (backslashes, "%2f", "#@", userinfo).

The one exception is an operator's TOBIRA_DEV_INSTANCES origin: typed exactly (case aside) or as its
host:port, it may be plain http, an IP address or localhost. Any other spelling is judged like public input.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlsplit

import idna

from app.errors import InvalidInstance

_MAX_INPUT = 1024  # far above any real URL or handle; bounds the work done on hostile input
_MAX_URL = 2048  # the longest URL a server may name on its own origin
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEME = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)", re.ASCII | re.DOTALL)
_HANDLE = re.compile(r"@?[A-Za-z0-9_]+@(?P<authority>[^@/]+)", re.ASCII)
_PROFILE_PATH = re.compile(r"/(?:@[A-Za-z0-9_]+(?:@(?P<host>[^@/]+))?/?)?", re.ASCII)
_PORT = re.compile(r"[0-9]{1,5}", re.ASCII)
# A final label inet_aton would read as a number, so that the whole name is an IPv4 address.
_NUMBER_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*", re.ASCII)
# Top-level domains are letters, or punycode for internationalised ones: never digits.
_TLD = re.compile(r"[a-z]{2,63}|xn--[a-z0-9-]{1,59}", re.ASCII)
_LDH_NAME = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# Special-use and never-delegated names (RFC 2606, 6761, 6762, 7686, 8375, 9476; ICANN name collisions).
_SPECIAL_TLDS = frozenset(
    "localhost local localdomain internal intranet lan home corp mail private onion i2p test example "
    "invalid arpa alt".split()
)
_SPECIAL_DOMAINS = ("example.com", "example.net", "example.org")

_EMPTY = "Type the name of your Misskey server, for example misskey.io."
_TOO_LONG = "That is too long to be a server name."
_BAD_CHARACTERS = "A server name cannot contain spaces, control characters or backslashes."
_PERCENT = "A server name cannot contain percent-encoded characters."
_QUERY = "Type just the server name, without a '?' or '#' part."
_NOT_HTTPS = "tobira only connects to servers over https, not plain http."
_ONLY_HTTPS = "Only https:// addresses can be used."
_USERINFO = "An address with a user name or password before the server name cannot be used."
_BAD_HANDLE = "A handle looks like @alice@misskey.io."
_BAD_PATH = "Type just the server name, or a profile address such as https://misskey.io/@alice."
_OTHER_SERVER = "That profile is on another server: type the name of your own server."
_BAD_PORT = "tobira only connects to servers on the standard https port (443)."
_IP_ADDRESS = "Type the server's name, not an IP address."
_RESERVED = "That name is reserved for local or special use; it is not a public server."
_SINGLE_LABEL = "A server name has at least one dot, as in misskey.io."
_NOT_A_NAME = "That is not a valid server name."


@dataclass(frozen=True, slots=True)
class Instance:
    """A server tobira may talk to; only ever built by this module."""

    host: str  # "misskey.io", "xn--…"; for a dev origin its host[:port], e.g. "127.0.0.1:3000"
    origin: str  # "https://misskey.io", or the dev origin, e.g. "http://127.0.0.1:3000"
    dev: bool  # True only for a TOBIRA_DEV_INSTANCES origin

    def url(self, path: str) -> str:
        """The URL of `path` on this instance; ValueError unless `path` starts with "/"."""
        if not path.startswith("/"):
            raise ValueError("an instance path must start with '/'")
        return self.origin + path

    def owns(self, url: object) -> bool:
        """Whether `url` is an absolute URL of sane length on this instance's own origin, without user
        information: where a server may send a browser or tobira's requests of its own accord."""
        if not isinstance(url, str) or len(url) > _MAX_URL:
            return False
        try:
            parts = urlsplit(url)
            origin = f"{parts.scheme.lower()}://{parts.netloc.lower()}"
        except ValueError:
            return False
        return origin == self.origin and not parts.username and not parts.password


class DevOrigin(NamedTuple):
    """One TOBIRA_DEV_INSTANCES origin: host lowercased, IPv6 without brackets."""

    scheme: str
    host: str
    port: int


def parse_dev_origin(text: str) -> DevOrigin:
    """Read one configured dev origin such as "http://127.0.0.1:3000"; ValueError saying what is wrong."""
    origin = text.strip()
    match = _SCHEME.fullmatch(origin)
    if match is None or match["scheme"].lower() not in _DEFAULT_PORTS:
        raise ValueError(f"dev instance {origin!r} must start with http:// or https://")
    scheme = match["scheme"].lower()
    authority, _, path = match["rest"].partition("/")
    if path or any(_is_forbidden(c) or c in "@?#%" for c in authority):
        raise ValueError(f"dev instance {origin!r} must be scheme://host[:port], without path, query or user")
    split = _split_authority(authority)
    if split is None:
        raise ValueError(f"dev instance {origin!r} has a malformed host or port")
    host, port = split
    if host.startswith("["):
        host = host[1:-1].lower()
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"dev instance {origin!r} has an invalid IPv6 address") from None
    elif not _is_dev_hostname(host):
        raise ValueError(
            f"dev instance {origin!r}: the host must be an ASCII name, a dotted-quad IPv4 address "
            "or a bracketed IPv6 address"
        )
    return DevOrigin(scheme, host.lower(), _DEFAULT_PORTS[scheme] if port is None else port)


def parse_instance(text: str, dev_origins: Sequence[DevOrigin] = ()) -> Instance:
    """The instance `text` names; InvalidInstance, with a message for the person, if it is not usable."""
    text = text.strip()
    _check_characters(text)
    scheme, authority, path = _split_input(text)
    instance = _dev_instance(scheme, authority, dev_origins) or _public_instance(scheme, authority)
    if path:
        _check_profile_path(path, instance, dev_origins)
    return instance


def _check_characters(text: str) -> None:
    """InvalidInstance for input that no spelling of a server can be: empty, too long, odd characters."""
    if not text:
        raise InvalidInstance(_EMPTY)
    if len(text) > _MAX_INPUT:
        raise InvalidInstance(_TOO_LONG)
    if any(_is_forbidden(c) for c in text):
        raise InvalidInstance(_BAD_CHARACTERS)
    if "%" in text:
        raise InvalidInstance(_PERCENT)
    if "?" in text or "#" in text:
        raise InvalidInstance(_QUERY)


def _dev_instance(scheme: str | None, authority: str, dev_origins: Sequence[DevOrigin]) -> Instance | None:
    """The operator's dev origin typed exactly (case aside) or as its host:port, else None."""
    # ASCII only, so that no Unicode case folding makes a match.
    typed = authority.lower() if authority.isascii() else None
    for dev in dev_origins:
        if (scheme is None or scheme == dev.scheme) and typed in _dev_authorities(dev):
            host = _dev_authorities(dev)[1]
            return Instance(host=host, origin=f"{dev.scheme}://{host}", dev=True)
    return None


def _check_profile_path(path: str, instance: Instance, dev_origins: Sequence[DevOrigin]) -> None:
    """InvalidInstance unless `path` is `/` or a profile on this same server (`/@user`, `/@user@host`)."""
    profile = _PROFILE_PATH.fullmatch(path)
    if profile is None:
        raise InvalidInstance(_BAD_PATH)
    if profile["host"] is not None:
        try:
            same = parse_instance(profile["host"], dev_origins).origin == instance.origin
        except InvalidInstance:
            same = False
        if not same:
            raise InvalidInstance(_OTHER_SERVER)


def canonical_host(text: str) -> str:
    """The canonical public host `text` names (no dev origins); InvalidInstance if there is none."""
    return parse_instance(text).host


def host_matches(host: str, patterns: Sequence[str]) -> bool:
    """Whether a pattern names `host`: "example.com" exactly, "*.example.com" any name below (not itself).

    Both sides are compared canonicalised (punycode, lowercase, no trailing dot); a pattern that is no
    valid name matches nothing.
    """
    name = _loose_canonical(host)
    for pattern in patterns:
        wildcard = pattern.strip().startswith("*.")
        wanted = _loose_canonical(pattern.strip()[2:] if wildcard else pattern)
        if name and wanted and (name.endswith("." + wanted) if wildcard else name == wanted):
            return True
    return False


def _is_forbidden(char: str) -> bool:
    # Control, format, private, unassigned and space characters have no place in a name. ZWNJ and ZWJ are
    # the exception: IDNA 2008 allows them in context (e.g. Persian), and checks that context itself.
    return char == "\\" or (unicodedata.category(char)[0] in "CZ" and char not in "\u200c\u200d")


def _split_input(text: str) -> tuple[str | None, str, str]:
    """(lowercased scheme or None, authority, path) of a URL, a bare name or a handle."""
    match = _SCHEME.fullmatch(text)
    if match is not None:
        authority, slash, path = match["rest"].partition("/")
        if "@" in authority:
            raise InvalidInstance(_USERINFO)
        return match["scheme"].lower(), authority, slash + path
    authority, slash, path = text.partition("/")
    if "@" in authority:
        handle = _HANDLE.fullmatch(text)
        if handle is None:
            raise InvalidInstance(_BAD_HANDLE)
        return None, handle["authority"], ""
    return None, authority, slash + path


def _split_authority(authority: str) -> tuple[str, int | None] | None:
    """(host, port or None) of "host[:port]" or "[v6][:port]" (brackets kept); None if malformed."""
    end = authority.find("]") + 1 if authority.startswith("[") else len(authority.partition(":")[0])
    host, rest = authority[:end], authority[end:]
    if not host or not rest:
        return (host, None) if host else None
    port = rest[1:]
    if rest[0] != ":" or not _PORT.fullmatch(port) or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def _public_instance(scheme: str | None, authority: str) -> Instance:
    if scheme == "http":
        raise InvalidInstance(_NOT_HTTPS)
    if scheme not in (None, "https"):
        raise InvalidInstance(_ONLY_HTTPS)
    if not authority:
        raise InvalidInstance(_EMPTY)
    if authority.startswith("[") or authority.count(":") > 1:
        raise InvalidInstance(_IP_ADDRESS)
    split = _split_authority(authority)
    if split is None:
        port = authority.rpartition(":")[2]
        raise InvalidInstance(_BAD_PORT if port.isascii() and port.isdigit() else _NOT_A_NAME)
    host = _public_name(split[0])
    if split[1] not in (None, 443):
        raise InvalidInstance(_BAD_PORT)
    return Instance(host=host, origin=f"https://{host}", dev=False)


def _public_name(name: str) -> str:
    """The punycode form of a public DNS name; InvalidInstance for anything else."""
    try:
        ascii_name = idna.encode(name, uts46=True, std3_rules=True).decode("ascii").removesuffix(".")
    except UnicodeError:
        raise InvalidInstance(_NOT_A_NAME) from None
    labels = ascii_name.split(".")
    if _NUMBER_LABEL.fullmatch(labels[-1]):
        raise InvalidInstance(_IP_ADDRESS)
    if labels[-1] in _SPECIAL_TLDS or any(
        ascii_name == domain or ascii_name.endswith("." + domain) for domain in _SPECIAL_DOMAINS
    ):
        raise InvalidInstance(_RESERVED)
    if len(labels) < 2:
        raise InvalidInstance(_SINGLE_LABEL)
    if len(ascii_name) > 253 or not _TLD.fullmatch(labels[-1]) or not _LDH_NAME.fullmatch(ascii_name):
        raise InvalidInstance(_NOT_A_NAME)
    return ascii_name


def _is_dev_hostname(host: str) -> bool:
    if not host.isascii():  # lest str.lower() turn a look-alike (the Kelvin sign) into ASCII
        return False
    host = host.lower()
    try:
        ipaddress.IPv4Address(host)  # strict: four decimal parts, no leading zeros
        return True
    except ValueError:
        pass
    # Any other all-numeric or hex final label is an IPv4 spelling that different resolvers read differently.
    return (
        len(host) <= 253
        and _LDH_NAME.fullmatch(host) is not None
        and _NUMBER_LABEL.fullmatch(host.rpartition(".")[2]) is None
    )


def _dev_authorities(dev: DevOrigin) -> tuple[str, str]:
    """(host:port, the shortest spelling: without the port when it is the scheme's default)."""
    host = f"[{dev.host}]" if ":" in dev.host else dev.host
    full = f"{host}:{dev.port}"
    return full, host if dev.port == _DEFAULT_PORTS[dev.scheme] else full


def _loose_canonical(name: str) -> str | None:
    """Lowercase punycode of a host or host:port as an operator wrote it, without the public-name rules."""
    name = name.strip()
    try:
        ascii_name = name.lower() if name.isascii() else idna.encode(name, uts46=True).decode("ascii")
    except UnicodeError:
        return None
    return ascii_name.removesuffix(".") or None

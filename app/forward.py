"""Forward authentication: what a reverse proxy asks about a request to an app, and what tobira answers.

nginx (`auth_request`), Caddy (`forward_auth`) and Traefik (`forwardAuth`) send tobira the visitor's
cookies and, in headers of their own, the URL being visited: `X-Forwarded-Proto`, `X-Forwarded-Host` and
`X-Forwarded-Uri`, or nginx's customary `X-Original-URL`. Those headers are believed only when the request
comes from an address tobira is told to trust (`app.forwarded`); anyone else could name any host. From a
session, the access rules (`app.access`) and the visited host, `decide` gives the verdict; a pass carries
the identity headers the app receives. Protocol code: no web framework.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from app.access import AccessRules
from app.redirects import FALLBACK, safe_return_to
from app.session import Session

# A visited host as a proxy names it: an LDH name or an IPv4 address, maybe with a port.
_HOST = re.compile(r"(?P<name>[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?)(?::[0-9]{1,5})?", re.ASCII)
_ORIGINAL_URL = re.compile(r"(?P<proto>https?)://(?P<host>[^/?#]*)(?P<uri>[/?#].*)?", re.ASCII | re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_HEADER = 4096


class Verdict(enum.Enum):
    PASS = 200
    SIGNED_OUT = 401
    REFUSED = 403


@dataclass(frozen=True, slots=True)
class Visit:
    """What the proxy says is being visited: the host (no port, lowercase) and the URL, when known."""

    host: str | None = None
    url: str | None = None

    def return_to(self, cookie_domain: str | None) -> str | None:
        """The URL to come back to after sign-in: only an https URL on the cookie domain, else None."""
        if self.url is None or not cookie_domain:
            return None
        target = safe_return_to(self.url, cookie_domain)
        return None if target == FALLBACK else target


def visit(headers: Mapping[str, str], *, trusted: bool, original_first: bool = False) -> Visit:
    """The visit the forwarded headers describe; nothing when the peer is not trusted or they make no sense.

    Each proxy sets its own header and passes the visitor's others through unchanged, so the one it sets
    must win: `X-Original-URL` for nginx (`original_first`, /auth/request), `X-Forwarded-Host` for Caddy
    and Traefik (/auth/forward); the other is used only when that one is absent. A list (`a, b`) means the
    first proxy's value."""
    if not trusted:
        return Visit()
    original = headers.get("x-original-url")
    forwarded_host = _first(headers.get("x-forwarded-host"))
    if original is not None and (original_first or not forwarded_host):
        match = _ORIGINAL_URL.fullmatch(original[:MAX_HEADER])
        if match is None:
            return Visit()
        proto, forwarded_host, uri = match["proto"].lower(), match["host"], match["uri"] or "/"
    elif forwarded_host:
        proto = (_first(headers.get("x-forwarded-proto")) or "https").lower()
        uri = headers.get("x-forwarded-uri") or "/"
    else:
        return Visit()
    authority = forwarded_host.lower()
    host = _HOST.fullmatch(authority)
    if host is None or proto not in ("http", "https"):
        return Visit()
    url = f"{proto}://{authority}{uri}" if uri.startswith("/") and len(uri) <= MAX_HEADER else None
    return Visit(host=host["name"].removesuffix("."), url=url)


def _first(value: str | None) -> str:
    return value.split(",", 1)[0].strip() if value else ""


def decide(session: Session | None, rules: AccessRules, host: str | None) -> Verdict:
    """Whether the visit may go on: a live session the rules let through for `host`."""
    if session is None:
        return Verdict.SIGNED_OUT
    username = session.user.get("username")
    if not isinstance(username, str) or not rules.allows(host, username, session.host):
        return Verdict.REFUSED
    return Verdict.PASS


def identity_headers(session: Session) -> dict[str, str]:
    """What the app learns about the person: `Remote-User: alice@misskey.io` and the rest.

    Values are sent as UTF-8 bytes (as Authelia and oauth2-proxy do), without control characters."""
    username = str(session.user.get("username") or "")
    name = session.user.get("name")
    return {
        "Remote-User": _header(f"{username}@{session.host}"),
        "Remote-Name": _header(name if isinstance(name, str) and name else username),
        "X-Tobira-Instance": _header(session.host),
        "X-Tobira-User-Id": _header(str(session.user.get("id") or "")),
    }


def _header(value: str) -> str:
    # Header values are written as latin-1: this makes the bytes on the wire UTF-8.
    if not value.isprintable():
        value = _CONTROL.sub("", value)
    return value.encode("utf-8").decode("latin-1")


def sign_in_url(public_base: str, return_to: str | None) -> str:
    """tobira's sign-in form, coming back to `return_to` (already checked) afterwards."""
    if return_to is None:
        return f"{public_base}/login"
    return f"{public_base}/login?return_to={quote(return_to, safe='')}"

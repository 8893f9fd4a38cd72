"""Is a state-changing request coming from tobira's own pages, or from another site's?

The session cookie is `SameSite=Lax`, which already keeps it off cross-site POSTs in today's browsers; this
check is the second lock, and the one that also covers same-site attackers (a sibling subdomain) and older
browsers. It trusts the headers browsers set themselves and pages cannot forge: `Sec-Fetch-Site` and
`Origin`. No token is needed, so the proxy works for any same-origin `fetch` without extra plumbing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

_DEFAULT_PORTS = {"http": 80, "https": 443}
# A serialised origin as browsers send it: scheme, ASCII host (IDNs arrive in punycode), optional port.
_ORIGIN = re.compile(
    r"(?P<scheme>https?)://(?P<host>[a-z0-9.-]+|\[[0-9a-f:.]+\])(?::(?P<port>[0-9]{1,5}))?",
    re.ASCII | re.IGNORECASE,
)


def is_same_origin(headers: Mapping[str, str], public_origin: str) -> bool:
    """Whether the request's browser says it comes from `public_origin` (e.g. "https://tobira.example").

    `headers` is keyed in lower case, like Starlette's `Headers`.
    - `Sec-Fetch-Site`, when present, must be exactly `same-origin` (`same-site`, `cross-site` and `none`
      are refused: a sibling subdomain or a typed URL has no business posting here).
    - `Origin`, when present, must be `public_origin` (scheme and host compared case-insensitively, a default
      port written or not); `null` (sandboxed frames, privacy-sensitive redirects) is refused.
    - When both are present, both must pass.
    - When neither is present, the request is allowed: every browser that could be tricked into sending it
      sends `Origin` on a cross-origin POST (and `Sec-Fetch-Site` on all requests), so a request without
      either comes from a program such as curl, which could just as well set any header it liked. Refusing
      it would protect nothing and would break those clients.

    Raises ValueError if `public_origin` itself is not an http(s) origin (configuration validates it).
    """
    expected = _parse_origin(public_origin.removesuffix("/"))
    if expected is None:
        raise ValueError(f"not an http(s) origin: {public_origin!r}")
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site != "same-origin":
        return False
    origin = headers.get("origin")
    return origin is None or _parse_origin(origin) == expected


def started_here(headers: Mapping[str, str], public_origin: str, *, method: str) -> bool:
    """Whether a sign-in start comes from tobira's own pages or from the person themself.

    A sign-in another site starts must never be carried out at once (login CSRF: it could sign the browser
    in to an account of that site's choosing, or replace the account someone is signed in with).
    - A POST must pass `is_same_origin` and carry `Origin` or `Sec-Fetch-Site`: every browser sends one of
      them on a form post, so a post with neither cannot be told apart from another site's.
    - A GET (a plain link such as `/login?instance=…`) is refused when `Sec-Fetch-Site` says another site
      (`cross-site`, or `same-site` for a sibling subdomain) or `Origin` names another origin; `none` is a
      typed or bookmarked address, which goes on. Browsers without Fetch Metadata send neither on a link,
      and are let through: nothing in the request tells them apart.
    """
    if method == "POST":
        has_header = "sec-fetch-site" in headers or "origin" in headers
        return has_header and is_same_origin(headers, public_origin)
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site not in (None, "none", "same-origin"):
        return False
    origin = headers.get("origin")
    return origin is None or _parse_origin(origin) == _parse_origin(public_origin.removesuffix("/"))


@functools.lru_cache(maxsize=1024)  # the same few origins on every proxied request
def _parse_origin(value: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of a serialised origin, or None if it is anything else (including "null")."""
    match = _ORIGIN.fullmatch(value)
    if match is None:
        return None
    scheme = match["scheme"].lower()
    port = int(match["port"]) if match["port"] else _DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        return None
    return scheme, match["host"].lower(), port

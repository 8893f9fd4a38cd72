"""Where tobira may send a person after sign-in: a path on its own origin (or, with a cookie domain, an
https URL on that domain), else "/". Under a path prefix (TOBIRA_PUBLIC_URL `https://example.com/misskey`), a
path under that prefix, else the prefix's "/": the rest of the origin is another site's.

`return_to` comes from a link anyone can craft, so it is an open-redirect vector. Browsers are generous when
they parse a `Location`: they read `\\` as `/`, drop tabs and newlines anywhere, trim leading control
characters and spaces, and other layers (proxies, frameworks, the site behind tobira) may percent-decode,
NFKC-normalise or resolve `..` before anyone looks at the path again. So a value is kept only when it is a
plain printable-ASCII absolute path and none of those readings, applied to it or to any of its
percent-decodings, could turn it into `//host` or anything that is not a path.

With TOBIRA_COOKIE_DOMAIN, an absolute URL is also kept when it is exactly `https://HOST[:PORT]` followed by
nothing or by what the path rule above keeps, HOST being the domain or a name below it, in plain lowercase
LDH spelling: no user info, no percent-encoding, backslash or look-alike in the authority, no other scheme.

No library offers this check (urllib only parses, and parses more leniently than a browser reads), hence a
module of our own, in the spirit of oauth2-proxy's redirect validator.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote, urlsplit

MAX_LENGTH = 2048
FALLBACK = "/"
# Each round undoes one layer of percent-encoding; real paths need at most one or two.
_MAX_DECODING_ROUNDS = 4
_PRINTABLE_ASCII = frozenset(map(chr, range(0x21, 0x7F)))
# Controls, zero-width and bidi formatting characters, and every kind of space: readers drop or ignore them.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})
_ABSOLUTE = re.compile(
    r"https://(?P<host>(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)"
    r"(?::(?P<port>[1-9][0-9]{0,4}))?(?P<rest>[/?#].*)?",
    re.ASCII | re.DOTALL,
)


def safe_return_to(value: str | None, cookie_domain: str | None = None, base_path: str = "") -> str:
    """`value` if it is a path on tobira's own origin (under `base_path`, tobira's prefix, when it has one)
    that no reader can take elsewhere, or (with `cookie_domain`) an https URL on that domain or below it
    whose path is as safe; otherwise "/" (under the prefix: the prefix and "/")."""
    fallback = base_path + FALLBACK
    if cookie_domain and isinstance(value, str) and value.startswith("https://"):
        return value if on_cookie_domain(value, cookie_domain) else fallback
    if not isinstance(value, str) or not _is_plain_path(value):
        return fallback
    form = value
    for _ in range(_MAX_DECODING_ROUNDS + 1):
        if _could_leave_origin(form, base_path):
            return fallback
        decoded = unquote(form)
        if decoded == form:
            return value
        form = decoded
    # Still changing after several rounds: nobody legitimate encodes that deep.
    return fallback


def on_cookie_domain(url: str, cookie_domain: str) -> bool:
    """Whether `url` is a plain https URL on `cookie_domain` (or below it) with a safe path."""
    match = _ABSOLUTE.fullmatch(url) if len(url) <= MAX_LENGTH else None
    if match is None:
        return False
    host, port, rest = match["host"], match["port"], match["rest"] or "/"
    if host != cookie_domain and not host.endswith("." + cookie_domain):
        return False
    if port is not None and int(port) > 65535:
        return False
    path = rest if rest.startswith("/") else "/" + rest
    return safe_return_to(path) == path


def _is_plain_path(value: str) -> bool:
    """Printable ASCII (so no whitespace, controls or look-alikes), bounded, one leading "/", no "\\"."""
    if not value or len(value) > MAX_LENGTH or not _PRINTABLE_ASCII.issuperset(value):
        return False
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return False
    parts = urlsplit(value)
    return not parts.scheme and not parts.netloc


def _could_leave_origin(form: str, base_path: str) -> bool:
    """Whether a lenient reader of `form` could see something other than an absolute path on this host
    (under `base_path`, when there is one)."""
    # What a browser or a normalising layer would read: look-alikes folded, invisible characters dropped.
    seen = "".join(
        char
        for char in unicodedata.normalize("NFKC", form)
        if not (char.isspace() or unicodedata.category(char) in _INVISIBLE_CATEGORIES)
    )
    if "\\" in seen:
        return True
    path = seen.split("?", 1)[0].split("#", 1)[0]
    return any(
        not reading.startswith("/") or reading.startswith("//") or not _under(reading, base_path)
        for reading in (path, _remove_dot_segments(path))
    )


def _under(path: str, base_path: str) -> bool:
    """Whether `path` is `base_path` or below it (every path is below the root's "")."""
    return path == base_path or path.startswith(base_path + "/")


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4: how a URL resolver collapses "." and ".." in an absolute path.

    Only the start of the result is ever looked at, so the trailing "/" that the RFC keeps after a final
    "." or ".." is left out.
    """
    output: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if output:
                output.pop()
        elif segment != ".":
            output.append(segment)
    return "/" + "/".join(output)

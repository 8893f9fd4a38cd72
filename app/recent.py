"""The servers this browser signed in with, newest first: the sign-in form offers them again.

Only a sign-in that succeeded adds its server, in its canonical form, so the list never holds what someone
merely typed (`javascript:…`, `localhost`, a name that does not exist). The list lives in a cookie of this
browser only; tobira keeps nothing of it. A cookie value is still input: every entry is parsed again when
read, and what is not a server tobira would use is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.errors import InvalidInstance
from app.hosts import DevOrigin, parse_instance

MAX_RECENT = 5
MAX_AGE = 365 * 24 * 3600
SEPARATOR = "|"  # a cookie-safe character that no host contains
MAX_VALUE = 2048


def read(value: str | None, dev_origins: Sequence[DevOrigin]) -> list[str]:
    """The hosts a cookie value lists, each one a server tobira would use, without repeats."""
    hosts: list[str] = []
    for entry in (value or "")[:MAX_VALUE].split(SEPARATOR):
        try:
            host = parse_instance(entry, dev_origins).host if entry else None
        except InvalidInstance:
            continue
        if host and host not in hosts:
            hosts.append(host)
    return hosts[:MAX_RECENT]


def remember(value: str | None, host: str, dev_origins: Sequence[DevOrigin]) -> str:
    """The cookie value with `host` first (a host signed in with just now)."""
    hosts = [host, *(item for item in read(value, dev_origins) if item != host)]
    return SEPARATOR.join(hosts[:MAX_RECENT])

"""Discovery: what kind of server a host is, before anyone is sent to it.

`POST /api/meta` is the primary signal (name, icon, version, `features.miauth`); nodeinfo adds the
software's name and version where the server answers it (a fresh Misskey refuses `/.well-known/nodeinfo`
but still serves `/nodeinfo/2.1`), and the OAuth 2.0 metadata the permissions the server knows, where it
publishes `scopes_supported`. Results are cached per host for a while. Protocol code: no web framework.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from app.errors import InstanceError, InstanceUnreachable, NotMisskey
from app.hosts import Instance
from app.oauth2 import scopes_supported

NODEINFO_SCHEMAS = (
    "http://nodeinfo.diaspora.software/ns/schema/2.1",
    "http://nodeinfo.diaspora.software/ns/schema/2.0",
)
NODEINFO_PATHS = ("/nodeinfo/2.1", "/nodeinfo/2.0")
NODEINFO_DEADLINE = 4.0
MAX_TEXT = 256
MAX_URL = 1024
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What tobira knows about one server. Text fields are the server's own claims, shown escaped."""

    host: str
    name: str | None
    icon_url: str | None
    version: str
    miauth: bool
    software: str | None = None
    software_version: str | None = None
    scopes: tuple[str, ...] | None = None  # `scopes_supported`, None where the server publishes none

    def missing(self, permissions: list[str]) -> list[str]:
        """The requested permissions this server does not list ([] when it publishes no list)."""
        return [name for name in permissions if self.scopes is not None and name not in self.scopes]

    def as_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "name": self.name,
            "iconUrl": self.icon_url,
            "version": self.version,
            "miauth": self.miauth,
            "software": self.software,
            "softwareVersion": self.software_version,
        }


def _text(value: Any, limit: int = MAX_TEXT) -> str | None:
    return value[:limit] if isinstance(value, str) and value.strip() else None


def _icon_url(value: Any, schemes: tuple[str, ...]) -> str | None:
    """Keep an icon URL only when it is a plain web URL of sane length (it ends up in an <img>)."""
    if not isinstance(value, str) or len(value) > MAX_URL:
        return None
    parts = urlsplit(value)
    return value if parts.scheme in schemes and parts.hostname and not parts.username else None


async def fetch_meta(client: httpx.AsyncClient, instance: Instance) -> ServerInfo:
    """Ask `api/meta`; raise NotMisskey unless the answer looks like Misskey's."""
    response = await client.post(instance.url("/api/meta"), json={})
    status = response.status_code
    if status == 429 or status >= 500:
        raise InstanceUnreachable("The server is busy or under maintenance right now. Try again later.")
    try:
        meta = response.json()
    except ValueError:
        raise NotMisskey() from None
    if status != 200 or not isinstance(meta, dict) or not isinstance(meta.get("version"), str):
        raise NotMisskey()
    features = meta.get("features")
    return ServerInfo(
        host=instance.host,
        name=_text(meta.get("name")),
        icon_url=_icon_url(meta.get("iconUrl"), ("https", "http") if instance.dev else ("https",)),
        version=meta["version"][:MAX_TEXT],
        miauth=isinstance(features, dict) and features.get("miauth") is True,
    )


async def fetch_nodeinfo(client: httpx.AsyncClient, instance: Instance) -> tuple[str | None, str | None]:
    """Software name and version from nodeinfo, or (None, None). Never raises InstanceError."""
    paths = list(NODEINFO_PATHS)
    try:
        response = await client.get(instance.url("/.well-known/nodeinfo"))
        links = response.json().get("links", []) if response.status_code == 200 else []
        for link in links if isinstance(links, list) else []:
            href = link.get("href") if isinstance(link, dict) else None
            if link.get("rel") in NODEINFO_SCHEMAS and isinstance(href, str):
                # Follow a link only on the same origin: nodeinfo must not send us elsewhere.
                if href.startswith(instance.origin + "/"):
                    paths.insert(0, href[len(instance.origin) :])
    except (InstanceError, ValueError, AttributeError):
        pass
    for path in dict.fromkeys(paths):
        try:
            response = await client.get(instance.url(path))
            software = response.json().get("software") if response.status_code == 200 else None
        except (InstanceError, ValueError, AttributeError):
            continue
        if isinstance(software, dict):
            name = _text(software.get("name"), 64)
            return (name.lower() if name else None), _text(software.get("version"), 64)
    return None, None


class Discovery:
    """Looks servers up and remembers the answers for `ttl` seconds (bounded LRU, successes only)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        ttl: float = 600,
        *,
        nodeinfo_deadline: float = NODEINFO_DEADLINE,
        max_entries: int = 2048,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl = ttl
        self._nodeinfo_deadline = nodeinfo_deadline
        self._max_entries = max_entries
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, ServerInfo]] = OrderedDict()
        self._in_flight: dict[str, asyncio.Task[ServerInfo]] = {}

    async def _bonus(
        self, fetch: Callable[[httpx.AsyncClient, Instance], Awaitable[T]], instance: Instance, default: T
    ) -> T:
        """Nodeinfo or the permission list within its own, shorter deadline: a bonus, never worth the whole
        time bound."""
        try:
            async with asyncio.timeout(self._nodeinfo_deadline):
                return await fetch(self._client, instance)
        except TimeoutError:
            return default

    async def lookup(self, instance: Instance) -> ServerInfo:
        """ServerInfo for the instance; raises the InstanceError subclasses of the guard and NotMisskey.

        Concurrent lookups of one server share a single discovery: a burst of sign-ins to a slow server
        sends it one request, not one per person, and all of them wait for the same answer.
        """
        cached = self._cache.get(instance.origin)
        if cached and cached[0] > self._clock():
            self._cache.move_to_end(instance.origin)
            return cached[1]
        task = self._in_flight.get(instance.origin)
        if task is None:
            task = asyncio.create_task(self._discover(instance))
            self._in_flight[instance.origin] = task
            task.add_done_callback(lambda done: self._finished(instance.origin, done))
        # shield: one person giving up must not cancel the discovery the others are waiting for.
        return await asyncio.shield(task)

    def _finished(self, origin: str, task: asyncio.Task[ServerInfo]) -> None:
        self._in_flight.pop(origin, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so that nobody waiting is not an "unretrieved" warning

    async def _discover(self, instance: Instance) -> ServerInfo:
        no_software: tuple[str | None, str | None] = (None, None)
        nodeinfo = asyncio.create_task(self._bonus(fetch_nodeinfo, instance, no_software))
        scopes = asyncio.create_task(self._bonus(scopes_supported, instance, None))
        try:
            info = await fetch_meta(self._client, instance)
        except BaseException:
            nodeinfo.cancel()
            scopes.cancel()
            raise
        software, software_version = await nodeinfo
        info = ServerInfo(
            host=info.host,
            name=info.name,
            icon_url=info.icon_url,
            version=info.version,
            miauth=info.miauth,
            software=software,
            software_version=software_version,
            scopes=await scopes,
        )
        if self._ttl > 0:
            self._cache[instance.origin] = (self._clock() + self._ttl, info)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return info

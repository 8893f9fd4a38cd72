"""Discovery: what kind of server a host is, before anyone is sent to it.

`POST /api/meta` is the primary signal (name, icon, version, `features.miauth`); nodeinfo adds the
software's name and version where the server answers it (a fresh Misskey refuses `/.well-known/nodeinfo`
but still serves `/nodeinfo/2.1`); the OAuth 2.0 authorization server metadata gives the permissions the
server knows (`scopes_supported`) and, where it offers OAuth 2.0 as tobira needs it, the endpoints. All of it
is asked once per discovery, and results are cached per host for a while: nothing else fetches it again.
Protocol code: no web framework.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from app.errors import InstanceBusy, InstanceError, NotMisskey
from app.hosts import Instance

NODEINFO_SCHEMAS = (
    "http://nodeinfo.diaspora.software/ns/schema/2.1",
    "http://nodeinfo.diaspora.software/ns/schema/2.0",
)
NODEINFO_PATHS = ("/nodeinfo/2.1", "/nodeinfo/2.0")
OAUTH2_METADATA_PATH = "/.well-known/oauth-authorization-server"
NODEINFO_DEADLINE = 4.0
MAX_TEXT = 256
MAX_URL = 1024
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class OAuthMetadata:
    """A server's OAuth 2.0 offer, where it is as tobira needs it: endpoints on its own origin, PKCE S256,
    and the `iss` response parameter."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str


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
    oauth2: OAuthMetadata | None = None  # None where the server offers no OAuth 2.0 tobira can use

    def missing(self, permissions: list[str]) -> list[str]:
        """The requested permissions this server does not list ([] when it publishes no list)."""
        return [name for name in permissions if self.scopes is not None and name not in self.scopes]


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
        raise InstanceBusy()
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


AuthorizationServer = tuple[tuple[str, ...] | None, OAuthMetadata | None]


async def fetch_authorization_server(client: httpx.AsyncClient, instance: Instance) -> AuthorizationServer:
    """(`scopes_supported`, the OAuth 2.0 offer) from the server's authorization server metadata, each None
    where it has none (no metadata, a malformed one, no usable OAuth 2.0). Never raises InstanceError."""
    try:
        response = await client.get(instance.url(OAUTH2_METADATA_PATH))
        document = response.json() if response.status_code == 200 else None
    except (InstanceError, ValueError):
        return None, None
    if not isinstance(document, dict):
        return None, None
    scopes = document.get("scopes_supported")
    if not isinstance(scopes, list) or not all(isinstance(scope, str) for scope in scopes):
        scopes = None
    return (None if scopes is None else tuple(scopes)), _oauth2_offer(document, instance)


def _oauth2_offer(document: dict[str, Any], instance: Instance) -> OAuthMetadata | None:
    """The offer in a metadata document: both endpoints on the instance's own origin, S256 among the PKCE
    methods, the `iss` response parameter announced and the issuer the instance's own origin."""
    issuer = document.get("issuer")
    authorize, token = document.get("authorization_endpoint"), document.get("token_endpoint")
    methods = document.get("code_challenge_methods_supported")
    if not isinstance(issuer, str) or issuer.rstrip("/") != instance.origin or len(issuer) > MAX_URL:
        return None
    if document.get("authorization_response_iss_parameter_supported") is not True:
        return None
    if not isinstance(methods, list) or "S256" not in methods:
        return None
    if not (instance.owns(authorize) and instance.owns(token)):
        return None
    assert isinstance(authorize, str) and isinstance(token, str)
    return OAuthMetadata(issuer, authorize, token)


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
        nothing: AuthorizationServer = (None, None)
        nodeinfo = asyncio.create_task(self._bonus(fetch_nodeinfo, instance, no_software))
        authorization = asyncio.create_task(self._bonus(fetch_authorization_server, instance, nothing))
        try:
            info = await fetch_meta(self._client, instance)
        except BaseException:
            nodeinfo.cancel()
            authorization.cancel()
            raise
        software, software_version = await nodeinfo
        scopes, oauth2 = await authorization
        info = replace(
            info, software=software, software_version=software_version, scopes=scopes, oauth2=oauth2
        )
        if self._ttl > 0:
            self._cache[instance.origin] = (self._clock() + self._ttl, info)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return info

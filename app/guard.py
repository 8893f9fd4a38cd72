"""The outbound network guard: the only way tobira opens a connection to an instance.

tobira connects to servers that strangers name, so every request to an instance goes through the one
`httpx.AsyncClient` that `build_guarded_client` returns. Its transport enforces, on every request:

- https on port 443, or exactly one of the operator's dev origins; anything else is refused before any I/O;
- every address the name resolves to must be public (`is_public_address`), except for a dev origin, and only
  the addresses that were checked are connected to: the check sits in the resolver that aiohttp's connector
  calls, and aiohttp connects to what that resolver returned (still using the name for SNI and certificate
  verification), so DNS rebinding between a check and the connect cannot happen; aiohttp's DNS cache only
  ever holds answers that passed the check;
- no redirects followed, no cookies kept, no proxy or netrc from the environment, User-Agent "tobira/0.1";
- a time bound to connect and one for the whole request including the body (InstanceTimeout);
- a size bound on the answer counted after decompression (InstanceBadAnswer), the body read into memory;
- every failure raised as an `app.errors.InstanceError`, never an aiohttp exception, and never with the URL's
  query or the request body in the message (tokens travel there).

Why aiohttp under httpx: callers keep httpx's API, while aiohttp's connection handling is several times
cheaper per request than httpx's default transport, and this is the API proxy's hot path. The adapter is ours
rather than the `httpx-aiohttp` package because the rules above (size cap, exception mapping, address
checks) are the point of it.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import ipaddress
import logging
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import httpx
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError

from app.errors import (
    AddressForbidden,
    InstanceBadAnswer,
    InstanceError,
    InstanceNotFound,
    InstanceTimeout,
    InstanceUnreachable,
    TobiraError,
)
from app.hosts import DevOrigin

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

USER_AGENT = "tobira/0.1"
TOO_LARGE = "The server's answer is too large."
_UNREADABLE_ENCODING = "The server's answer uses a compression tobira cannot read."

_log = logging.getLogger(__name__)

# ipaddress's is_global lags behind the IANA registries (and differs between Python releases), so these
# are refused explicitly on top of it.
_V4_NOT_PUBLIC = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
)
# Only 2000::/3 is allocated for global unicast; inside it these are documentation, benchmarking and
# identifier (ORCHID) space, never a server's locator.
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_V6_NOT_PUBLIC = tuple(
    ipaddress.IPv6Network(net)
    for net in ("2001:2::/48", "2001:10::/28", "2001:20::/28", "2001:db8::/32", "3fff::/20")
)
_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_V4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def is_public_address(ip: Address) -> bool:
    """True only for an address on the public internet that tobira may connect to.

    IPv6 forms that carry an IPv4 address (mapped, translated, compatible, NAT64 64:ff9b::/96, 6to4, Teredo)
    are judged by the IPv4 address they lead to. The local-use NAT64 prefix 64:ff9b:1::/48 is never public:
    where its IPv4 address sits depends on a local choice, and it lies outside 2000::/3 anyway.
    """
    if isinstance(ip, ipaddress.IPv4Address):
        return _is_public_v4(ip)
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return all(_is_public_v4(v4) for v4 in embedded)
    return (
        ip in _V6_GLOBAL_UNICAST
        and ip.is_global
        and not ip.is_multicast
        and not any(ip in net for net in _V6_NOT_PUBLIC)
    )


def _is_public_v4(ip: ipaddress.IPv4Address) -> bool:
    return ip.is_global and not ip.is_multicast and not any(ip in net for net in _V4_NOT_PUBLIC)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...] | None:
    """The IPv4 addresses that `ip` carries (for Teredo: its server and its client), or None."""
    if ip in _V4_MAPPED or ip in _V4_TRANSLATED or ip in _V4_COMPATIBLE or ip in _NAT64:
        return (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo  # (server, client); both must be public
    return None


class Resolver(Protocol):
    """Turns a host name into the addresses to connect to."""

    async def resolve(self, host: str, port: int) -> list[str]:
        """IP address strings for `host`; raises InstanceNotFound when the name does not resolve."""
        ...


class SystemResolver:
    """The operating system's resolver, via the event loop's getaddrinfo."""

    async def resolve(self, host: str, port: int) -> list[str]:
        """IP address strings for `host`, in the resolver's order; raises InstanceNotFound."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise InstanceNotFound() from None
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """Bounds of every outbound request, and the operator's dev origins, which may be private."""

    connect_timeout: float = 5.0
    total_timeout: float = 15.0
    max_response_bytes: int = 4 * 1024 * 1024
    per_host_connections: int = 16
    dev_origins: tuple[DevOrigin, ...] = ()
    # How long checked DNS answers are reused; 0 resolves (and checks) again for every new connection.
    dns_cache_seconds: int = 10


def build_guarded_client(
    settings: GuardSettings,
    resolver: Resolver | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> httpx.AsyncClient:
    """The one client for talking to instances; close it with `await client.aclose()`.

    `resolver` defaults to SystemResolver, `ssl_context` to the system's trusted CAs; tests pass their own.
    """
    transport = _GuardedTransport(
        settings, resolver or SystemResolver(), ssl_context or ssl.create_default_context()
    )
    return httpx.AsyncClient(
        transport=transport,
        headers={"User-Agent": USER_AGENT},
        # httpx keeps a cookie jar of its own besides aiohttp's; one instance's cookies must never reach
        # a request made for another person, so this one refuses every cookie.
        cookies=http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[])),
        follow_redirects=False,
        trust_env=False,
    )


# Request headers the transport owns: hop-by-hop ones, the ones aiohttp derives from the URL and body, and
# those it sets by policy (User-Agent, and Accept-Encoding, which must list only what aiohttp can decode).
_REQUEST_HEADERS_DROPPED = frozenset(
    (
        "accept-encoding",
        "connection",
        "expect",
        "host",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
    )
)
# The body handed to httpx is decoded and whole, so these would describe it wrongly.
_RESPONSE_HEADERS_DROPPED = frozenset((b"content-encoding", b"content-length", b"transfer-encoding"))
_DECODED_ENCODINGS = frozenset(("gzip", "deflate", "br", "zstd", "identity"))


class _GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport over one aiohttp session that applies the guard's rules to every request."""

    def __init__(self, settings: GuardSettings, resolver: Resolver, ssl_context: ssl.SSLContext) -> None:
        self._settings = settings
        self._ssl_context = ssl_context
        self._dev_origins = frozenset(
            (scheme, _normal_host(host), port) for scheme, host, port in settings.dev_origins
        )
        self._resolver = _CheckingResolver(resolver, {(host, port) for _, host, port in self._dev_origins})
        self._max_bytes = settings.max_response_bytes
        # aiohttp sessions belong to a running event loop, so the session is made on the first request.
        self._session: aiohttp.ClientSession | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = yarl.URL(str(request.url), encoded=True)
        self._check_url(url)
        session = self._session or self._open_session()
        stream = request.stream
        data = (request.content or None) if isinstance(stream, httpx.ByteStream) else stream
        headers = [
            (name, value)
            for name, value in request.headers.multi_items()
            if name not in _REQUEST_HEADERS_DROPPED
        ]
        try:
            async with session.request(
                request.method, url, headers=headers, data=data, allow_redirects=False
            ) as answer:
                body = await self._read_body(answer)
                status, raw_headers = answer.status, answer.raw_headers
        except TobiraError:
            raise
        except (aiohttp.ClientError, HttpProcessingError, OSError) as exc:
            # Chaining would hand callers aiohttp's exception, whose text can include the full URL.
            raise _translate(exc, url.raw_host) from None
        return httpx.Response(
            status,
            headers=[
                (name, value) for name, value in raw_headers if name.lower() not in _RESPONSE_HEADERS_DROPPED
            ],
            content=body,
            request=request,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _check_url(self, url: yarl.URL) -> None:
        """AddressForbidden unless `url` is https on 443 or a dev origin, and an IP literal host is public."""
        scheme, host, port = url.scheme, url.raw_host or "", url.port
        ip: Address | None = None
        # aiohttp connects to anything it takes for an IP literal without asking the resolver, so those
        # are checked here, recognised by aiohttp's own rule.
        if ":" in host or host.replace(".", "").isdigit():
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                # "127.1", "2130706433" and the like: spellings aiohttp refuses and tobira never uses.
                raise AddressForbidden() from None
            host = str(ip)
        if (scheme, host, port) in self._dev_origins:
            return
        if scheme != "https" or port != 443:
            raise AddressForbidden()
        if ip is not None and not is_public_address(ip):
            raise AddressForbidden()

    def _open_session(self) -> aiohttp.ClientSession:
        settings = self._settings
        connector = aiohttp.TCPConnector(
            resolver=self._resolver,
            use_dns_cache=settings.dns_cache_seconds > 0,
            ttl_dns_cache=settings.dns_cache_seconds,
            # No global cap: one slow instance must not hold connections every other instance needs.
            limit=0,
            limit_per_host=settings.per_host_connections,
            ssl=self._ssl_context,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"User-Agent": USER_AGENT},
            # aiohttp would label a body without Content-Type as application/octet-stream.
            skip_auto_headers=("Content-Type",),
            # sock_connect bounds each connection attempt, TLS handshake included; waiting for a free
            # connection to the host is bounded only by the total, so a busy host queues requests.
            timeout=aiohttp.ClientTimeout(
                total=settings.total_timeout, sock_connect=settings.connect_timeout
            ),
            trust_env=False,
        )
        return self._session

    async def _read_body(self, answer: aiohttp.ClientResponse) -> bytes:
        """The whole decoded body; InstanceBadAnswer when over the size cap or in an unreadable encoding."""
        encodings = answer.headers.getall("Content-Encoding", ())
        if len(encodings) > 1 or (encodings and encodings[0].strip().lower() not in _DECODED_ENCODINGS):
            # aiohttp decodes one known encoding; anything else would reach httpx, which decodes unbounded.
            raise InstanceBadAnswer(_UNREADABLE_ENCODING)
        limit = self._max_bytes
        # A HEAD, 204 or 304 answer may declare a length without carrying a body; aiohttp marks it ended.
        if (answer.content_length or 0) > limit and not answer.content.at_eof():
            raise InstanceBadAnswer(TOO_LARGE)
        chunks: list[bytes] = []
        size = 0
        # aiohttp decompresses in bounded steps as we read, so a compression bomb stops here.
        while chunk := await answer.content.readany():
            size += len(chunk)
            if size > limit:
                raise InstanceBadAnswer(TOO_LARGE)
            chunks.append(chunk)
        return b"".join(chunks)


class _CheckingResolver(AbstractResolver):
    """aiohttp's resolver: asks tobira's Resolver and lets through only addresses that may be connected to."""

    def __init__(self, resolver: Resolver, dev_authorities: Iterable[tuple[str, int]]) -> None:
        self._resolver = resolver
        self._dev_authorities = frozenset(dev_authorities)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Checked addresses of `host`; InstanceNotFound if there are none, AddressForbidden if any is not
        public (unless (host, port) is a dev origin)."""
        texts = await self._resolver.resolve(host, port)
        if not texts:
            raise InstanceNotFound()
        any_address = (host, port) in self._dev_authorities
        results: list[ResolveResult] = []
        for text in texts:
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                raise AddressForbidden() from None
            if not any_address and not is_public_address(ip):
                raise AddressForbidden()
            results.append(
                {
                    "hostname": host,
                    "host": str(ip),
                    "port": port,
                    "family": socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                }
            )
        return results

    async def close(self) -> None:
        """Nothing to release: the wrapped Resolver owns no resources here."""


def _normal_host(host: str) -> str:
    """An IP literal in its canonical spelling (so "0:0::1" matches "::1"); any other host unchanged."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _translate(exc: BaseException, host: str | None) -> InstanceError:
    """The InstanceError for an aiohttp or socket failure; its message never contains the URL."""
    _log.debug("request to %s failed: %s", host, type(exc).__name__)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return InstanceNotFound()
    if isinstance(exc, aiohttp.InvalidURL):
        return AddressForbidden()
    if isinstance(exc, TimeoutError):  # aiohttp's own timeout errors derive from it too
        return InstanceTimeout()
    if isinstance(exc, aiohttp.ClientPayloadError):
        if isinstance(exc.__cause__, ContentEncodingError):
            return InstanceBadAnswer()
        return InstanceUnreachable()  # the connection ended before the body did
    if isinstance(exc, aiohttp.ClientResponseError | HttpProcessingError):
        return InstanceBadAnswer()
    return InstanceUnreachable()

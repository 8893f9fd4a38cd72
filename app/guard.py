"""The outbound network guard: the only way tobira opens a connection to an instance.

tobira connects to servers that strangers name. Every request to an instance goes through one `Guard`
(the proxy calls `Guard.request` directly; everything else uses the httpx client `guarded_client` builds
over it). On every request the guard enforces:

- https on port 443, or exactly one of the operator's dev origins; anything else is refused before any I/O;
- every address the name resolves to must be public (`is_public_address`), except for a dev origin, and the
  guard connects only to the addresses it checked, still using the name for SNI and certificate
  verification, so DNS rebinding between the check and the connect cannot happen; its short DNS cache only
  ever holds checked answers;
- no redirects followed, no cookies kept, no proxy or netrc from the environment, User-Agent "tobira/0.1";
- names resolved by `app.resolver` (asynchronous, bounded in time, capped overall and per client, one
  resolution per name shared by all who ask), never by a thread pool other requests need;
- a time bound to connect and one for the whole request including the body (InstanceTimeout), and at most
  `per_host_connections` requests to one origin at once, the others waiting within their time bound;
- kept-alive connections closed once idle too long and capped in number (`app.pool`);
- bounds on the answer's head, body and decompressed size as the bytes arrive (InstanceBadAnswer),
  enforced by `app.http1`;
- every failure raised as an `app.errors.InstanceError`, never with the URL's query or the request body in
  the message (tokens travel there).

The wire itself is `app.http1`, a small keep-alive HTTP/1.1 client: see its docstring for why.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import ipaddress
import logging
import re
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import SplitResult, urlsplit

import httpx

from app import http1, pool
from app.addresses import Address, is_public_address
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
from app.resolver import DnsResolver

USER_AGENT = "tobira/0.1"
TOO_LARGE = "The server's answer is too large."

_log = logging.getLogger(__name__)


class Resolver(Protocol):
    """Turns a host name into the addresses to connect to."""

    async def resolve(self, host: str, port: int) -> list[str]:
        """IP address strings for `host`; raises InstanceNotFound when the name does not resolve,
        InstanceTimeout when resolving it takes too long, RateLimited when the client resolves too much."""
        ...


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
    # Kept-alive connections (`app.pool`): closed after this long idle; at most this many idle per origin
    # (None: `per_host_connections`) and overall.
    idle_seconds: float = pool.IDLE_SECONDS
    max_idle_per_origin: int | None = None
    max_idle: int = pool.MAX_IDLE


class Guard:
    """The guarded way out: `request()` for tobira's own hot path, `build_guarded_client` for httpx callers.

    Connections are kept alive per origin and checked out one request at a time; at most
    `per_host_connections` requests run against one origin at once, the rest wait within their time bound.
    """

    def __init__(self, settings: GuardSettings, resolver: Resolver, ssl_context: ssl.SSLContext) -> None:
        self._settings = settings
        self._resolver = resolver
        self._ssl_context = ssl_context
        self._dev_origins = frozenset(
            (scheme, _normal_host(host), port) for scheme, host, port in settings.dev_origins
        )
        self._dev_authorities = frozenset((host, port) for _, host, port in self._dev_origins)
        self._dns_cache: OrderedDict[tuple[str, int], tuple[float, list[str]]] = OrderedDict()
        self._pool = pool.Pool(
            settings.per_host_connections,
            idle_seconds=settings.idle_seconds,
            max_idle_per_origin=settings.max_idle_per_origin,
            max_idle=settings.max_idle,
        )
        self._allowed_origins: dict[tuple[str, str], tuple[str, str, int]] = {}

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | AsyncIterable[bytes] = b"",
    ) -> http1.Answer:
        """Send one request and return the whole answer; raises the InstanceError subclasses.

        A GET is resent once when a kept-alive connection turns out to have been closed by the server
        before it answered. A POST never is: every Misskey API call is one (RFC 9110 §9.2.2), and MiAuth's
        `/check` is one-shot.
        """
        scheme, host, port, target = self._check_url(url)
        if method not in _METHODS:
            raise ValueError(f"method {method!r} is not used with instances")
        head, length = self._head(method, host, port, target, headers, body)
        try:
            with self._pool.using((scheme, host, port)) as origin:
                async with asyncio.timeout(self._settings.total_timeout), origin.gate:
                    for attempt in range(2):
                        connection, reused = self._pool.checkout(origin), True
                        if connection is None:
                            connection, reused = await self._connect(scheme, host, port), False
                        try:
                            answer = await connection.exchange(head, body, length, head_only=method == "HEAD")
                        except http1.Closed as closed:
                            if method != "GET" or not reused or closed.answered or attempt:
                                raise
                            continue
                        if connection.reusable:
                            self._pool.checkin(origin, connection)
                        else:
                            connection.close(graceful=True)
                        return answer
        except TobiraError:
            raise
        except (http1.WireError, OSError, TimeoutError) as exc:
            raise _translate(exc, host) from None
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        """Close every idle connection and stop the pool's sweeper."""
        await self._pool.aclose()

    def _check_url(self, url: str) -> tuple[str, str, int, str]:
        """(scheme, host, port, request target); AddressForbidden unless https on 443 or a dev origin."""
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if not _TARGET.fullmatch(target):
            raise AddressForbidden()
        # The origin's verdict is remembered: it is the same for every request to that instance.
        key = (parts.scheme, parts.netloc)
        allowed = self._allowed_origins.get(key)
        if allowed is None:
            allowed = self._check_origin(parts)
            if len(self._allowed_origins) >= _ORIGIN_CACHE_ENTRIES:
                self._allowed_origins.clear()
            self._allowed_origins[key] = allowed
        return (*allowed, target)

    def _check_origin(self, parts: SplitResult) -> tuple[str, str, int]:
        scheme = parts.scheme
        try:
            host, port = parts.hostname or "", parts.port or {"https": 443, "http": 80}.get(scheme, 0)
        except ValueError:
            raise AddressForbidden() from None
        if parts.username is not None or parts.password is not None:
            raise AddressForbidden()
        ip = _ip_literal(host)
        host = str(ip) if ip is not None else host
        if (scheme, host, port) in self._dev_origins:
            return scheme, host, port
        if scheme != "https" or port != 443:
            raise AddressForbidden()
        if not _HOST.fullmatch(host) if ip is None else not is_public_address(ip):
            raise AddressForbidden()
        return scheme, host, port

    @staticmethod
    def _head(
        method: str,
        host: str,
        port: int,
        target: str,
        headers: Iterable[tuple[str, str]],
        body: bytes | AsyncIterable[bytes],
    ) -> tuple[bytes, int | None]:
        """The serialised request head, and the body's length (None: sent chunked)."""
        authority = f"[{host}]" if ":" in host else host
        if port not in (80, 443):
            authority += f":{port}"
        lines = [f"{method} {target} HTTP/1.1", f"Host: {authority}", f"User-Agent: {USER_AGENT}"]
        lines.append("Accept-Encoding: gzip, deflate")
        length: int | None = len(body) if isinstance(body, bytes) else None
        for name, value in headers:
            lowered = name.lower()
            if lowered == "content-length" and length is None and value.isdigit():
                length = int(value)  # a streamed body of known length is sent as it is
            if lowered in _REQUEST_HEADERS_DROPPED:
                continue
            if not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(value):
                raise ValueError("header not allowed in a request to an instance")
            lines.append(f"{name}: {value}")
        lines.append("Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), length

    async def _connect(self, scheme: str, host: str, port: int) -> http1.Connection:
        """A new connection to one of the checked addresses of `host`, tried in the resolver's order."""
        settings = self._settings
        addresses = [host] if _ip_literal(host) is not None else await self._checked_addresses(host, port)
        loop = asyncio.get_running_loop()
        tls = self._ssl_context if scheme == "https" else None
        error: BaseException = http1.Closed(answered=False)
        for address in addresses:
            try:
                async with asyncio.timeout(settings.connect_timeout):
                    _, connection = await loop.create_connection(
                        lambda: http1.Connection(settings.max_response_bytes),
                        address,
                        port,
                        ssl=tls,
                        server_hostname=host if tls else None,
                    )
                return connection
            except (OSError, TimeoutError) as exc:
                error = exc
        raise error

    async def open_socket(self, url: str) -> tuple[socket.socket, str, ssl.SSLContext | None]:
        """A TCP socket connected to a checked address of `url`'s host, for protocols the guard lacks.

        Returns (socket, host name for SNI and certificate checks, TLS context or None for a plain-http dev
        origin). `url` is http(s); the same origin and address rules as `request` apply. Raises the
        InstanceError subclasses (AddressForbidden before any I/O).
        """
        scheme, host, port, _ = self._check_url(url)
        addresses = [host] if _ip_literal(host) is not None else await self._checked_addresses(host, port)
        loop = asyncio.get_running_loop()
        error: BaseException = InstanceUnreachable()
        for address in addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                async with asyncio.timeout(self._settings.connect_timeout):
                    await loop.sock_connect(sock, (address, port))
            except (OSError, TimeoutError) as exc:
                sock.close()
                error = exc
                continue
            return sock, host, self._ssl_context if scheme == "https" else None
        if isinstance(error, TobiraError):
            raise error
        raise _translate(error, host)

    async def _checked_addresses(self, host: str, port: int) -> list[str]:
        """The addresses `host` resolves to, each allowed, from a short cache of checked answers only."""
        key = (host, port)
        now = time.monotonic()
        cached = self._dns_cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            texts = await self._resolver.resolve(host, port)
        except OSError:
            raise InstanceNotFound() from None
        if not texts:
            raise InstanceNotFound()
        any_address = key in self._dev_authorities
        addresses = []
        for text in texts:
            ip = _ip_literal(text)
            if ip is None or (not any_address and not is_public_address(ip)):
                raise AddressForbidden()
            addresses.append(str(ip))
        if self._settings.dns_cache_seconds > 0:
            self._dns_cache[key] = (now + self._settings.dns_cache_seconds, addresses)
            self._dns_cache.move_to_end(key)
            while len(self._dns_cache) > _DNS_CACHE_ENTRIES:
                self._dns_cache.popitem(last=False)
        return addresses


class _GuardTransport(httpx.AsyncBaseTransport):
    """httpx's interface over the Guard, for code that prefers it (discovery, MiAuth)."""

    def __init__(self, guard: Guard) -> None:
        self._guard = guard

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        stream = request.stream
        body: bytes | AsyncIterable[bytes]
        if isinstance(stream, httpx.ByteStream):
            body = request.content
        else:
            assert isinstance(stream, AsyncIterable)
            body = stream
        answer = await self._guard.request(
            request.method,
            str(request.url),
            headers=request.headers.items(),
            body=body,
        )
        return httpx.Response(
            answer.status,
            headers=[(k, v) for k, v in answer.headers if k not in _RESPONSE_HEADERS_DROPPED],
            content=answer.body,
            request=request,
        )

    async def aclose(self) -> None:
        await self._guard.aclose()


def guarded_client(guard: Guard) -> httpx.AsyncClient:
    """An httpx client over `guard`; closing the client closes the guard's connections."""
    return httpx.AsyncClient(
        transport=_GuardTransport(guard),
        headers={"User-Agent": USER_AGENT},
        # One instance's cookies must never reach a request made for another person.
        cookies=http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[])),
        follow_redirects=False,
        trust_env=False,
    )


def build_guarded_client(
    settings: GuardSettings,
    resolver: Resolver | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> httpx.AsyncClient:
    """A Guard and its httpx client in one step; `resolver` and `ssl_context` default to the system's."""
    return guarded_client(build_guard(settings, resolver, ssl_context))


def build_guard(
    settings: GuardSettings,
    resolver: Resolver | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Guard:
    """A Guard; `resolver` defaults to `app.resolver.DnsResolver` with its default bounds."""
    return Guard(settings, resolver or DnsResolver(), ssl_context or ssl.create_default_context())


_METHODS = frozenset(("GET", "POST", "HEAD"))
_DNS_CACHE_ENTRIES = 4096
_ORIGIN_CACHE_ENTRIES = 4096
# Request headers the guard owns: hop-by-hop ones, Host, User-Agent and Accept-Encoding (it decodes only
# what it asks for), and the framing it derives from the body.
_REQUEST_HEADERS_DROPPED = frozenset(
    (
        "accept-encoding",
        "connection",
        "content-length",
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
_TARGET = re.compile(r"/[\x21-\x7e]*")
_HOST = re.compile(r"[a-z0-9.-]{1,253}")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(r"[\x20-\x7e\t]*")


def _ip_literal(text: str) -> Address | None:
    """The address if `text` is an IP literal; AddressForbidden for odd numeric spellings ("127.1")."""
    if ":" in text or text.replace(".", "").isdigit():
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            raise AddressForbidden() from None
    return None


def _normal_host(host: str) -> str:
    """An IP literal in its canonical spelling (so "0:0::1" matches "::1"); any other host unchanged."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _translate(exc: BaseException, host: str) -> InstanceError:
    """The InstanceError for a wire or socket failure; its message never contains the URL."""
    _log.debug("request to %s failed: %s", host, type(exc).__name__)
    if isinstance(exc, TimeoutError):
        return InstanceTimeout()
    if isinstance(exc, http1.TooLarge):
        return InstanceBadAnswer(TOO_LARGE)
    if isinstance(exc, http1.Malformed):
        return InstanceBadAnswer()
    return InstanceUnreachable()

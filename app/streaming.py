"""`GET /streaming`: the instance's streaming API (a WebSocket) relayed for the signed-in person.

The browser never holds the token, so it cannot open `wss://HOST/streaming?i=TOKEN` itself: tobira opens
that connection through the network guard (`Guard.open_socket`: the same origin and address rules as every
other request) and relays frames both ways. The upgrade is refused (HTTP 403) unless its `Origin` is tobira's
own, since browsers send cookies on cross-site WebSocket upgrades and no CORS applies; it is refused (401)
without a live session. Frames are bounded in size (1009 when exceeded), a stream with no frame either way
for `IDLE_SECONDS` is closed (1001), and a close on either side is passed on with its code.

A Misskey server keeps streams open after their token is revoked, so tobira closes them itself when the
session ends: `StreamRegistry.close` (called by `end_session`) on this process, and a periodic look at the
store's "ended" mark for sessions ended on another replica. The upstream URL holds the token: only the host
is ever logged, and the websockets library's own (debug) logging is kept off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.account import current_session
from app.csrf import is_same_origin
from app.errors import ErrorCode, InstanceTimeout, RateLimited, StoreUnavailable
from app.guard import USER_AGENT
from app.metrics import METRICS

if TYPE_CHECKING:
    from app.services import Services
    from app.session import Session

BROWSER_MAX_FRAME = 64 * 1024
INSTANCE_MAX_FRAME = 1024 * 1024
IDLE_SECONDS = 300.0
ENDED_CHECK_SECONDS = 30.0
SIGNED_OUT = 4001  # private-use close code: the session behind this stream ended
GOING_AWAY = 1001
TOO_BIG = 1009
BAD_GATEWAY = 1014

log = logging.getLogger("tobira.streaming")
# websockets logs request lines (with `?i=TOKEN`) at debug level: never let it.
_wire_log = logging.getLogger("tobira.streaming.wire")
_wire_log.setLevel(logging.WARNING)
# Codes a close frame may carry (RFC 6455 §7.4); 1005/1006/1015 only describe a missing or broken close.
_SENDABLE = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))


def sendable(code: int | None, fallback: int) -> int:
    """`code` if a close frame may carry it, else `fallback`."""
    return code if code is not None and (code in _SENDABLE or 3000 <= code < 5000) else fallback


class StreamingApp:
    """The ASGI app for WebSocket connections to `/streaming`."""

    def __init__(self, services: Callable[[], Services]) -> None:
        self._services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services = self._services()
        if (await receive())["type"] != "websocket.connect":
            return
        if services.streams.stopping:
            await _deny(scope, send, 503)
            return
        admitted = await _admit(services, HTTPConnection(scope))
        if isinstance(admitted, int):
            await _deny(scope, send, admitted)
            return
        session, upstream = admitted
        relay = _Relay(
            receive,
            send,
            upstream,
            ended_elsewhere=lambda: _ended_elsewhere(services, session),
            stopping=lambda: services.streams.stopping,
        )
        services.streams.add(session.sid, relay.session_ended)
        METRICS.open_streams.inc()
        try:
            await send({"type": "websocket.accept"})
            log.info("stream opened to %s", session.host)
            await relay.run()
        finally:
            METRICS.open_streams.dec()
            services.streams.remove(session.sid, relay.session_ended)
            await upstream.close()
            log.info("stream to %s closed", session.host)


async def _admit(services: Services, connection: HTTPConnection) -> tuple[Session, ClientConnection] | int:
    """The session and its upstream stream, or the HTTP status refusing the upgrade."""
    headers = connection.headers
    if "origin" not in headers or not is_same_origin(headers, services.settings.public_origin):
        return 403
    if not services.settings.permissions:  # identity-only: the token may not stream either
        return 403
    try:
        session = await current_session(services, connection.cookies)
    except StoreUnavailable:
        return 503
    if session is None:
        return 401
    try:
        return session, await _open_upstream(services, session)
    except (InstanceTimeout, TimeoutError):
        METRICS.instance_errors.labels(str(ErrorCode.INSTANCE_TIMEOUT)).inc()
        return 504
    except RateLimited:  # this client has as many names resolving as it may
        return 429
    except Exception as exc:  # refused, a failed handshake, a redirect websockets will not follow…
        # By type only: websockets quotes the URL, `?i=TOKEN` included, in some of its messages.
        log.info("streaming connection to %s refused: %s", session.host, _reason(exc))
        METRICS.instance_errors.labels(str(ErrorCode.INSTANCE_UNREACHABLE)).inc()
        return 502


async def _open_upstream(services: Services, session: Session) -> ClientConnection:
    """The instance's streaming socket for `session`, connected through the guard."""
    instance = session.instance
    sock, host, tls = await services.guard.open_socket(instance.url("/streaming"))
    scheme = "wss" if tls is not None else "ws"
    uri = f"{scheme}{instance.origin.removeprefix('https').removeprefix('http')}/streaming?i={session.token}"
    try:
        return await connect(
            uri,
            sock=sock,
            ssl=tls,
            server_hostname=host if tls is not None else None,
            proxy=None,
            user_agent_header=USER_AGENT,
            max_size=INSTANCE_MAX_FRAME,
            # Misskey's server offers no compression, and a compressor would cost each stream ~150 KiB.
            compression=None,
            open_timeout=services.settings.request_timeout,
            logger=_wire_log,
        )
    except BaseException:
        sock.close()
        raise


async def _ended_elsewhere(services: Services, session: Session) -> bool:
    """Whether another replica ended the session; while the store does not answer, not known: asked again
    at the next look (a sign-out on this process closes the stream at once anyway)."""
    try:
        return await services.ledger.session_ended(session.sid)
    except StoreUnavailable:
        return False


def _reason(exc: BaseException) -> str:
    """A loggable reason: an HTTP status or the exception's class, never a message that may hold the URL."""
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__


async def _deny(scope: Scope, send: Send, status: int) -> None:
    """Refuse the upgrade with an HTTP status where the server allows it, else its 403.

    A 403 is the plain ASGI close before accept: uvicorn logs a spurious error for a denial response.
    """
    if status != 403 and "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": status, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b""})
    else:
        await send({"type": "websocket.close", "code": 1008})


Codes = tuple[int | None, int | None]
"""How a stream ends: (the code for the browser, or None if it left; the code for the instance, or None)."""


class _Relay:
    """Frames both ways until one side closes, a frame is too big, the stream idles or the session ends.

    A task carries each direction; a timer wakes for the idle deadline and the periodic look at the store
    (a task only while it looks): an idle stream costs as little as it can. Whichever ends the stream first
    decides the codes; an exception in any of them ends it too, raised by `run`.
    """

    def __init__(
        self,
        receive: Receive,
        send: Send,
        upstream: ClientConnection,
        *,
        ended_elsewhere: Callable[[], Awaitable[bool]],
        stopping: Callable[[], bool],
    ) -> None:
        self._receive = receive
        self._send = send
        self._upstream = upstream
        self._ended_elsewhere = ended_elsewhere
        self._stopping = stopping
        self._last_frame = time.monotonic()
        self._next_check = self._last_frame + ENDED_CHECK_SECONDS
        self._outcome: asyncio.Future[Codes] = asyncio.get_running_loop().create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._look: asyncio.Task[None] | None = None

    def session_ended(self) -> None:
        """The session ended on this process, or the server is stopping (both sides then hear 1001)."""
        self._end((GOING_AWAY, GOING_AWAY) if self._stopping() else (SIGNED_OUT, 1000))

    async def run(self) -> None:
        """Relay until the end, then close both sides with the codes it decided."""
        carriers = [
            asyncio.create_task(self._guarded(self._from_browser())),
            asyncio.create_task(self._guarded(self._from_instance())),
        ]
        self._wake()
        try:
            browser_code, instance_code = await self._outcome
        finally:
            if self._timer is not None:
                self._timer.cancel()
            tasks = carriers if self._look is None else [*carriers, self._look]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if instance_code is not None:
            await self._upstream.close(instance_code)
        if browser_code is not None:
            await self._send({"type": "websocket.close", "code": browser_code})

    def _end(self, codes: Codes) -> None:
        if not self._outcome.done():
            self._outcome.set_result(codes)

    async def _guarded(self, step: Awaitable[Codes | None]) -> None:
        """Await `step`: the codes it returns end the stream, and so does an exception it raises."""
        try:
            codes = await step
        except Exception as exc:
            if not self._outcome.done():
                self._outcome.set_exception(exc)
            return
        if codes is not None:
            self._end(codes)

    def _wake(self) -> None:
        """Close an idle stream, start the look at the store when it is due, else sleep until either is."""
        self._timer = None
        now = time.monotonic()
        idle_deadline = self._last_frame + IDLE_SECONDS
        if now >= idle_deadline:
            self._end((GOING_AWAY, GOING_AWAY))
        elif now >= self._next_check:
            self._look = asyncio.create_task(self._guarded(self._look_at_store()))
        else:
            delay = min(idle_deadline, self._next_check) - now
            self._timer = asyncio.get_running_loop().call_later(delay, self._wake)

    async def _look_at_store(self) -> Codes | None:
        if await self._ended_elsewhere():
            return SIGNED_OUT, 1000
        self._look = None
        self._next_check = time.monotonic() + ENDED_CHECK_SECONDS
        self._wake()
        return None

    async def _from_browser(self) -> Codes:
        while True:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                return None, sendable(message.get("code"), GOING_AWAY)
            data: str | bytes | None = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            size = len(data.encode()) if isinstance(data, str) else len(data)
            if size > BROWSER_MAX_FRAME:
                return TOO_BIG, GOING_AWAY
            self._last_frame = time.monotonic()
            await self._upstream.send(data)

    async def _from_instance(self) -> Codes:
        try:
            async for data in self._upstream:
                self._last_frame = time.monotonic()
                key = "text" if isinstance(data, str) else "bytes"
                await self._send({"type": "websocket.send", key: data})
        except ConnectionClosed:
            pass
        return sendable(self._upstream.close_code, BAD_GATEWAY), None

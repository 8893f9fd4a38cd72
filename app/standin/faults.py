"""Switchable faults: the stand-in as a broken server, or behind a broken network, for tobira's failure tests.

A test puts `Fault(FaultKind.X, …)` into `StandinState.faults` under a route while the server runs, and
clears the mapping when done. Routes: `api/miauth/check` (every session's check), `api/ENDPOINT` such as
`api/meta` or `api/notes/timeline`, `nodeinfo` (the well-known document and both versions), the first path
segment of anything else (`miauth`, `avatar`, `moved`), and `*` for every request without a fault of its own.

A faulted request is still handled first — a check marks its session used, a note is stored — and only its
answer is spoiled: a fault plays whatever stands between a working server and tobira (a proxy's error page,
a cut connection), which is the worst case for the one-shot `/check`. Faults other than HTML and JSON send
the real answer made pathological (padded with JSON whitespace, compressed, cut short, dripped), so a client
that fails to refuse it gets something it could use, and a test can see that.

A REDIRECT on `streaming` answers the WebSocket upgrade itself, with a redirect that repeats the upgrade's
query string (the token included), as a server that redirects every path would.

`FaultLayer` is the ASGI middleware the runner puts around the stand-in. It counts every request by route
(`StandinState.route_hits`), faulted or not, so tests can tell that tobira retried nothing and followed no
redirect. Faults below HTTP (a reset, a close after the headers, a lying Content-Length, a drip, an endless
body, an endless header line, endless bytes after a compressed body) need the connection itself, which
ASGI does not expose: uvicorn's `send` is a method of its per-request cycle, which holds the connection's
`transport` and a `disconnected` flag, so these work only when uvicorn serves the stand-in
(`run_standin_in_thread`). Each of them ends with the connection closed, when the client leaves or else
when the fault is switched off; `StandinState.faults_in_progress` counts those still going, so tests can
tell that tobira hung up.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import gzip
import http
import socket
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.standin.responses import JSON_TYPE, encode_json
from app.standin.state import StandinState

PADDING = 10 * 1024 * 1024  # the default `size`: far over any sane cap on an answer (or its head)
DRIP_PADDING = 4096  # a drip's default `size`: small enough for any cap, minutes at the default interval
WRITE_BUFFER = 256 * 1024  # written ahead of a slow reader before an endless answer waits for it
ENDLESS_CHUNK = b" " * 65536
HEADER_LINE = 1000  # bytes per padding header: each line is harmless, only their sum is huge
POLL_SECONDS = 0.01
SMUGGLED = b'{"smuggled":true}'


class FaultKind(enum.Enum):
    """How an answer goes wrong. `Fault`'s other fields say which of them each kind uses."""

    HTML = "html"  # an nginx-style HTML page with `status` (default 200) instead of the answer
    JSON = "json"  # `body` (any JSON value) with `status` (default 200) instead of the answer
    EXTRA_HEADERS = "extra-headers"  # the real answer, with `headers` added (e.g. Set-Cookie)
    REDIRECT = "redirect"  # `status` (default 307) to `location` (default BASE_URL/moved)
    BIG_BODY = "big-body"  # the real body after `size` bytes of JSON whitespace, Content-Length set
    GZIP_BOMB = "gzip-bomb"  # the same padded body gzip-compressed: a few KiB on the wire
    HUGE_HEADERS = "huge-headers"  # the real answer after `size` bytes of headers, in 1000-byte lines
    ENDLESS = "endless"  # chunked: the real body, then whitespace that never ends
    ENDLESS_HEADER = "endless-header"  # the status line, then one header line that never ends
    GZIP_ENDLESS = "gzip-endless"  # chunked: the real body gzip-compressed, then bytes that never end
    DRIP_HEAD = "drip-head"  # the whole answer, padded, head included, one byte every `interval` seconds
    DRIP_BODY = "drip-body"  # the head at once, then the padded body one byte every `interval` seconds
    RESET = "reset"  # the head and half the body, then a TCP reset
    CLOSE_AFTER_HEADERS = "close-after-headers"  # the head, then a clean close
    LENGTH_OVER = "length-over"  # Content-Length one byte over the body; the connection then stays open
    LENGTH_UNDER = "length-under"  # the real answer, then an unasked-for one (Retry-After: 60), then open
    DROP = "drop"  # no answer at all: the connection is closed


@dataclass(frozen=True)
class Fault:
    """One fault and its parameters; fields a kind does not use are ignored, None means the kind's default."""

    kind: FaultKind
    status: int | None = None
    body: object = None
    headers: tuple[tuple[str, str], ...] = ()
    location: str | None = None
    size: int | None = None
    interval: float = 0.05

    @property
    def status_code(self) -> int:
        """`status`, or the kind's default."""
        return self.status or (307 if self.kind is FaultKind.REDIRECT else 200)

    @property
    def padding(self) -> int:
        """How many bytes of whitespace (or of headers) to send."""
        if self.size is not None:
            return self.size
        return DRIP_PADDING if self.kind in (FaultKind.DRIP_HEAD, FaultKind.DRIP_BODY) else PADDING


def route_of(path: str) -> str:
    """The name faults and hit counts use for a request path."""
    if path.startswith("/api/miauth/") and path.endswith("/check"):
        return "api/miauth/check"
    if path.startswith("/api/"):
        return path[1:]
    if path == "/.well-known/nodeinfo" or path.startswith("/nodeinfo/"):
        return "nodeinfo"
    return path.strip("/").split("/", 1)[0]


@dataclass
class _Answer:
    """The answer the stand-in gave, caught before it reached the network."""

    status: int = 500
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""

    def head(self, *, length: int | None = None) -> bytes:
        """The status line and headers; `length` replaces Content-Length (-1: chunked instead)."""
        headers = [
            (k, v) for k, v in self.headers if k.lower() not in (b"content-length", b"transfer-encoding")
        ]
        size = len(self.body) if length is None else length
        framing = (b"transfer-encoding", b"chunked") if size < 0 else (b"content-length", str(size).encode())
        lines = [f"HTTP/1.1 {self.status} {http.HTTPStatus(self.status).phrase}".encode()]
        lines += [name + b": " + value for name, value in [*headers, framing]]
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def padded(self, size: int) -> bytes:
        """The body after `size` bytes of JSON whitespace: the same document for a JSON parser."""
        return b" " * size + self.body


class FaultLayer:
    """ASGI middleware: counts requests by route and spoils the answers of faulted routes."""

    def __init__(self, app: ASGIApp, state: StandinState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            fault = self.state.faults.get(route_of(scope["path"]))
            if fault is not None and fault.kind is FaultKind.REDIRECT:
                self.state.route_hits[route_of(scope["path"])] += 1
                _redirect_upgrade(fault, scope, send, self.state)
                return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = route_of(scope["path"])
        self.state.route_hits[route] += 1
        fault = self.state.faults.get(route) or self.state.faults.get("*")
        if fault is None:
            await self.app(scope, receive, send)
        elif fault.kind is FaultKind.EXTRA_HEADERS:
            await self.app(scope, receive, _adding_headers(send, _encode(fault.headers)))
        else:
            answer = _Answer()
            await self.app(scope, receive, functools.partial(_catch, answer))
            response = _http_fault(fault, answer, self.state)
            if response is not None:
                await response(scope, receive, send)
            else:
                await self._socket_fault(fault, answer, _Connection(send, self.state, fault))

    async def _socket_fault(self, fault: Fault, answer: _Answer, connection: _Connection) -> None:
        self.state.faults_in_progress += 1
        try:
            await _SOCKET_FAULTS[fault.kind](fault, answer, connection)
        finally:
            connection.close()
            self.state.faults_in_progress -= 1


async def _catch(answer: _Answer, message: Message) -> None:
    if message["type"] == "http.response.start":
        answer.status = message["status"]
        answer.headers = list(message.get("headers", []))
    elif message["type"] == "http.response.body":
        answer.body += message.get("body", b"")


def _adding_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return sending


def _encode(headers: tuple[tuple[str, str], ...]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


def _http_fault(fault: Fault, answer: _Answer, state: StandinState) -> Response | None:
    """The answer for a fault HTTP can express, or None for one below HTTP."""
    status = fault.status_code
    headers = dict(fault.headers)
    kind = fault.kind
    if kind is FaultKind.HTML:
        return Response(_html_page(status), status, headers, media_type="text/html")
    if kind is FaultKind.JSON:
        return Response(encode_json(fault.body), status, headers, media_type=JSON_TYPE)
    if kind is FaultKind.REDIRECT:
        return Response(status_code=status, headers={**headers, "Location": fault.location or _moved(state)})
    if kind is FaultKind.BIG_BODY:
        return _replay(answer, answer.padded(fault.padding))
    if kind is FaultKind.GZIP_BOMB:
        bomb = _replay(answer, _gzip_padded(answer.body, fault.padding))
        bomb.headers["Content-Encoding"] = "gzip"
        return bomb
    if kind is FaultKind.HUGE_HEADERS:
        huge = _replay(answer, answer.body)
        lines = fault.padding // HEADER_LINE
        huge.raw_headers += [(b"x-padding-%06d" % i, b"a" * (HEADER_LINE - 18)) for i in range(lines)]
        return huge
    return None


def _replay(answer: _Answer, body: bytes) -> Response:
    response = Response(body, answer.status)
    kept = [(k, v) for k, v in answer.headers if k.lower() not in (b"content-length", b"content-encoding")]
    response.raw_headers = [*kept, (b"content-length", str(len(body)).encode())]
    return response


def _html_page(status: int) -> str:
    title = f"{status} {http.HTTPStatus(status).phrase}"
    return f"<html><head><title>{title}</title></head><body><h1>{title}</h1><hr>nginx</body></html>"


def _redirect_upgrade(fault: Fault, scope: Scope, send: Send, state: StandinState) -> None:
    """Answer a WebSocket upgrade with a redirect that repeats its query string (`?i=TOKEN` included), as a
    server redirecting every path would. Written on the raw connection: uvicorn's sans-I/O WebSocket protocol
    has no ASGI way to answer an upgrade with a status of one's choosing."""
    location = (fault.location or _moved(state)) + "?" + scope["query_string"].decode("latin-1")
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("a redirected upgrade needs the stand-in served by uvicorn")
    status = fault.status_code
    head = f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\nLocation: {location}\r\n"
    transport.write((head + "Content-Length: 0\r\nConnection: close\r\n\r\n").encode("latin-1"))
    transport.close()


def _moved(state: StandinState) -> str:
    return state.config.base_url + "/moved"


def _gzip_padded(body: bytes, size: int) -> bytes:
    """gzip of `size` spaces then `body`; the padding is compressed once per size, bodies vary."""
    prefix, compressor = _compressed_padding(size)
    rest = compressor.copy()
    tail: bytes = rest.compress(body) + rest.flush()
    return prefix + tail


@functools.cache
def _compressed_padding(size: int) -> tuple[bytes, Any]:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # 16+: the gzip format
    return compressor.compress(b" " * size), compressor


class _Transport(Protocol):
    """What is used of the connection's transport (asyncio's or uvloop's)."""

    def write(self, data: bytes) -> None: ...
    def is_closing(self) -> bool: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def get_extra_info(self, name: str) -> Any: ...
    def get_write_buffer_size(self) -> int: ...


class _Connection:
    """The raw connection under one request, taken from uvicorn (see the module docstring)."""

    def __init__(self, send: Send, state: StandinState, fault: Fault) -> None:
        self._cycle: Any = getattr(send, "__self__", None)
        transport = getattr(self._cycle, "transport", None)
        if transport is None or not hasattr(self._cycle, "disconnected"):
            raise RuntimeError(
                "faults below HTTP need the stand-in served by uvicorn (run_standin_in_thread)"
            )
        self._transport: _Transport = transport
        self._state = state
        self._fault = fault

    @property
    def open(self) -> bool:
        """False once the client has gone, the connection is closed, the fault is switched off (so that
        nothing outlives the test that set it), or the stand-in is stopping."""
        switched_on = self._fault in list(self._state.faults.values())  # a copy: tests change it meanwhile
        return switched_on and not self._transport.is_closing() and not self._state.stopping

    async def write(self, data: bytes) -> None:
        """Write, then wait while the client is more than WRITE_BUFFER behind (or until it is gone)."""
        if self.open:
            self._transport.write(data)
        await _until(lambda: not self.open or self._transport.get_write_buffer_size() <= WRITE_BUFFER)

    async def drip(self, data: bytes, interval: float) -> None:
        for index in range(len(data)):
            if not self.open:
                return
            self._transport.write(data[index : index + 1])
            await asyncio.sleep(interval)

    async def flushed(self) -> None:
        """Wait until everything written has left for the client."""
        await _until(lambda: not self.open or self._transport.get_write_buffer_size() == 0)

    async def hold(self) -> None:
        """Keep the connection open, saying nothing, until the client leaves."""
        await _until(lambda: not self.open or self._client_left())

    def _client_left(self) -> bool:
        """True once the client has closed or reset the connection. Peeked at on a duplicate of the socket:
        uvicorn stops reading a connection whose client sent its next request early, and would not notice."""
        with self._transport.get_extra_info("socket").dup() as sock:
            try:
                return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"")
            except BlockingIOError:
                return False
            except OSError:
                return True

    def reset(self) -> None:
        """Drop the connection with a TCP RST instead of a FIN."""
        sock = self._transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._transport.abort()

    def close(self) -> None:
        """Close, and tell uvicorn's cycle at once: it would otherwise add a 500 answer of its own."""
        if not self._transport.is_closing():
            self._transport.close()
        self._cycle.disconnected = True


async def _until(condition: Callable[[], bool]) -> None:
    """Wait until `condition()` holds. Polled: transports and uvicorn's cycle offer nothing to await for
    these, and `stopping` is set from the runner's thread."""
    while not condition():  # noqa: ASYNC110
        await asyncio.sleep(POLL_SECONDS)


async def _endless(fault: Fault, answer: _Answer, connection: _Connection) -> None:
    await connection.write(answer.head(length=-1) + _chunk(answer.body))
    while connection.open:
        await connection.write(_chunk(ENDLESS_CHUNK))


async def _endless_header(fault: Fault, answer: _Answer, connection: _Connection) -> None:
    status_line = answer.head().split(b"\r\n", 1)[0]
    await connection.write(status_line + b"\r\nX-Endless: ")
    while connection.open:
        await connection.write(b"a" * len(ENDLESS_CHUNK))


async def _gzip_endless(fault: Fault, answer: _Answer, connection: _Connection) -> None:
    compressed = _Answer(answer.status, [*answer.headers, (b"content-encoding", b"gzip")], answer.body)
    await connection.write(compressed.head(length=-1) + _chunk(gzip.compress(answer.body)))
    while connection.open:
        await connection.write(_chunk(ENDLESS_CHUNK))


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def _drip_head(fault: Fault, answer: _Answer, connection: _Connection) -> None:
    body = answer.padded(fault.padding)
    await connection.drip(answer.head(length=len(body)) + body, fault.interval)


async def _drip_body(fault: Fault, answer: _Answer, connection: _Connection) -> None:
    body = answer.padded(fault.padding)
    await connection.write(answer.head(length=len(body)))
    await connection.drip(body, fault.interval)


async def _reset(fault: Fault, answer: _Answer, connection: _Connection) -> None:
    await connection.write(answer.head() + answer.body[: len(answer.body) // 2])
    await connection.flushed()
    await asyncio.sleep(0.05)  # let the client read what came before the reset
    connection.reset()


async def _close_after_headers(fault: Fault, answer: _Answer, connection: _Connection) -> None:
    await connection.write(answer.head())
    await connection.flushed()


async def _length_over(fault: Fault, answer: _Answer, connection: _Connection) -> None:
    await connection.write(answer.head(length=len(answer.body) + 1) + answer.body)
    await connection.hold()


async def _length_under(fault: Fault, answer: _Answer, connection: _Connection) -> None:
    smuggled = _Answer(200, [(b"content-type", JSON_TYPE.encode()), (b"retry-after", b"60")], SMUGGLED)
    await connection.write(answer.head() + answer.body + smuggled.head() + smuggled.body)
    await connection.hold()


async def _drop(fault: Fault, answer: _Answer, connection: _Connection) -> None:
    pass  # closing is all: `_socket_fault` always closes


_SOCKET_FAULTS = {
    FaultKind.ENDLESS: _endless,
    FaultKind.ENDLESS_HEADER: _endless_header,
    FaultKind.GZIP_ENDLESS: _gzip_endless,
    FaultKind.DRIP_HEAD: _drip_head,
    FaultKind.DRIP_BODY: _drip_body,
    FaultKind.RESET: _reset,
    FaultKind.CLOSE_AFTER_HEADERS: _close_after_headers,
    FaultKind.LENGTH_OVER: _length_over,
    FaultKind.LENGTH_UNDER: _length_under,
    FaultKind.DROP: _drop,
}

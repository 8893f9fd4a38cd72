"""tobira's hot paths served below ASGI's request-response cycle: `LaneProtocol`, uvicorn's HTTP protocol
with one change.

A reverse proxy asks `/auth/request` before every request to the app it protects, and a site's pages call
`/api/*` all the time. uvicorn serves each request through its request-response cycle (an event, a task
that talks to the app in messages, checks on every header sent) and then tobira's plain ASGI layers; for
these short requests that costs more than tobira's own work (bench/forward_bench.py, bench/proxy_bench.py).

`LaneProtocol` asks the app (`hot_path`, see `app.main.Tobira`) whether a request is one of its hot paths as
soon as its headers are in. If so, and the request is plain (HTTP/1.1, a path without `%`, a declared body
of at most `hot_body_limit` bytes, no `Expect`, no upgrade, no request still being answered before it on the
connection), it reads the body whole, runs the app's handler for it in one task and writes the answer in one
piece, with its own length. Everything else (pages, uploads, WebSocket upgrades, pipelined and chunked
requests, the concurrency limit) goes through uvicorn unchanged, as does every connection's life: keep-alive,
timeouts, graceful stop (`shutdown`), the task uvicorn waits for on stop.

Run it with `uvicorn --http app.lanes:LaneProtocol`; `tobira serve` does. It relies on the attributes of
uvicorn's protocol that it names, which is why pyproject.toml takes one minor version of uvicorn at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from starlette.types import ASGIApp, Message, Receive, Scope
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

log = logging.getLogger(__name__)

PLAIN_REQUEST = {"type": "http.request", "body": b"", "more_body": False}
DISCONNECT = {"type": "http.disconnect"}
SERVER_ERROR = (500, b"content-type: text/plain; charset=utf-8\r\n", b"Internal Server Error")
UNFRAMED = frozenset((b"content-length", b"transfer-encoding"))  # the lane frames every answer itself


HotAnswer = tuple[int, bytes, bytes]
"""Status, header lines (`header_lines`; no Content-Length: the lane adds it) and body."""


HotHandler = Callable[[Scope, bytes], Awaitable[HotAnswer]]
"""Answers a hot request: its ASGI scope, as uvicorn makes it, and its whole body."""


@runtime_checkable
class HotPaths(Protocol):
    """What an app offers the protocol: `hot_path(scope)` is the handler for a hot request (which it may
    note in the scope), else None."""

    hot_body_limit: int

    def hot_path(self, scope: Scope) -> HotHandler | None: ...


class LaneCycle:
    """One hot request under way. It stands where uvicorn keeps its request-response cycle (`self.cycle`),
    with the attributes uvicorn's connection handling reads and writes."""

    __slots__ = (
        "body",
        "disconnected",
        "handler",
        "keep_alive",
        "message_event",
        "response_complete",
        "scope",
    )

    def __init__(self, handler: HotHandler, scope: Scope, keep_alive: bool) -> None:
        self.handler = handler
        self.scope = scope
        self.keep_alive = keep_alive  # uvicorn's graceful stop sets it to False: close after answering
        self.disconnected = False
        self.response_complete = False
        self.body: list[bytes] = []
        self.message_event = self  # uvicorn sets it when the connection is lost

    def set(self) -> None:
        """uvicorn's signal that the connection is gone (or the body complete): nothing waits on it here."""


class LaneProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, serving the app's hot paths itself (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        plain = self.limit_concurrency is None and not self.root_path
        self.hot = self.app if plain and isinstance(self.app, HotPaths) else None

    def on_headers_complete(self) -> None:
        handler = self._hot_handler()
        if handler is None:
            super().on_headers_complete()
            return
        scope: Scope = self.scope  # type: ignore[assignment]
        cycle = LaneCycle(handler, scope, keep_alive=self.parser.should_keep_alive())
        self.cycle = cycle  # type: ignore[assignment]

    def _hot_handler(self) -> HotHandler | None:
        """The handler for the request whose headers just arrived, with its scope completed; or None."""
        hot, previous = self.hot, self.cycle
        if (
            hot is None
            or (previous is not None and not previous.response_complete)
            or self.parser.get_http_version() != "1.1"
            or self.parser.should_upgrade()
            or self.expect_100_continue
            or not self._small_body(hot.hot_body_limit)
        ):
            return None
        raw_path, _, query = self.url.partition(b"?")
        # Only a plain path: uvicorn decodes `%`, and takes other forms (`http://host/path`, `*`) apart.
        if raw_path[:1] != b"/" or b"%" in raw_path or b"#" in query:
            return None
        scope = self.scope
        scope["method"] = self.parser.get_method().decode("ascii")
        scope["path"] = raw_path.decode("ascii")
        scope["raw_path"] = raw_path
        scope["query_string"] = query
        return hot.hot_path(scope)  # type: ignore[arg-type]  # uvicorn types its scope as a TypedDict

    def _small_body(self, limit: int) -> bool:
        """True when the request declares a body of at most `limit` bytes, or none, and is not chunked."""
        length = 0
        for name, value in self.headers:
            if name == b"content-length":
                if not value.isdigit():
                    return False
                length = int(value)
            elif name == b"transfer-encoding":
                return False
        return length <= limit

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if isinstance(cycle, LaneCycle):
            cycle.body.append(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if not isinstance(cycle, LaneCycle):
            super().on_message_complete()
            return
        task = self.loop.create_task(self._serve(cycle))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    async def _serve(self, cycle: LaneCycle) -> None:
        scope, body = cycle.scope, b"".join(cycle.body)
        try:
            data = self._encode(cycle, scope, *await cycle.handler(scope, body))
        except Exception as exc:
            log.error("unexpected error on a hot path", exc_info=exc)
            cycle.keep_alive = False
            data = self._encode(cycle, scope, *SERVER_ERROR)
        except BaseException:  # cancelled (a stop that waited long enough): a 500, as uvicorn answers then
            cycle.keep_alive = False
            if not cycle.disconnected:
                self.transport.write(self._encode(cycle, scope, *SERVER_ERROR))
            self.transport.close()
            raise
        if self.access_log:  # uvicorn's line, as its own cycle writes it
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(scope),  # type: ignore[arg-type]  # uvicorn types its scope as a TypedDict
                scope["method"],
                get_path_with_query_string(scope),  # type: ignore[arg-type]
                scope["http_version"],
                int(data[9:12]),
            )
        if not cycle.disconnected:
            self.transport.write(data)
        cycle.response_complete = True
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()

    def _encode(self, cycle: LaneCycle, scope: Scope, status: int, lines: bytes, body: bytes) -> bytes:
        """The answer as bytes: the status line, uvicorn's default headers (Date, Server), the app's, the
        length, and the body (none for HEAD)."""
        close = b"" if cycle.keep_alive else b"connection: close\r\n"
        head = b"%b%b%b%bcontent-length: %d\r\n\r\n" % (
            STATUS_LINE[status],
            self._default_lines(),
            lines,
            close,
            len(body),
        )
        return head if scope["method"] == "HEAD" else head + body

    def _default_lines(self) -> bytes:
        """uvicorn's default headers as lines; uvicorn makes a new list when the date changes."""
        defaults = self.server_state.default_headers
        if defaults is not _defaults[0]:
            _defaults[:] = [defaults, header_lines(defaults)]
        return _defaults[1]  # type: ignore[return-value]


async def run_asgi(app: ASGIApp, scope: Scope, body: bytes) -> HotAnswer:
    """`app`'s answer to a request read whole."""
    answer = Answer(body)
    await app(scope, answer.receive, answer.send)
    return answer.result()


def receiving(body: bytes) -> Receive:
    """An ASGI `receive` for a request read whole: its body, then the end of the connection."""
    return Answer(body).receive


_defaults: list[object] = [None, b""]  # uvicorn's default headers last seen, and their lines


def header_lines(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Headers as they go on the wire, `name: value` lines; a name or value with a line break is refused
    (it would split the answer)."""
    lines = [b"%b: %b\r\n" % (name, value) for name, value in headers]
    joined = b"".join(lines)
    if joined.count(b"\n") != len(lines) or joined.count(b"\r") != len(lines):
        raise ValueError("a header name or value holds a line break")
    return joined


class Answer:
    """The ASGI side of a hot request: gives the app the whole body, gathers its answer."""

    __slots__ = ("body", "chunks", "headers", "request", "status")

    def __init__(self, body: bytes) -> None:
        self.request: Message | None = {**PLAIN_REQUEST, "body": body} if body else PLAIN_REQUEST
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []

    async def receive(self) -> Message:
        request, self.request = self.request, None
        return DISCONNECT if request is None else request

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = list(message.get("headers", ()))
        elif message["type"] == "http.response.body":
            self.chunks.append(message.get("body", b""))

    def result(self) -> HotAnswer:
        if not self.status:
            raise RuntimeError("the app answered nothing")
        framed = [(name, value) for name, value in self.headers if name.lower() not in UNFRAMED]
        return self.status, header_lines(framed), b"".join(self.chunks)

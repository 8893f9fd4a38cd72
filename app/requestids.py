"""Request ids: every HTTP request and WebSocket connection has one, on its log lines and in its answer.

An `X-Request-Id` sent by a trusted proxy (a peer in `FORWARDED_ALLOW_IPS`, as `app.forwarded` decides it,
before the proxy headers rewrite the client's address) is kept, so one id follows a request through nginx and
tobira; from anyone else, or not a plain token of at most 128 characters, it is ignored and tobira makes its
own (32 hex digits: a random half per process and a count). The id is echoed in the answer's `X-Request-Id`
header (on a WebSocket's accept too) and is `app.logs.REQUEST_ID` while the request is served, whichever way
it goes (pages, proxy, streaming, forward authentication, the hot paths of `app.lanes`).
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.forwarded import ForwardedHeaders, trusted_peer
from app.logs import REQUEST_ID

HEADER = b"x-request-id"
STARTS = frozenset(("http.response.start", "websocket.accept", "websocket.http.response.start"))
VALID = re.compile(rb"[A-Za-z0-9._~:+/=-]{1,128}")


def request_id(headers: Iterable[tuple[bytes, bytes]], *, trusted: bool) -> str:
    """A trusted proxy's own valid X-Request-Id, else a new id."""
    if trusted:
        for name, value in headers:
            if name == HEADER and VALID.fullmatch(value):
                return str(value.decode("ascii"))
    return new_id()


def new_id() -> str:
    """32 hex digits, unique: this process's random half and a count (no system call per id)."""
    return f"{_process_half}{next(_count):016x}"


def _new_process() -> None:
    global _process_half, _count
    _process_half, _count = secrets.token_hex(8), itertools.count()


_process_half, _count = "", itertools.count()
_new_process()
os.register_at_fork(after_in_child=_new_process)


class RequestIds:
    """Plain ASGI: sets the request's id for its log lines and adds it to the answer."""

    def __init__(self, app: ASGIApp, *, peers: ForwardedHeaders) -> None:
        self.app = app
        self.peers = peers

    def request_id(self, scope: Scope) -> str:
        self.peers.note_peer(scope)
        return request_id(scope["headers"], trusted=trusted_peer(scope))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = self.request_id(scope)
        header = (HEADER, request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] in STARTS:
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)

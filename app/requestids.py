"""Request ids: every HTTP request and WebSocket connection has one, on its log lines and in its answer.

An `X-Request-Id` sent by a trusted proxy (an address in `FORWARDED_ALLOW_IPS`, the list uvicorn reads) is
kept, so one id follows a request through nginx and tobira; from anyone else, or not a plain token of at
most 128 characters, it is ignored and tobira makes its own (32 hex digits). The id is echoed in the answer's
`X-Request-Id` header (on a WebSocket's accept too) and is `app.logs.REQUEST_ID` while the request is served.

Why the proxy headers are applied here too: uvicorn's own middleware replaces the client's address with the
one `X-Forwarded-For` names, after which nobody can tell whether the connecting peer was a trusted proxy. So
`RequestIds` looks at the peer first, then uvicorn's `ProxyHeadersMiddleware` runs inside it with the same
list. `tobira serve` turns uvicorn's own copy off; under plain uvicorn pass `--no-proxy-headers` (with it on,
nothing breaks: proxies' ids are then not kept, tobira makes its own).
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logs import REQUEST_ID

HEADER = b"x-request-id"
STARTS = frozenset(("http.response.start", "websocket.accept", "websocket.http.response.start"))
VALID = re.compile(rb"[A-Za-z0-9._~:+/=-]{1,128}")


class TrustedPeers:
    """Addresses and networks (`*` for any) whose requests' proxy headers are believed."""

    def __init__(self, entries: Sequence[str]) -> None:
        self.anyone = "*" in entries
        self.networks = [ipaddress.ip_network(entry, strict=False) for entry in entries if entry != "*"]

    def __contains__(self, host: object) -> bool:
        if self.anyone:
            return True
        if not isinstance(host, str):
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


class RequestIds:
    """Plain ASGI: sets the request's id for its log lines and adds it to the answer."""

    def __init__(self, app: ASGIApp, *, trusted: Sequence[str]) -> None:
        self.app = app
        self.trusted = TrustedPeers(trusted)

    def request_id(self, scope: Scope) -> str:
        client = scope.get("client")
        if client and client[0] in self.trusted:
            for name, value in scope["headers"]:
                if name == HEADER and VALID.fullmatch(value):
                    return str(value.decode("ascii"))
        return uuid.uuid4().hex

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = self.request_id(scope)
        header = (HEADER, request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] in (
                "http.response.start",
                "websocket.accept",
                "websocket.http.response.start",
            ):
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)

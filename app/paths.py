"""tobira under a path (`TOBIRA_PUBLIC_URL=https://example.com/misskey`): the one place that knows the prefix.

The reverse proxy in front passes paths unchanged, so requests arrive as `/misskey/login`. `UnderPath`, at the
very front, sets the ASGI `root_path` to the prefix and leaves `path` whole, as the ASGI spec has it:
Starlette's router then matches routes without the prefix, and `request.url` is still the full URL. tobira's
own plain-ASGI parts (the dispatch of `/api/*` and `/streaming`, the proxy's endpoint names, forward
authentication, the web layer's path checks) ask `route_path` or `raw_route_path` for the path without it.

A request outside the prefix is a 404, except the health checks (`ROOT_PATHS`), which also answer at the
root: they are asked by whoever runs the container, straight, not through the site's proxy.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import NotFound, misskey_shape

ROOT_PATHS = frozenset(("/healthz", "/readyz"))
# Misskey's error shape, as every JSON refusal of tobira's.
NOT_FOUND = orjson.dumps(misskey_shape(NotFound()))


def route_path(scope: Scope) -> str:
    """The request's path without tobira's prefix (its `root_path`): "/login" for "/misskey/login"."""
    path: str = scope["path"]
    root: str = _root(scope)
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root) :] or "/"
    return path


def raw_route_path(scope: Scope) -> bytes:
    """`raw_path` (the path as the client sent it, still percent-encoded) without tobira's prefix."""
    raw: bytes = scope.get("raw_path", b"")
    root = _root(scope).encode("utf-8")
    if root and (raw == root or raw.startswith(root + b"/")):
        return raw[len(root) :] or b"/"
    return raw


def _root(scope: Scope) -> str:
    # Inside a mount (/static) Starlette extends `root_path` and keeps the application's in `app_root_path`.
    root: str = scope.get("app_root_path", scope.get("root_path", ""))
    return root


class UnderPath:
    """Plain ASGI: serves `app` under `base_path` ("" for the root, where it changes nothing)."""

    def __init__(self, app: ASGIApp, *, base_path: str) -> None:
        self.app = app
        self.base_path = base_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        base = self.base_path
        if not base or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(base + "/"):
            await self.app({**scope, "root_path": base}, receive, send)
        elif path in ROOT_PATHS:
            await self.app({**scope, "root_path": ""}, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        elif path == base:
            # The prefix itself: its home page is "/misskey/", as a browser resolving relative links needs.
            query = scope.get("query_string", b"")
            location = (base + "/").encode() + (b"?" + query if query else b"")
            await _answer(send, 308, [(b"location", location)], b"")
        else:
            await _answer(send, 404, [(b"content-type", b"application/json")], NOT_FOUND)


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [
        *headers,
        (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

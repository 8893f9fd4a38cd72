"""Which reverse proxies tobira believes: X-Forwarded-* headers count only from `FORWARDED_ALLOW_IPS`.

uvicorn can do this itself (`--proxy-headers`), but it replaces the connection's address with the client's
from X-Forwarded-For and keeps no trace of who actually connected. Forward authentication must know exactly
that (a visited host named by anyone else is a lie to be ignored), so tobira does the work itself: uvicorn's
own middleware, configured with tobira's setting, after noting in the scope whether the connecting peer was
trusted. Run uvicorn with `--no-proxy-headers` (`tobira serve` does): otherwise uvicorn rewrites the address
first, and headers from a proxy that sends X-Forwarded-For are then believed by nobody.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

TRUSTED_PEER = "tobira.trusted_peer"  # scope key: True when the connection came from a trusted proxy


class ForwardedHeaders:
    """Notes whether the peer is trusted, then believes X-Forwarded-For/-Proto from trusted peers only."""

    def __init__(self, app: ASGIApp, *, trusted: str) -> None:
        self.proxy_headers = ProxyHeadersMiddleware(app, trusted_hosts=trusted)  # type: ignore[arg-type]
        self._rewrite = ProxyHeadersMiddleware(_nothing, trusted_hosts=trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            self.note_peer(scope)
        await self.proxy_headers(scope, receive, send)  # type: ignore[arg-type]

    def note_peer(self, scope: Scope) -> None:
        """Only note whether the peer is trusted (for a route that needs no rewritten client address)."""
        client = scope.get("client")
        scope[TRUSTED_PEER] = client is not None and client[0] in self.proxy_headers.trusted_hosts

    async def believe(self, scope: Scope) -> None:
        """Rewrite the client's address and scheme in `scope` as `__call__` does (for app.lanes)."""
        await self._rewrite(scope, _nothing, _nothing)  # type: ignore[arg-type]


def trusted_peer(scope: Scope) -> bool:
    return bool(scope.get(TRUSTED_PEER, False))


async def _nothing(*args: object) -> None:
    """The app after the rewriting, when only the rewriting is wanted."""

"""The application factory: `uvicorn --factory app.main:create_app` serves tobira."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from app import metrics
from app.clients import client_key
from app.config import Settings, load_settings
from app.forwarded import ForwardedHeaders, trusted_peer
from app.guard import Resolver
from app.lanes import HotAnswer, HotHandler
from app.logs import REQUEST_ID, configure_logging
from app.openapi import build_openapi
from app.paths import UnderPath, route_path
from app.requestids import RequestIds
from app.requestids import request_id as new_request_id
from app.resolver import CLIENT
from app.routes import account, oidc, pages, signin
from app.routes import metrics as metrics_route
from app.routes.forward import PATHS as FORWARD_PATHS
from app.routes.forward import ForwardAuthApp
from app.routes.proxy import ProxyApp
from app.services import build_services
from app.streaming import StreamingApp
from app.streams import closed_on_stop
from app.web import EXCEPTION_HANDLERS, STATIC_DIR, SecurityHeaders


def create_app(
    settings: Settings | None = None,
    *,
    resolver: Resolver | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """Build tobira; with no settings they are read from the environment. `resolver`/`clock` are for tests."""
    settings = settings or load_settings()
    configure_logging(settings.log_level, settings.log_format)
    metrics.METRICS.make_all()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings, resolver=resolver, clock=clock)
        app.state.services = services
        try:
            with closed_on_stop(services.streams):
                yield
        finally:
            await services.aclose()
            metrics.process_stopped(settings.prometheus_multiproc_dir)

    app = Tobira(
        title="tobira",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
    )
    app.state.settings = settings
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
    for router in (pages.router, signin.router, account.router, oidc.router, metrics_route.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    sources, hsts = " ".join(["https:", *settings.dev_instances]), settings.is_production
    app.add_middleware(SecurityHeaders, instance_sources=sources, hsts=hsts)
    app.add_middleware(ResolvingFor, ipv6_prefix=settings.rate_limit_ipv6_prefix)
    app.proxy_app = ProxyApp(lambda: app.state.services)
    proxy = SecurityHeaders(app.proxy_app, instance_sources=sources, hsts=hsts)
    app.proxy_lines = proxy.json_lines()
    app.proxy = ResolvingFor(proxy, ipv6_prefix=settings.rate_limit_ipv6_prefix)
    app.ipv6_prefix = settings.rate_limit_ipv6_prefix
    app.streaming = ResolvingFor(
        StreamingApp(lambda: app.state.services), ipv6_prefix=settings.rate_limit_ipv6_prefix
    )
    app.forward = ForwardAuthApp(
        lambda: app.state.services,
        pages=lambda page: SecurityHeaders(
            page, instance_sources=sources, hsts=hsts, own_origin=settings.public_origin
        ),
    )
    app.front = ForwardedHeaders(app.dispatch, trusted=settings.forwarded_allow_ips)
    app.under_path = UnderPath(app.route, base_path=settings.base_path)
    app.entry = RequestIds(app.under_path, peers=app.front)  # outermost: every request has its id
    app.hot_handlers = {
        path: partial(app.hot_forward, redirect=redirect) for path, redirect in FORWARD_PATHS.items()
    }
    app.hot_body_limit = settings.max_body_bytes
    return app


class ResolvingFor:
    """Plain ASGI: tells the resolver (`app.resolver.CLIENT`) which client each HTTP and WebSocket request
    is for, so that its per-client cap counts them."""

    def __init__(self, app: ASGIApp, *, ipv6_prefix: int) -> None:
        self.app = app
        self.ipv6_prefix = ipv6_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] not in ("http", "websocket") or not client:
            await self.app(scope, receive, send)
            return
        token = CLIENT.set(client_key(client[0], self.ipv6_prefix))
        try:
            await self.app(scope, receive, send)
        finally:
            CLIENT.reset(token)


def _with_id(answer: HotAnswer, request_id: str) -> HotAnswer:
    status, lines, body = answer
    return status, lines + b"x-request-id: %b\r\n" % request_id.encode("ascii"), body


class Tobira(FastAPI):
    """FastAPI for the pages; `/api/*` goes straight to the proxy and `/auth/request`, `/auth/forward` to
    forward authentication: tobira's hot paths. Every request first gets its id (`entry`, app.requestids)."""

    proxy: ASGIApp
    streaming: ASGIApp
    forward: ForwardAuthApp
    front: ForwardedHeaders  # X-Forwarded-* from trusted proxies only (app.forwarded), then `dispatch`
    entry: ASGIApp  # request ids (app.requestids), then tobira's path prefix (app.paths), then `route`
    under_path: UnderPath
    proxy_app: ProxyApp
    proxy_lines: bytes  # the security headers of the proxy's answers, as app.lanes writes them
    ipv6_prefix: int
    hot_handlers: dict[str, HotHandler]  # forward authentication's, by path without the prefix
    hot_body_limit: int  # app.lanes serves no hot request with a longer body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.entry(scope, receive, send)

    async def route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and route_path(scope) in FORWARD_PATHS:
            # Asked before every request to a protected app: it needs whether the proxy is trusted (noted
            # already by `entry`, the request ids), not the client's address, so it skips the rewriting.
            scope["app"] = self  # its refusals are pages, rendered as FastAPI's routes render them
            await self.forward(scope, receive, send)
        else:
            await self.front(scope, receive, send)

    def hot_path(self, scope: Scope) -> HotHandler | None:
        """For app.lanes: the handler of a request to the proxy (`hot_proxy`) or to forward authentication
        (`hot_forward`), with the prefix noted as `root_path` as `entry` would; None for any other path."""
        path: str = scope["path"]
        base = self.under_path.base_path
        if base:
            if not path.startswith(base + "/"):
                return None
            path = path[len(base) :]
        handler = self.hot_proxy if path.startswith("/api/") else self.hot_handlers.get(path)
        if handler is not None:
            scope["root_path"] = base
            scope["app"] = self  # as `route` does: forward authentication's refusals are pages
        return handler

    def _hot_request_id(self, scope: Scope) -> str:
        """What `entry` does first, for a hot request: note whether the peer is trusted, set its id."""
        self.front.note_peer(scope)
        request_id = new_request_id(scope["headers"], trusted=trusted_peer(scope))
        REQUEST_ID.set(request_id)
        return request_id

    async def hot_forward(self, scope: Scope, body: bytes, *, redirect: bool) -> HotAnswer:
        """Forward authentication's answer, with the request's id. (app.lanes runs each hot request in a
        task, so in a context of its own: no reset.)"""
        request_id = self._hot_request_id(scope)
        answer = await self.forward.hot(scope, redirect=redirect)
        return _with_id(answer, request_id)

    async def hot_proxy(self, scope: Scope, body: bytes) -> HotAnswer:
        """A proxied call, answered as `entry` would: the request's id, the client as a trusted proxy
        names it (for the resolver's per-client cap), the security headers."""
        request_id = self._hot_request_id(scope)
        if trusted_peer(scope):
            await self.front.believe(scope)
        if scope["client"]:
            CLIENT.set(client_key(scope["client"][0], self.ipv6_prefix))
        status, lines, answer = await self.proxy_app.hot(scope, body)
        return _with_id((status, lines + self.proxy_lines, answer), request_id)

    async def dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope) if scope["type"] in ("http", "websocket") else ""
        if scope["type"] == "http" and path.startswith("/api/"):
            await self.proxy(scope, receive, send)
        elif scope["type"] == "websocket" and path == "/streaming":
            await self.streaming(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

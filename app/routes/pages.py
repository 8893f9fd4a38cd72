"""Pages and small JSON routes: `/`, `/session`, `/signed-out`, `/button`, `/healthz`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.errors import InvalidInstance, SignedOut
from app.hosts import parse_instance
from app.routes.auth import current_session
from app.web import JSONResponse, ServicesDep, render_page

router = APIRouter()


@router.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/")
async def index(request: Request, services: ServicesDep) -> Response:
    session = await current_session(services, request)
    return render_page(request, "index.html", session=session)


@router.get("/session")
async def session_info(request: Request, services: ServicesDep) -> JSONResponse:
    session = await current_session(services, request)
    if session is None:
        raise SignedOut()
    return JSONResponse(session.public_json(), headers={"Cache-Control": "no-store"})


@router.get("/signed-out")
async def signed_out(
    request: Request,
    services: ServicesDep,
    host: Annotated[str | None, Query(max_length=300)] = None,
    revoked: Annotated[int, Query(ge=0, le=1)] = 1,
) -> Response:
    instance = None
    if host:
        try:
            instance = parse_instance(host, services.settings.dev_origins)
        except InvalidInstance:
            instance = None
    return render_page(request, "signed_out.html", instance=instance, revoked=bool(revoked))


@router.get("/button")
async def button(request: Request, services: ServicesDep) -> Response:
    return render_page(request, "button.html", public_origin=services.settings.public_origin)

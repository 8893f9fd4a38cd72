"""Pages and small JSON routes: `/`, `/session`, `/signed-out`, `/button`, `/healthz`, `/lookup`.

`/lookup` is the sign-in form's helper: what a server says about itself (name, icon, software), shown
while the person types. It goes through the same parser, allow/deny lists and discovery (and its cache)
as the sign-in itself, answers only tobira's own pages, and has a per-address limit of its own, looser
than the sign-in's because typing asks more often than submitting.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app import ratelimit
from app.csrf import is_same_origin
from app.errors import ErrorCode, Forbidden, InvalidInstance, SignedOut
from app.hosts import parse_instance
from app.routes.auth import allowed_instance, current_session
from app.web import JSONResponse, ServicesDep, render_page

router = APIRouter()
LOOKUP_LIMIT_FACTOR = 4  # lookups per minute per address, as a multiple of TOBIRA_LOGIN_RATE_LIMIT
# nodeinfo's software names (lower case) as their projects write them.
SOFTWARE_NAMES = {
    "misskey": "Misskey",
    "sharkey": "Sharkey",
    "cherrypick": "CherryPick",
    "firefish": "Firefish",
    "calckey": "Calckey",
    "iceshrimp": "Iceshrimp",
    "foundkey": "FoundKey",
    "meisskey": "Meisskey",
    "catodon": "Catodon",
    "magnetar": "Magnetar",
    "mitra": "Mitra",
}


@router.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/")
async def index(request: Request, services: ServicesDep) -> Response:
    session = await current_session(services, request)
    software = session.server.get("software") if session else None
    software_name = SOFTWARE_NAMES.get(software, software) if software else None
    return render_page(request, "index.html", session=session, software_name=software_name)


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


@router.get("/lookup")
async def lookup(
    request: Request,
    services: ServicesDep,
    instance: Annotated[str, Query(max_length=2048)] = "",
) -> JSONResponse:
    """`{"host", "name", "iconUrl", "software", "softwareName", "version", "miauth", "missingPermissions"}`
    for what was typed (`missingPermissions`: the requested permissions the server does not list); errors
    in Misskey's shape, their message in the page's language."""
    if not is_same_origin(request.headers, services.settings.public_origin):
        raise Forbidden("This request came from another site.", code=ErrorCode.CROSS_SITE_REQUEST)
    # The lookup makes tobira connect to hosts that strangers type, as a sign-in does.
    limit = services.settings.login_rate_limit * LOOKUP_LIMIT_FACTOR
    await ratelimit.limit(services, request, "lookup", limit)
    info = await services.discovery.lookup(allowed_instance(services, instance))
    software = info.software
    return JSONResponse(
        {
            "host": info.host,
            "name": info.name,
            "iconUrl": info.icon_url,
            "software": software,
            "softwareName": SOFTWARE_NAMES.get(software, software) if software else None,
            "version": info.software_version or info.version,
            "miauth": info.miauth,
            "missingPermissions": info.missing(services.settings.permissions),
        },
        headers={"Cache-Control": "private, max-age=60"},
    )

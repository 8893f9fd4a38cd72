"""Pages and small JSON routes: `/`, `/signed-out`, `/button`, `/healthz`, `/readyz`, `/lookup`.

`/lookup` is the sign-in form's helper: what a server says about itself (name, icon, software), shown
while the person types. It goes through the same parser, allow/deny lists and discovery (and its cache)
as the sign-in itself, answers only tobira's own pages, and has a per-client limit of its own, looser
than the sign-in's because typing asks more often than submitting.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app import ratelimit
from app.account import current_session
from app.answers import Health, ServerPreview
from app.errors import InvalidInstance, StoreUnavailable
from app.hosts import parse_instance
from app.oidc.handoff import consented_apps
from app.signin.flow import allowed_instance
from app.software import display_name
from app.web import JSONResponse, ServicesDep, render_page, require_same_origin

router = APIRouter()
LOOKUP_LIMIT_FACTOR = 4  # lookups per minute per client, as a multiple of TOBIRA_LOGIN_RATE_LIMIT


@router.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse(Health(status="ok").model_dump())


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    """Readiness: 200 when the store answers (and can write), 503 when it does not. Touches nothing else, so
    a load balancer takes a replica out only for what the replica itself cannot do."""
    try:
        await services.ledger.ping()
    except StoreUnavailable:
        return JSONResponse(Health(status="store unavailable").model_dump(), status_code=503)
    return JSONResponse(Health(status="ok").model_dump())


@router.get("/")
async def index(request: Request, services: ServicesDep) -> Response:
    session = await current_session(services, request.cookies)
    software = display_name(session.server.get("software")) if session else None
    apps = await consented_apps(services, session)
    return render_page(request, "index.html", session=session, software_name=software, apps=apps)


@router.get("/signed-out")
async def signed_out(request: Request, services: ServicesDep) -> Response:
    """What tobira recorded about this browser's sign-out (a signed cookie), never what the link says."""
    notice = services.notices.read(request.cookies.get(services.notices.name))
    instance = None
    if notice is not None:
        try:
            instance = parse_instance(notice.host, services.settings.dev_origins)
        except InvalidInstance:  # a dev origin the operator has since removed
            instance = None
    return render_page(
        request, "signed_out.html", instance=instance, revoked=notice is None or notice.revoked
    )


@router.get("/button")
async def button(request: Request, services: ServicesDep) -> Response:
    return render_page(request, "button.html", public_base=services.settings.public_base)


@router.get("/lookup")
async def lookup(
    request: Request,
    services: ServicesDep,
    instance: Annotated[str, Query(max_length=2048)] = "",
) -> JSONResponse:
    """What the typed server says about itself (`missingPermissions`: the requested permissions it does not
    list); errors in Misskey's shape, their message in the page's language."""
    require_same_origin(request, services)
    # The lookup makes tobira connect to hosts that strangers type, as a sign-in does.
    limit = services.settings.login_rate_limit * LOOKUP_LIMIT_FACTOR
    await ratelimit.limit(services, request, "lookup", limit)
    info = await services.discovery.lookup(allowed_instance(services.settings, instance))
    answer = ServerPreview.of(info, services.settings.permissions)
    return JSONResponse(answer.model_dump(by_alias=True), headers={"Cache-Control": "private, max-age=60"})

"""Forward authentication: `GET /auth/request` (nginx `auth_request`) and `GET /auth/forward` (Caddy
`forward_auth`, Traefik `forwardAuth`). Both answer 200 with the identity headers for a live sign-in the
access rules let through for the visited host, 403 for one they refuse; a person not signed in gets 401
from the first (with the sign-in URL in `Location`, for nginx's `error_page`) and a 302 to it from the
second. The logic is in `app.forward`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from app.account import current_session
from app.errors import AccessDenied, SignedOut
from app.forward import Verdict, decide, identity_headers, sign_in_url, visit
from app.forwarded import trusted_peer
from app.services import Services
from app.web import ServicesDep, error_response

router = APIRouter()
NO_STORE = {"Cache-Control": "no-store"}


@router.get("/auth/request")
async def auth_request(request: Request, services: ServicesDep) -> Response:
    return await answer(request, services, redirect=False)


@router.get("/auth/forward")
async def auth_forward(request: Request, services: ServicesDep) -> Response:
    return await answer(request, services, redirect=True)


async def answer(request: Request, services: Services, *, redirect: bool) -> Response:
    """The verdict on the visit the proxy describes, as the proxy expects it."""
    visited = visit(request.headers, trusted=trusted_peer(request.scope), original_first=not redirect)
    session = await current_session(services, request.cookies)
    verdict = decide(session, services.access, visited.host)
    if verdict is Verdict.PASS:
        assert session is not None
        return Response(status_code=200, headers={**NO_STORE, **identity_headers(session)})
    settings = services.settings
    signin = sign_in_url(settings.public_origin, visited.return_to(settings.cookie_domain))
    if verdict is Verdict.SIGNED_OUT and redirect:
        return RedirectResponse(signin, status_code=302, headers=NO_STORE)
    error = SignedOut() if verdict is Verdict.SIGNED_OUT else AccessDenied()
    response = error_response(request, error, sign_in_url=signin, host=visited.host)
    response.headers.update(NO_STORE)
    if verdict is Verdict.SIGNED_OUT:
        response.headers["Location"] = signin  # nginx: auth_request_set $signin $upstream_http_location
    return response

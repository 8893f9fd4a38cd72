"""Sign-in routes: `/login`, the three callbacks, `/forget-recent`, and `/client` (the OAuth 2.0 client_id).

Each translates HTTP to a call of the sign-in flow (`app.signin`) and back: the pending sign-ins travel in
the browser's encrypted cookie, a finished sign-in becomes tobira's session (`app.account`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from app import ratelimit, recent
from app.account import begin_session, current_session
from app.csrf import started_here
from app.errors import InstanceError, NoInstanceTyped, TobiraError
from app.metrics import METRICS
from app.oidc.handoff import answer_sign_in
from app.redirects import safe_return_to
from app.services import Services
from app.session import PENDING_TTL, PendingSignIn
from app.signin import oauth2
from app.signin.flow import CLIENT_PATH
from app.signin.methods import Identity, Method
from app.web import ServicesDep, delete_cookie, error_response, render_page, require_same_origin, set_cookie

router = APIRouter()
log = logging.getLogger("tobira")
CALLBACK_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


@router.get("/login")
async def login_form(
    request: Request,
    services: ServicesDep,
    instance: Annotated[str | None, Query(max_length=2048)] = None,
    return_to: str | None = None,
    rd: str | None = None,
) -> Response:
    """`rd` is `return_to` under the name other forward-auth gateways use for it."""
    return_to = return_to if return_to is not None else rd
    if instance and started_here(request.headers, services.settings.public_origin, method="GET"):
        return await start(request, services, instance, return_to)
    return login_page(request, instance or "", return_to)


@router.post("/login")
async def login_submit(
    request: Request,
    services: ServicesDep,
    instance: Annotated[str, Form(max_length=2048)] = "",
    return_to: Annotated[str | None, Form()] = None,
) -> Response:
    if not started_here(request.headers, services.settings.public_origin, method="POST"):
        return login_page(request, instance, return_to)
    if not instance.strip():
        return error_response(
            request, NoInstanceTyped(), instance_text="", return_to=return_target(services, return_to)
        )
    return await start(request, services, instance, return_to)


def return_target(services: Services, return_to: str | None) -> str:
    """Where the person goes after sign-in: `return_to` when safe (SPEC: on tobira, or the cookie domain)."""
    settings = services.settings
    return safe_return_to(return_to, settings.cookie_domain, settings.base_path)


def login_page(request: Request, instance_text: str, return_to: str | None) -> Response:
    """The sign-in form, filled in with what a link or another site's form named: the person continues with
    a click of their own (a sign-in another site starts is never carried out at once, see `started_here`)."""
    if instance_text:
        log.info("sign-in named by a link or another site: the form asks the person to continue")
    return render_page(
        request,
        "login.html",
        return_to=return_target(request.app.state.services, return_to),
        instance_text=instance_text,
        confirm=bool(instance_text),
    )


async def start(request: Request, services: Services, text: str, return_to: str | None) -> Response:
    """Everything between the form and the 303 to the server's consent page."""
    return_path = return_target(services, return_to)
    try:
        # Per client, so that nobody turns tobira into a scanner of other hosts.
        await ratelimit.limit(services, request, "login", services.settings.login_rate_limit)
        pending, location = await services.signin.start(text, return_path)
    except TobiraError as error:
        return error_response(request, error, instance_text=text[:300], return_to=return_path)
    cookies = services.cookies
    response = RedirectResponse(location, status_code=303, headers={"Cache-Control": "no-store"})
    value = cookies.start_pending(request.cookies.get(cookies.pending_name), pending)
    set_cookie(response, services, cookies.pending_name, value, PENDING_TTL)
    return response


@router.get("/callback")
async def callback(request: Request, services: ServicesDep, session: str | None = None) -> Response:
    return await finish(request, services, Method.MIAUTH, {"session": session})


@router.get("/callback/legacy")
async def legacy_callback(request: Request, services: ServicesDep, token: str | None = None) -> Response:
    return await finish(request, services, Method.LEGACY, {"token": token})


@router.get("/callback/oauth2")
async def oauth2_callback(
    request: Request,
    services: ServicesDep,
    state: Annotated[str | None, Query(max_length=128)] = None,
    code: Annotated[str | None, Query(max_length=2048)] = None,
    iss: Annotated[str | None, Query(max_length=2048)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
) -> Response:
    params = {"state": state, "code": code, "iss": iss, "error": error}
    return await finish(request, services, Method.OAUTH2, params)


async def finish(
    request: Request, services: Services, method: Method, query: dict[str, str | None]
) -> Response:
    """The common end of every method: the sign-in this browser started, checked once, becomes a session."""
    params = {name: value for name, value in query.items() if value is not None}
    cookies = services.cookies
    pending = cookies.read_pending(request.cookies.get(cookies.pending_name))
    try:
        match = services.signin.match(method, params, pending)
    except TobiraError as error:
        METRICS.sign_ins.labels(str(method), str(error.code)).inc()
        return callback_answer(error_response(request, error))
    rest = [item for item in pending if item is not match]
    try:
        identity = await services.signin.finish(match, params)
    except TobiraError as error:
        METRICS.sign_ins.labels(str(method), str(error.code)).inc()
        # The server failed after the person approved: the page asks them to sign in again.
        again = {"instance_text": match.host, "return_to": match.return_to}
        response = error_response(request, error, sign_in_again=isinstance(error, InstanceError), **again)
        return callback_answer(keep_pending(response, services, rest))
    try:
        location, value = await destination(services, match, identity, request.cookies)
    except TobiraError as error:
        METRICS.sign_ins.labels(str(method), str(error.code)).inc()
        return callback_answer(keep_pending(error_response(request, error), services, rest))
    METRICS.sign_ins.labels(str(method), "success").inc()
    response = RedirectResponse(location, status_code=303)
    if value is not None:
        set_cookie(response, services, cookies.session_name, value, services.settings.session_max_age)
    remember_server(request, response, services, match)
    return callback_answer(keep_pending(response, services, rest))


async def destination(
    services: Services, match: PendingSignIn, identity: Identity, cookies: Mapping[str, str]
) -> tuple[str, str | None]:
    """What a finished sign-in becomes: (where the browser goes, the new session cookie's value or None).
    tobira's own session, back to `return_to`; or, for an app's OpenID request, a code for the app."""
    previous = await current_session(services, cookies)
    if match.oidc:
        return await answer_sign_in(services, match, identity, previous)
    return match.return_to, await begin_session(services, identity, previous)


def callback_answer(response: Response) -> Response:
    """A callback's URL carries a one-shot secret: its answer is never cached or sent on as a Referer."""
    response.headers.update(CALLBACK_HEADERS)
    return response


def keep_pending(response: Response, services: Services, rest: list[PendingSignIn]) -> Response:
    """Write back the browser's other sign-ins under way (or none)."""
    cookies = services.cookies
    if rest:
        set_cookie(response, services, cookies.pending_name, cookies.write_pending(rest), PENDING_TTL)
    else:
        delete_cookie(response, services, cookies.pending_name)
    return response


def remember_server(
    request: Request, response: Response, services: Services, signed_in: PendingSignIn
) -> None:
    """Put the server just signed in with first in the browser's recent list (`app.recent`)."""
    name, dev_origins = services.cookies.recent_name, services.settings.dev_origins
    servers = recent.remember(request.cookies.get(name), signed_in.host, dev_origins)
    set_cookie(response, services, name, servers, recent.MAX_AGE)


@router.post("/forget-recent")
async def forget_recent(
    request: Request, services: ServicesDep, return_to: Annotated[str | None, Form()] = None
) -> Response:
    """The form's "Forget these": this browser's list of recent servers is dropped."""
    require_same_origin(request, services)
    location = (
        services.settings.base_path + "/login?" + urlencode({"return_to": return_target(services, return_to)})
    )
    response = RedirectResponse(location, status_code=303)
    delete_cookie(response, services, services.cookies.recent_name)
    return response


@router.get(CLIENT_PATH)
async def client_document(request: Request, services: ServicesDep) -> Response:
    """The client_id document: JSON client metadata when asked for JSON only, else HTML with an h-app."""
    settings, method = services.settings, services.signin.oauth2
    logo = settings.app_icon or settings.public_base + "/static/tobira.svg"
    headers = {"Link": f'<{method.redirect_uri}>; rel="redirect_uri"', "Vary": "Accept"}
    accept = request.headers.get("accept", "")
    about = {"name": settings.app_name, "logo": logo, "redirect_uri": method.redirect_uri}
    if "application/json" in accept and "text/html" not in accept:
        return JSONResponse(oauth2.client_metadata(method.client_id, **about), headers=headers)
    return HTMLResponse(oauth2.client_document(method.client_id, **about), headers=headers)

"""The OpenID provider's routes: discovery, JWKS, authorize (and its page's forms), token, userinfo, logout,
and withdrawing an app's consent. Each translates HTTP to a call of `app.oidc` and back.

Errors before the client and its redirect URI are known are tobira's pages, never redirects; errors after
go back to the app (`error`, `state`, `iss`); the token and userinfo endpoints answer RFC 6749/6750 JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from app import i18n, ratelimit
from app.account import current_session, end_session, revoke
from app.clients import client_key
from app.errors import InvalidRequest, OAuthError, StoreUnavailable, TemporarilyUnavailable, TobiraError
from app.notices import SignOut
from app.oidc.claims import subject
from app.oidc.handoff import provider_of, session_account, start_sign_in, waiting_request
from app.oidc.keys import SigningKeysUnavailable
from app.oidc.provider import AuthorizationRequest, Decision
from app.services import Services
from app.session import PENDING_TTL, Session
from app.web import (
    JSONResponse,
    ServicesDep,
    content_security_policy,
    delete_cookie,
    error_response,
    render_page,
    request_localizer,
    require_same_origin,
    set_cookie,
)

# Described by the discovery document, as OpenID Connect has it, not by tobira's OpenAPI document: their
# answers are the RFCs' shapes (redirects to the app, RFC 6749 JSON), not tobira's Misskey-shaped errors.
router = APIRouter(include_in_schema=False)
log = logging.getLogger("tobira")
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
PUBLIC = {"Access-Control-Allow-Origin": "*"}


def single(items: Iterable[tuple[str, str]]) -> tuple[dict[str, str], list[str]]:
    """The parameters, and the names given more than once (RFC 6749 3.1: each at most once)."""
    params: dict[str, str] = {}
    repeated = set()
    for name, value in items:
        if name in params:
            repeated.add(name)
        params[name] = value
    return params, sorted(repeated)


async def request_params(request: Request) -> tuple[dict[str, str], list[str]]:
    """The parameters of a GET's query or a form POST (OpenID Connect Core 3.1.2.1 allows both), with the
    names given more than once."""
    items = request.query_params.multi_items()
    if request.method == "POST":
        items = [(k, v) for k, v in (await request.form()).multi_items() if isinstance(v, str)]
    return single(items)


def oauth_error(error: OAuthError) -> JSONResponse:
    headers = dict(NO_STORE)
    if error.error == "invalid_client":
        headers["WWW-Authenticate"] = 'Basic realm="tobira"'
    elif error.error == "invalid_token":
        headers["WWW-Authenticate"] = f'Bearer error="invalid_token", error_description="{error.description}"'
    return JSONResponse(error.as_json(), status_code=error.status, headers={**headers, **PUBLIC})


@router.get("/.well-known/openid-configuration")
async def discovery(services: ServicesDep) -> JSONResponse:
    headers = {"Cache-Control": "public, max-age=3600", **PUBLIC}
    return JSONResponse(provider_of(services).metadata(), headers=headers)


@router.get("/oidc/jwks")
async def jwks(services: ServicesDep) -> Response:
    try:
        keys = await provider_of(services).keys.public_jwks()
    except SigningKeysUnavailable:
        return oauth_error(TemporarilyUnavailable("the signing keys are not available"))
    except StoreUnavailable:
        return oauth_error(TemporarilyUnavailable("the store does not answer"))
    headers = {"Cache-Control": "public, max-age=300", **PUBLIC}
    return JSONResponse(keys, headers=headers, media_type="application/jwk-set+json")


@router.api_route("/oidc/authorize", methods=["GET", "POST"])
async def authorize(request: Request, services: ServicesDep) -> Response:
    """An app's authorization request (OpenID Connect Core 3.1.2.1: GET or a form POST)."""
    provider = provider_of(services)
    params, repeated = await request_params(request)
    try:
        client, redirect_uri = provider.client_and_redirect(params, repeated)
    except TobiraError as error:
        log.warning("authorization request refused before any redirect: %s", error.code)
        return error_response(request, error)
    try:
        checked = provider.check_request(client, redirect_uri, params, repeated)
    except OAuthError as error:
        location = provider.error_location(redirect_uri, error, params.get("state"))
        return RedirectResponse(location, status_code=303, headers=NO_STORE)
    session = await current_session(services, request.cookies)
    decision = await provider.decide(checked, session_account(session))
    if decision.location is not None:
        return RedirectResponse(decision.location, status_code=303, headers=NO_STORE)
    try:  # a request kept for its page is state a stranger causes: counted per client, like sign-ins
        await ratelimit.limit(services, request, "authorize", services.settings.login_rate_limit)
    except TobiraError as error:
        return error_response(request, error)
    await provider.keep_request(checked)
    # The page has an address of its own: a reload or a language switch finds the same request again.
    page = f"{services.settings.base_path}/oidc/authorize/page?authorization={checked.id}"
    lang = page_language(params)
    return RedirectResponse(page + (f"&lang={lang}" if lang else ""), status_code=303)


def page_language(params: dict[str, str]) -> str | None:
    """The first of the app's `ui_locales` (or a `lang`) that tobira speaks, for its page."""
    wanted = [params.get("lang", ""), *params.get("ui_locales", "").split()]
    return next((tag for tag in map(i18n.match_language, wanted) if tag), None)


@router.get("/oidc/authorize/page")
async def authorize_page(request: Request, services: ServicesDep, authorization: str = "") -> Response:
    try:
        checked = await waiting_request(services, authorization)
    except TobiraError as error:
        return error_response(request, error)
    return await authorize_answer(request, services, checked, Decision(continue_as=True))


async def authorize_answer(
    request: Request, services: Services, checked: AuthorizationRequest, decision: Decision
) -> Response:
    """tobira's page naming the app (offering to continue as the signed-in account, where allowed)."""
    client = provider_of(services).client(checked)
    session = await current_session(services, request.cookies) if decision.continue_as else None
    hinted = (checked.login_hint or "").removeprefix("@").rpartition("@")[2]
    localizer = request_localizer(request)
    response = render_page(
        request,
        "authorize.html",
        client=client,
        app_origin=client.origin_of(checked.redirect_uri),
        app_permissions=[localizer.permission(name) for name in client.permissions],
        authorization=checked,
        account=session,
        instance_text=hinted,
    )
    sources = " ".join(["https:", *services.settings.dev_instances])
    response.headers["Content-Security-Policy"] = content_security_policy(
        sources, client.origin_of(checked.redirect_uri)
    )
    response.headers.update(NO_STORE)
    return response


@router.post("/oidc/authorize/continue")
async def authorize_continue(
    request: Request, services: ServicesDep, authorization: Annotated[str, Form(max_length=64)] = ""
) -> Response:
    """ "Continue as @alice@host": a code at once where the session answers the request, else a new sign-in
    at the session's server."""
    require_same_origin(request, services)
    provider = provider_of(services)
    try:
        checked = await waiting_request(services, authorization)
    except TobiraError as error:
        return error_response(request, error)
    session = await current_session(services, request.cookies)
    account = session_account(session)
    if session is None or account is None:
        return await authorize_answer(request, services, checked, Decision())
    if provider.session_fits(checked, account):
        location = await provider.issue_code(checked, account)
        return RedirectResponse(location, status_code=303, headers=NO_STORE)
    return await begin(request, services, checked, session.host)


@router.post("/oidc/authorize/login")
async def authorize_login(
    request: Request,
    services: ServicesDep,
    authorization: Annotated[str, Form(max_length=64)] = "",
    instance: Annotated[str, Form(max_length=2048)] = "",
) -> Response:
    """The page's form: a sign-in at the server the person typed, answering the app's request."""
    require_same_origin(request, services)
    try:
        checked = await waiting_request(services, authorization)
    except TobiraError as error:
        return error_response(request, error)
    return await begin(request, services, checked, instance)


async def begin(request: Request, services: Services, checked: AuthorizationRequest, text: str) -> Response:
    try:
        pending, location = await start_sign_in(services, checked, text)
    except TobiraError as error:
        return error_response(request, error, instance_text=text[:300])
    cookies = services.cookies
    response = RedirectResponse(location, status_code=303, headers={"Cache-Control": "no-store"})
    value = cookies.start_pending(request.cookies.get(cookies.pending_name), pending)
    set_cookie(response, services, cookies.pending_name, value, PENDING_TTL)
    return response


@router.post("/oidc/authorize/cancel")
async def authorize_cancel(
    request: Request, services: ServicesDep, authorization: Annotated[str, Form(max_length=64)] = ""
) -> Response:
    """The person declines: the app hears `access_denied` (with its state)."""
    require_same_origin(request, services)
    provider = provider_of(services)
    try:
        checked = await waiting_request(services, authorization)
    except TobiraError as error:
        return error_response(request, error)
    location = await provider.decline(checked)
    return RedirectResponse(location, status_code=303, headers=NO_STORE)


@router.options("/oidc/token")
@router.options("/oidc/userinfo")
async def preflight() -> Response:
    """CORS preflight for browser apps (public clients): no cookies are involved, any origin may ask."""
    headers = {
        **PUBLIC,
        "Access-Control-Allow-Methods": "GET, POST",
        "Access-Control-Allow-Headers": "Authorization, Content-Type",
        "Access-Control-Max-Age": "600",
    }
    return Response(status_code=204, headers=headers)


@router.post("/oidc/token")
async def token(request: Request, services: ServicesDep) -> Response:
    provider = provider_of(services)
    address = client_key(
        request.client.host if request.client else None, services.settings.rate_limit_ipv6_prefix
    )
    try:
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            raise InvalidRequest("the body must be application/x-www-form-urlencoded")
        form, repeated = single((k, v) for k, v in (await request.form()).multi_items() if isinstance(v, str))
        if repeated:
            raise InvalidRequest(f"repeated parameter: {', '.join(repeated)}")
        answer = await provider.exchange(form, request.headers.get("authorization"), address)
    except OAuthError as error:
        log.info("token request refused: %s (%s)", error.error, error.description)
        return oauth_error(error)
    except SigningKeysUnavailable:
        return oauth_error(TemporarilyUnavailable("the signing keys are not available"))
    except StoreUnavailable:
        return oauth_error(TemporarilyUnavailable("the store does not answer"))
    return JSONResponse(answer, headers={**NO_STORE, **PUBLIC})


@router.api_route("/oidc/userinfo", methods=["GET", "POST"])
async def userinfo(request: Request, services: ServicesDep) -> Response:
    try:
        claims = await provider_of(services).userinfo(request.headers.get("authorization"))
    except OAuthError as error:
        return oauth_error(error)
    except StoreUnavailable:
        return oauth_error(TemporarilyUnavailable("the store does not answer"))
    return JSONResponse(claims, headers={**NO_STORE, **PUBLIC})


@router.api_route("/oidc/logout", methods=["GET", "POST"])
async def logout(request: Request, services: ServicesDep) -> Response:
    """RP-initiated logout: at once with a hint naming the signed-in account, else once they confirm."""
    provider = provider_of(services)
    params, _ = await request_params(request)
    try:
        sub, target = await provider.logout_target(params)
    except TobiraError as error:
        return error_response(request, error)
    session = await current_session(services, request.cookies)
    confirmed = request.method == "POST" and params.get("confirm") == "yes"
    if confirmed:
        require_same_origin(request, services)
    own = session is not None and sub == subject(session.host, str(session.user.get("id")))
    if session is not None and not (own or confirmed):
        kept = {name: params[name] for name in LOGOUT_PARAMETERS if name in params}
        return render_page(request, "oidc_logout.html", account=session, params=kept)
    return await sign_out(services, session, target or services.settings.base_path + "/signed-out")


async def sign_out(services: Services, session: Session | None, location: str) -> Response:
    """End the session as `POST /logout` does (the token revoked, a notice for `/signed-out`), then go on."""
    response = RedirectResponse(location, status_code=303, headers=NO_STORE)
    if session is not None:
        await end_session(services, session)
        revoked = await revoke(services, session)
        notices = services.notices
        notice = notices.issue(SignOut(session.host, revoked))
        set_cookie(response, services, notices.name, notice, notices.max_age)
        log.info("signed out of %s by an app (token revoked: %s)", session.host, revoked)
    delete_cookie(response, services, services.cookies.session_name)
    return response


LOGOUT_PARAMETERS = ("id_token_hint", "post_logout_redirect_uri", "state", "client_id")


@router.post("/oidc/consents/withdraw")
async def withdraw_consent(
    request: Request, services: ServicesDep, client_id: Annotated[str, Form(max_length=255)] = ""
) -> Response:
    """The person withdraws their agreement to an app: its next sign-in asks again."""
    require_same_origin(request, services)
    session = await current_session(services, request.cookies)
    if session is not None:
        await provider_of(services).withdraw(subject(session.host, str(session.user.get("id"))), client_id)
    return RedirectResponse(services.settings.base_path + "/", status_code=303)

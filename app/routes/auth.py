"""Sign-in and sign-out: `/login`, `/callback`, `/callback/legacy`, `/callback/oauth2`, `/client`, `/logout`.

form → host parser → discovery → the first allowed method the server supports (OAuth 2.0 where enabled and
advertised, MiAuth, else the legacy app flow) → a session bound to this browser → 303 to the instance;
callback → the browser's own sign-in → `/check` (or `userkey`, or the code exchange) once → session cookie →
303 to `return_to`. `/client` is tobira's OAuth 2.0 client_id document.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from app import legacy, miauth, oauth2, ratelimit, recent
from app.csrf import is_same_origin, started_here
from app.errors import (
    BadRequest,
    ErrorCode,
    Forbidden,
    InstanceError,
    InstanceNotAllowed,
    MiAuthUnsupported,
    TobiraError,
)
from app.hosts import Instance, host_matches, parse_instance
from app.miauth import Approval
from app.notices import MAX_AGE, SignOut
from app.redirects import safe_return_to
from app.services import Services
from app.session import PENDING_TTL, PendingSignIn, Session
from app.web import ServicesDep, error_response, render_page

router = APIRouter()
log = logging.getLogger("tobira")
NO_STORE = {"Cache-Control": "no-store"}
CALLBACK_HEADERS = {**NO_STORE, "Referrer-Policy": "no-referrer"}
LEGACY_CALLBACK = "/callback/legacy"  # no query string: the server appends `?token=` by concatenation
OAUTH2_CALLBACK = "/callback/oauth2"
CLIENT_PATH = "/client"  # tobira's OAuth 2.0 client_id is this URL
APP_DESCRIPTION = "Sign in with your Misskey account."


def set_cookie(response: Response, services: Services, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path="/", secure=services.cookies.secure, httponly=True, samesite="lax"
    )


def delete_cookie(response: Response, services: Services, name: str) -> None:
    response.delete_cookie(name, path="/", secure=services.cookies.secure, httponly=True, samesite="lax")


def allowed_instance(services: Services, text: str) -> Instance:
    """Parse what the person typed and apply the operator's allow and deny lists."""
    settings = services.settings
    instance = parse_instance(text, settings.dev_origins)
    if instance.dev:
        return instance
    if host_matches(instance.host, settings.instances_deny) or (
        settings.instances_allow and not host_matches(instance.host, settings.instances_allow)
    ):
        raise InstanceNotAllowed()
    return instance


async def start_sign_in(request: Request, services: Services, text: str, return_to: str | None) -> Response:
    """Everything between the form and the 303 to the instance's consent page."""
    settings = services.settings
    return_path = safe_return_to(return_to)
    try:
        # Per address, so that nobody turns tobira into a scanner of other hosts.
        await ratelimit.limit(services, request, "login", settings.login_rate_limit)
        instance = allowed_instance(services, text)
        info = await services.discovery.lookup(instance)
        # Asked only where the operator allows OAuth 2.0: everyone else's sign-in costs no extra request.
        meta = await oauth2.metadata(services.client, instance) if "oauth2" in settings.auth_methods else None
        method = choose_method(
            settings.auth_methods, miauth_supported=info.miauth, oauth2_supported=meta is not None
        )
        if method == "oauth2" and meta is not None:
            session_id, location = await _start_oauth2(services, meta)
        elif method == "legacy":
            secret = await _app_secret(services, instance)
            session_id, location = await legacy.generate(services.client, instance, secret)
        else:
            session_id = miauth.new_session_id()
            location = miauth.authorize_url(
                instance,
                session_id,
                name=settings.app_name,
                icon=settings.app_icon,
                callback=settings.callback_url,
                permissions=settings.permissions,
            )
    except TobiraError as error:
        return error_response(request, error, instance_text=text[:300], return_to=return_path)
    cookies = services.cookies
    pending = cookies.new_pending(instance, session_id, return_path, method)
    response = RedirectResponse(location, status_code=303, headers=NO_STORE)
    value = cookies.start_pending(request.cookies.get(cookies.pending_name), pending)
    set_cookie(response, services, cookies.pending_name, value, PENDING_TTL)
    log.info("sign-in started with %s", instance.host)
    return response


def choose_method(allowed: list[str], *, miauth_supported: bool, oauth2_supported: bool = False) -> str:
    """The first allowed method the server supports: OAuth 2.0 where it advertises it, MiAuth where it has
    it, the legacy flow where not. Raises MiAuthUnsupported when nothing fits.
    """
    for method in allowed:
        if method == "oauth2" and oauth2_supported:
            return method
        if method == "miauth" and miauth_supported:
            return method
        if method == "legacy" and not miauth_supported:
            return method
    raise MiAuthUnsupported()


def _oauth2_client(services: Services) -> tuple[str, str]:
    """(client_id, redirect_uri): tobira's client document URL and its OAuth 2.0 callback."""
    origin = services.settings.public_origin
    return origin + CLIENT_PATH, origin + OAUTH2_CALLBACK


async def _start_oauth2(services: Services, meta: oauth2.OAuthMetadata) -> tuple[str, str]:
    """A new `state` (a uuid4, bound to the browser like a MiAuth session) and the consent URL.

    The PKCE verifier and the expected issuer wait in the store under the state until the callback.
    """
    state, verifier = miauth.new_session_id(), oauth2.new_verifier()
    record = oauth2.pending_record(verifier=verifier, issuer=meta.issuer, token_endpoint=meta.token_endpoint)
    await services.store.put(f"oauth2:{state}", record, PENDING_TTL)
    client_id, redirect_uri = _oauth2_client(services)
    location = oauth2.authorize_url(
        meta,
        client_id=client_id,
        redirect_uri=redirect_uri,
        scopes=services.settings.permissions,
        state=state,
        code_challenge=oauth2.challenge(verifier),
    )
    return state, location


async def _app_secret(services: Services, instance: Instance) -> str:
    settings = services.settings
    return await legacy.app_secret(
        services.client,
        services.store,
        instance,
        name=settings.app_name,
        description=APP_DESCRIPTION,
        permissions=settings.permissions,
        callback=settings.public_origin + LEGACY_CALLBACK,
    )


@router.get("/login")
async def login_form(
    request: Request,
    services: ServicesDep,
    instance: Annotated[str | None, Query(max_length=2048)] = None,
    return_to: str | None = None,
) -> Response:
    if instance and started_here(request.headers, services.settings.public_origin, method="GET"):
        return await start_sign_in(request, services, instance, return_to)
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
        error = BadRequest(
            "Type the server you use, for example misskey.io.", code=ErrorCode.INVALID_INSTANCE
        )
        return error_response(request, error, instance_text="", return_to=safe_return_to(return_to))
    return await start_sign_in(request, services, instance, return_to)


def login_page(request: Request, instance_text: str, return_to: str | None) -> Response:
    """The sign-in form, filled in with what a link or another site's form named: the person continues with
    a click of their own (a sign-in another site starts is never carried out at once, see `started_here`)."""
    if instance_text:
        log.info("sign-in named by a link or another site: the form asks the person to continue")
    return render_page(
        request,
        "login.html",
        return_to=safe_return_to(return_to),
        instance_text=instance_text,
        confirm=bool(instance_text),
    )


@router.post("/forget-recent")
async def forget_recent(
    request: Request, services: ServicesDep, return_to: Annotated[str | None, Form()] = None
) -> Response:
    """The form's "Forget these": this browser's list of recent servers is dropped."""
    if not is_same_origin(request.headers, services.settings.public_origin):
        raise Forbidden("This request came from another site.", code=ErrorCode.CROSS_SITE_REQUEST)
    response = RedirectResponse(
        "/login?" + urlencode({"return_to": safe_return_to(return_to)}), status_code=303
    )
    delete_cookie(response, services, services.cookies.recent_name)
    return response


async def end_session(services: Services, session: Session) -> None:
    """Remember the session as ended until it would have expired, on every replica."""
    ttl = max(1.0, session.expires_at - services.clock())
    services.streams.close(session.sid)  # the instance keeps a revoked token's streams open
    await services.store.claim(f"ended:{session.sid}", ttl)


async def current_session(services: Services, request: Request) -> Session | None:
    """The browser's session, unless it is absent, forged, expired or ended by a logout."""
    session = services.cookies.read(request.cookies.get(services.cookies.session_name))
    if session is None or await services.store.exists(f"ended:{session.sid}"):
        return None
    return session


@router.get("/callback")
async def callback(request: Request, services: ServicesDep, session: str | None = None) -> Response:
    valid = session is not None and miauth.is_session_id(session)

    async def check(match: PendingSignIn) -> tuple[Approval | None, str]:
        approval = await miauth.check(services.client, match.instance, match.session)
        return approval, approval.token if approval else ""

    response = await finish_sign_in(request, services, session if valid else None, "miauth", check)
    response.headers.update(CALLBACK_HEADERS)
    return response


@router.get(LEGACY_CALLBACK)
async def legacy_callback(request: Request, services: ServicesDep, token: str | None = None) -> Response:
    valid = token is not None and legacy.is_session_token(token)

    async def check(match: PendingSignIn) -> tuple[Approval | None, str]:
        secret = await _app_secret(services, match.instance)
        approval = await legacy.userkey(services.client, match.instance, secret, match.session)
        return approval, legacy.api_key(approval.token, secret) if approval else ""

    response = await finish_sign_in(request, services, token if valid else None, "legacy", check)
    response.headers.update(CALLBACK_HEADERS)
    return response


@router.get(OAUTH2_CALLBACK)
async def oauth2_callback(
    request: Request,
    services: ServicesDep,
    state: Annotated[str | None, Query(max_length=128)] = None,
    code: Annotated[str | None, Query(max_length=2048)] = None,
    iss: Annotated[str | None, Query(max_length=2048)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
) -> Response:
    valid = state is not None and miauth.is_session_id(state) and bool(code or error)

    async def check(match: PendingSignIn) -> tuple[Approval | None, str]:
        key = f"oauth2:{match.session}"
        record = oauth2.read_pending_record(await services.store.get(key))
        await services.store.delete(key)
        if record is None:
            raise BadRequest(
                "This sign-in has expired or is already finished. Please sign in again.",
                code=ErrorCode.NO_SIGN_IN_PENDING,
            )
        if error or not code:  # denied (or failed) on the server: nothing to exchange
            return None, ""
        verifier, issuer, token_endpoint = record
        if iss != issuer:
            # Mix-up defence: a code from another server must never reach this server's token endpoint.
            log.warning("OAuth 2.0 callback from an unexpected issuer")
            raise Forbidden(
                "This sign-in was not started in this browser. Please sign in again from here.",
                code=ErrorCode.SIGN_IN_MISMATCH,
            )
        client_id, redirect_uri = _oauth2_client(services)
        approval = await oauth2.exchange(
            services.client,
            match.instance,
            token_endpoint,
            code=code,
            verifier=verifier,
            client_id=client_id,
            redirect_uri=redirect_uri,
        )
        return approval, approval.token if approval else ""

    response = await finish_sign_in(request, services, state if valid else None, "oauth2", check)
    response.headers.update(CALLBACK_HEADERS)
    return response


@router.get(CLIENT_PATH)
async def client_document(request: Request, services: ServicesDep) -> Response:
    """The client_id document: JSON client metadata when asked for JSON only, else HTML with an h-app."""
    settings = services.settings
    client_id, redirect_uri = _oauth2_client(services)
    logo = settings.app_icon or settings.public_origin + "/static/tobira.svg"
    headers = {"Link": f'<{redirect_uri}>; rel="redirect_uri"', "Vary": "Accept"}
    accept = request.headers.get("accept", "")
    about = {"name": settings.app_name, "logo": logo, "redirect_uri": redirect_uri}
    if "application/json" in accept and "text/html" not in accept:
        return JSONResponse(oauth2.client_metadata(client_id, **about), headers=headers)
    return HTMLResponse(oauth2.client_document(client_id, **about), headers=headers)


Check = Callable[[PendingSignIn], Awaitable[tuple[Approval | None, str]]]


async def finish_sign_in(
    request: Request, services: Services, session_id: str | None, method: str, check: Check
) -> Response:
    """The common end of every method: `session_id` (None when malformed) must be one this browser
    started with `method`; `check` asks the server once and gives the approval and the API key to keep.
    """
    cookies = services.cookies
    pending = cookies.read_pending(request.cookies.get(cookies.pending_name))
    if not session_id:
        return error_response(
            request, BadRequest("The sign-in link is incomplete.", code=ErrorCode.INVALID_CALLBACK)
        )
    if not pending:
        return error_response(
            request,
            BadRequest(
                "This sign-in has expired or is already finished. Please sign in again.",
                code=ErrorCode.NO_SIGN_IN_PENDING,
            ),
        )
    match = next((item for item in pending if item.session == session_id and item.method == method), None)
    if match is None:
        # Login CSRF: someone else's approved session pasted into this browser. Never call /check.
        log.warning("callback for a sign-in this browser did not start")
        return error_response(
            request,
            Forbidden(
                "This sign-in was not started in this browser. Please sign in again from here.",
                code=ErrorCode.SIGN_IN_MISMATCH,
            ),
        )
    rest = [item for item in pending if item is not match]
    instance = match.instance
    retry = {"instance_text": instance.host, "return_to": match.return_to}
    try:
        if not await services.store.claim(f"check:{instance.origin}:{session_id}", PENDING_TTL):
            raise BadRequest("This sign-in is already finished.", code=ErrorCode.NO_SIGN_IN_PENDING)
        approval, api_key = await check(match)
        if approval is None:
            raise Forbidden(
                "The sign-in was not approved on your server. You can start again.",
                code=ErrorCode.SIGN_IN_NOT_APPROVED,
            )
        info = await services.discovery.lookup(instance)
    except TobiraError as error:
        # The server failed after the person approved: the page asks them to sign in again.
        response = error_response(request, error, sign_in_again=isinstance(error, InstanceError), **retry)
        _keep_pending(response, services, rest)
        return response
    previous = await current_session(services, request)
    if previous is not None:
        await end_session(services, previous)
    server = {"software": info.software, "version": info.software_version or info.version, "name": info.name}
    session, value = cookies.issue(instance, token=api_key, user=approval.user, method=method, server=server)
    if not services.settings.permissions:
        # Identity-only: the token is no longer needed once the user is known; a refusal changes nothing.
        revoked = await revoke(services, session)
        log.info("identity-only sign-in: token revoked: %s", revoked)
    response = RedirectResponse(match.return_to, status_code=303)
    set_cookie(response, services, cookies.session_name, value, services.settings.session_max_age)
    servers = recent.remember(
        request.cookies.get(cookies.recent_name), instance.host, services.settings.dev_origins
    )
    set_cookie(response, services, cookies.recent_name, servers, recent.MAX_AGE)
    _keep_pending(response, services, rest)
    log.info("signed in with %s", instance.host)
    return response


def _keep_pending(response: Response, services: Services, rest: list[PendingSignIn]) -> None:
    cookies = services.cookies
    if rest:
        set_cookie(response, services, cookies.pending_name, cookies.write_pending(rest), PENDING_TTL)
    else:
        delete_cookie(response, services, cookies.pending_name)


async def revoke(services: Services, session: Session) -> bool:
    """Ask the instance to revoke the token; False when it refuses or fails (it often does)."""
    try:
        answer = await services.client.post(
            session.instance.url("/api/i/revoke-token"), json={"i": session.token, "token": session.token}
        )
    except InstanceError:
        return False
    return answer.status_code in (200, 204)


@router.post("/logout")
async def logout(request: Request, services: ServicesDep) -> Response:
    if not is_same_origin(request.headers, services.settings.public_origin):
        raise Forbidden("This request came from another site.", code=ErrorCode.CROSS_SITE_REQUEST)
    session = await current_session(services, request)
    response = RedirectResponse("/signed-out", status_code=303)
    if session is not None:
        await end_session(services, session)
        revoked = await revoke(services, session)
        notices = services.notices
        set_cookie(response, services, notices.name, notices.issue(SignOut(session.host, revoked)), MAX_AGE)
        log.info("signed out of %s (token revoked: %s)", session.host, revoked)
    delete_cookie(response, services, services.cookies.session_name)
    return response

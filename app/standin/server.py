"""The stand-in's web application: nodeinfo, the MiAuth consent pages, `/api/…`, Settings › Apps and a few
pictures.

A Starlette app built fresh by `create_standin_app(config)`; its memory is `app.state.standin`. The MiAuth
pages and `/api/miauth/{session}/check` exist only while `config.miauth` is true, as on a real server; while
it is false the legacy app flow's consent page `/auth/{token}` does instead (`app.standin.legacy`).
"""

from __future__ import annotations

import base64

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute

from app.standin import apps, entities, legacy, oauth2
from app.standin.api import ALLOWED_METHODS, handle_api, handle_check
from app.standin.config import StandinConfig
from app.standin.consent import (
    account_page,
    approval_problem,
    callback_problem,
    callback_with_session,
    consent_page,
    notice_page,
    requested_permissions,
)
from app.standin.responses import encode_json
from app.standin.state import ConsentView, StandinState
from app.standin.streaming import handle_streaming

# A 1x1 PNG in Misskey green: every avatar and the server icon.
PICTURE = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGNo28wAAAL8ATr/ltsgAAAAAElFTkSuQmCC"
)
NODEINFO_PROFILE = 'application/json; profile="http://nodeinfo.diaspora.software/ns/schema/{}#"'
WELL_KNOWN_HEADERS = {
    "Access-Control-Allow-Headers": "Accept",
    "Access-Control-Allow-Methods": "GET, OPTIONS",
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Vary",
}


def create_standin_app(config: StandinConfig) -> Starlette:
    """A new stand-in Misskey server with empty memory."""
    routes = [
        Route("/.well-known/nodeinfo", _well_known_nodeinfo, methods=["GET"]),
        Route("/nodeinfo/2.0", _nodeinfo, methods=["GET"]),
        Route("/nodeinfo/2.1", _nodeinfo, methods=["GET"]),
        Route("/avatar/{user_id}", _picture, methods=["GET"]),
        Route(entities.ICON_PATH, _picture, methods=["GET"]),
        Route("/files/{file_id}", _drive_file, methods=["GET"]),
        WebSocketRoute("/streaming", handle_streaming),
        Route(apps.PATH, apps.apps_page, methods=["GET"]),
        Route(apps.PATH + "/{token_id}/revoke", apps.revoke, methods=["POST"]),
    ]
    if config.miauth:
        routes += [
            Route("/miauth/{session}", _consent, methods=["GET"]),
            Route("/miauth/{session}/accept", _accept, methods=["POST"]),
            Route("/miauth/{session}/deny", _deny, methods=["POST"]),
            Route("/api/miauth/{session}/check", handle_check, methods=["POST"]),
        ]
    else:  # an old server: the legacy app flow's consent page (its API endpoints are in `api`)
        routes += [
            Route("/auth/{token}", _legacy_consent, methods=["GET"]),
            Route("/auth/{token}/accept", _legacy_accept, methods=["POST"]),
            Route("/auth/{token}/deny", _deny, methods=["POST"]),
        ]
    if config.oauth2:
        routes += [
            Route("/.well-known/oauth-authorization-server", oauth2.metadata, methods=["GET"]),
            Route("/oauth/authorize", oauth2.authorize, methods=["GET"]),
            Route("/oauth/decision", oauth2.decision, methods=["POST"]),
            Route("/oauth/token", oauth2.token, methods=["POST"]),
        ]
    routes.append(Route("/api/{endpoint:path}", handle_api, methods=ALLOWED_METHODS))
    app = Starlette(routes=routes)
    app.state.standin = StandinState(config)
    return app


def _state(request: Request) -> StandinState:
    state: StandinState = request.app.state.standin
    return state


async def _well_known_nodeinfo(request: Request) -> Response:
    config = _state(request).config
    if not config.federation:
        return Response(status_code=403, headers=WELL_KNOWN_HEADERS)
    return _json(entities.nodeinfo_links(config), "application/json; charset=utf-8", WELL_KNOWN_HEADERS)


async def _nodeinfo(request: Request) -> Response:
    state = _state(request)
    version = request.url.path.rsplit("/", 1)[-1]
    document = entities.nodeinfo(state.config, version, len(state.users), len(state.notes))
    return _json(
        document,
        NODEINFO_PROFILE.format(version),
        {**WELL_KNOWN_HEADERS, "Cache-Control": "public, max-age=600"},
    )


def _json(document: object, media_type: str, headers: dict[str, str]) -> Response:
    return Response(encode_json(document), headers=headers, media_type=media_type)


async def _picture(request: Request) -> Response:
    return Response(PICTURE, media_type="image/png", headers={"Cache-Control": "max-age=31536000, immutable"})


async def _drive_file(request: Request) -> Response:
    record = _state(request).files.get(request.path_params["file_id"])
    if record is None:
        return Response(status_code=404)
    return Response(record.content, media_type=record.type)


async def _consent(request: Request) -> Response:
    """The consent page: the account choice, or with `?user=NAME` the consent itself."""
    state = _state(request)
    query = request.query_params
    view = ConsentView(
        session=request.path_params["session"],
        name=query.get("name"),
        icon=query.get("icon"),
        callback=query.get("callback"),
        permission=query.get("permission"),
    )
    state.consent_views[view.session] = view
    user = state.user_named(query.get("user", ""))
    page = (
        consent_page(state.config, view, user)
        if user
        else account_page(state.config, view, list(state.users.values()))
    )
    return HTMLResponse(page, 400 if callback_problem(view) else 200)


async def _accept(request: Request) -> Response:
    """Accept: store the token (unless the approval fails), then go to the callback with the session."""
    state = _state(request)
    session: str = request.path_params["session"]
    async with request.form() as form:
        username = form.get("user")
    user = state.user_named(username) if isinstance(username, str) else None
    view = state.consent_views.get(session)
    if view is None:
        return _notice(
            state, "Nothing to approve", "Open the app's sign-in link (the consent page) first.", 400
        )
    if user is None:
        return _notice(state, "Choose an account", "Pick the account to approve with.", 400)
    problem = callback_problem(view)
    if problem:
        return _notice(state, "Invalid callback", f"This app cannot be authorised: {problem}.", 400)
    failure = approval_problem(view, state.config)
    if failure is None:
        state.issue_token(
            user.username,
            requested_permissions(view.permission, state.config),
            session=session,
            name=view.name,
            icon_url=view.icon,
        )
    if view.callback:  # the real page redirects even when the approval failed
        return RedirectResponse(callback_with_session(view.callback, session), 303)
    if failure is not None:
        return _notice(state, "Authorisation failed", f"The app could not be authorised: {failure}.", 400)
    return _notice(state, "Access granted", "You can close this window and go back to the app.", 200)


async def _deny(request: Request) -> Response:
    """Deny: nothing is stored and nobody is told; the person stays here."""
    return _notice(
        _state(request), "Access denied", "The app was not given access. You can close this window.", 200
    )


async def _legacy_consent(request: Request) -> Response:
    state = _state(request)
    session = state.legacy_sessions.get(request.path_params["token"])
    if session is None:
        return _notice(state, "No such session", "This sign-in link is not valid.", 404)
    return HTMLResponse(legacy.consent_page(state, session))


async def _legacy_accept(request: Request) -> Response:
    """Accept: issue the token, then go to `callbackUrl?token=TOKEN` (or say access was granted)."""
    state = _state(request)
    token: str = request.path_params["token"]
    async with request.form() as form:
        username = form.get("user")
    user = state.user_named(username) if isinstance(username, str) else None
    if token not in state.legacy_sessions or user is None:
        return _notice(state, "Nothing to approve", "Open the app's sign-in link and pick an account.", 400)
    callback = legacy.approve(state, token, user.username)
    if callback:
        return RedirectResponse(callback, 303)
    return _notice(state, "Access granted", "You can close this window and go back to the app.", 200)


def _notice(state: StandinState, title: str, message: str, status: int) -> Response:
    return HTMLResponse(notice_page(state.config, title, message), status)

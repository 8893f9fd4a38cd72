"""The stand-in's legacy app authentication (PROTOCOL.md section 3), for servers older than MiAuth.

`app/create` registers an app and returns its secret; `auth/session/generate` opens a session whose consent
page is `GET /auth/{token}` (Accept / Deny forms, like the MiAuth page); Accept issues the token and
redirects to `callbackUrl + "?token=" + token` by plain concatenation, as the real page does;
`auth/session/userkey` hands the access token out once (400 PENDING_SESSION before approval, 400
NO_SUCH_SESSION after). The API key is `sha256_hex(accessToken + secret)`, accepted for that user's token.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from app.standin import entities
from app.standin.consent import _e, _page, accept_buttons, permission_items, requested_permissions
from app.standin.responses import ApiError, invalid_param
from app.standin.state import TOKEN_ALPHABET, StandinState

NO_SUCH_APP = ApiError("No such app.", "NO_SUCH_APP", "92f93e63-428e-4f2f-a5a4-39e1407fe998")
NO_SUCH_SESSION = ApiError("No such session.", "NO_SUCH_SESSION", "5b5a1503-8bc8-4bd0-8054-dc189e8cdcb3")
PENDING_SESSION = ApiError(
    "This session is not completed yet.", "PENDING_SESSION", "8c8a4145-02cc-4cca-8e66-29ba60445a8e"
)


@dataclass(frozen=True)
class LegacyApp:
    id: str
    name: str
    callback_url: str | None
    permissions: tuple[str, ...]
    secret: str


@dataclass
class LegacySession:
    """One `auth/session/generate`; `access_token` is set on Accept, `fetched` by the first userkey."""

    token: str
    app: LegacyApp
    access_token: str | None = None
    fetched: bool = False


def api_key(access_token: str, secret: str) -> str:
    return hashlib.sha256((access_token + secret).encode()).hexdigest()


def _string(params: dict[str, object], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str):
        raise invalid_param(f"#/properties/{name}/type", "must be string")
    return value


def _app(state: StandinState, params: dict[str, object]) -> LegacyApp:
    app = state.legacy_apps.get(_string(params, "appSecret"))
    if app is None:
        raise NO_SUCH_APP
    return app


def app_create(state: StandinState, params: dict[str, object]) -> object:
    """`app/create`: no credential needed; the answer includes the secret."""
    name = _string(params, "name")
    _string(params, "description")
    permission = params.get("permission")
    if not isinstance(permission, list) or not all(isinstance(p, str) for p in permission):
        raise invalid_param("#/properties/permission/type", "must be array")
    callback = params.get("callbackUrl")
    if callback is not None and not isinstance(callback, str):
        raise invalid_param("#/properties/callbackUrl/type", "must be string,null")
    granted = tuple(requested_permissions(",".join(permission), state.config))
    secret = "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(32))
    app = LegacyApp(id=state.new_id(), name=name, callback_url=callback, permissions=granted, secret=secret)
    state.legacy_apps[secret] = app
    return {
        "id": app.id,
        "name": name,
        "callbackUrl": callback,
        "permission": list(granted),
        "secret": secret,
    }


def session_generate(state: StandinState, params: dict[str, object]) -> object:
    """`auth/session/generate`: a new session token and its consent page on this server."""
    app = _app(state, params)
    token = str(uuid.uuid4())
    state.legacy_sessions[token] = LegacySession(token=token, app=app)
    return {"token": token, "url": f"{state.config.base_url}/auth/{token}"}


def session_userkey(state: StandinState, params: dict[str, object]) -> object:
    """`auth/session/userkey`: the access token and profile once."""
    app = _app(state, params)
    session = state.legacy_sessions.get(_string(params, "token"))
    state.userkey_calls.append(_string(params, "token"))
    if session is None or session.app is not app or session.fetched:
        raise NO_SUCH_SESSION
    if session.access_token is None:
        raise PENDING_SESSION
    session.fetched = True
    user = state.tokens[session.access_token].user
    profile = entities.user_detailed_not_me(state.config, user, state.notes_count(user))
    return {"accessToken": session.access_token, "user": profile}


def approve(state: StandinState, token: str, username: str) -> str | None:
    """Accept: issue the token (also reachable by its API key); the callback URL to go to, if any."""
    session = state.legacy_sessions[token]
    issued = state.issue_token(username, session.app.permissions, name=session.app.name)
    state.tokens[api_key(issued.token, session.app.secret)] = issued
    session.access_token = issued.token
    return session.app.callback_url + "?token=" + token if session.app.callback_url else None


def consent_page(state: StandinState, session: LegacySession) -> str:
    """The consent page: the app, its permissions in words, and Accept (one per account) / Deny."""
    rights = permission_items(session.app.permissions)
    accounts = accept_buttons(list(state.users.values()))
    base = f"/auth/{_e(session.token)}"
    body = (
        f"<h1>Allow {_e(session.app.name)} to use your account?</h1>"
        f'<ul class="permissions">{rights}</ul>'
        f'<form method="post" action="{base}/accept"><ul>{accounts}</ul></form>'
        f'<form method="post" action="{base}/deny"><button type="submit" class="deny">Deny</button></form>'
    )
    return _page(state.config, "Allow access?", body)

"""The stand-in's OAuth 2.0 mode (PROTOCOL.md section 4), switched on by `StandinConfig(oauth2=True)`.

`GET /.well-known/oauth-authorization-server` announces the endpoints; `GET /oauth/authorize` fetches the
client_id document (over loopback: tobira under test) and shows the consent page only for a `redirect_uri`
that document lists exactly; `POST /oauth/decision` (field `txid`, then `user=NAME` or `deny`) redirects with
`code`, `state` and `iss`, or `error=access_denied`; `POST /oauth/token` trades a code once, within five
minutes, against its PKCE S256 verifier, redirect URI and client_id. The token then works like a MiAuth one.
With `software="sharkey"` it plays a real Sharkey 2025.5.2: the same metadata, but `/oauth/authorize`
answers a Misskey-style request with HTTP 500 `{"code": "ERR_INVALID_URL"}`.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from app.standin.consent import (
    _e,
    _page,
    accept_buttons,
    known_permissions,
    notice_page,
    permission_items,
)
from app.standin.state import StandinState

CODE_SECONDS = 300
LINK_TAG = re.compile(r"<link\b[^>]*>", re.IGNORECASE)
LINK_HEADER = re.compile(r'<([^>]*)>\s*;\s*rel="?redirect_uri"?', re.IGNORECASE)
P_NAME = re.compile(r'class="[^"]*\bp-name\b[^"]*"[^>]*>([^<]*)<', re.IGNORECASE)


@dataclass(frozen=True)
class AuthorizationRequest:
    """One consent page shown: what the client asked for, kept until Accept or Deny."""

    client_id: str
    client_name: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    challenge: str


@dataclass
class Grant:
    """An authorization code: single-use, CODE_SECONDS long."""

    request: AuthorizationRequest
    username: str
    expires_at: float
    used: bool = False


def _state(request: Request) -> StandinState:
    state: StandinState = request.app.state.standin
    return state


def _refuse(state: StandinState, message: str) -> Response:
    return HTMLResponse(notice_page(state.config, "Invalid request", message), 400)


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


async def metadata(request: Request) -> Response:
    base = _state(request).config.base_url
    return JSONResponse(
        {
            "issuer": base,
            "authorization_endpoint": f"{base}/oauth/authorize",
            "token_endpoint": f"{base}/oauth/token",
            "scopes_supported": sorted(known_permissions(_state(request).config)),
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "service_documentation": "https://misskey-hub.net",
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": True,
        }
    )


async def _client_document(client_id: str) -> tuple[list[str], str | None]:
    """The redirect URIs and the h-app name the client_id URL announces."""
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(client_id, headers={"Accept": "text/html"})
    uris = LINK_HEADER.findall(response.headers.get("link", ""))
    for tag in LINK_TAG.findall(response.text):
        rel, href = re.search(r'rel="([^"]*)"', tag), re.search(r'href="([^"]*)"', tag)
        if rel and href and "redirect_uri" in rel.group(1).split():
            uris.append(href.group(1).replace("&amp;", "&"))
    name = P_NAME.search(response.text)
    return uris, name.group(1).strip() if name else None


async def authorize(request: Request) -> Response:
    """The consent page, after the client document confirms the redirect URI."""
    state = _state(request)
    if state.config.software == "sharkey":
        # Sharkey publishes Misskey's metadata, but its /oauth/authorize is Mastodon's flow: it reads the
        # client_id as a base64-encoded redirect URL and fails on a Misskey-style request (PROTOCOL.md §4).
        return JSONResponse({"code": "ERR_INVALID_URL"}, status_code=500)
    query = request.query_params
    client_id, redirect_uri = query.get("client_id", ""), query.get("redirect_uri", "")
    if query.get("response_type") != "code" or query.get("code_challenge_method") != "S256":
        return _refuse(state, "response_type must be code and code_challenge_method S256.")
    if not query.get("code_challenge") or not client_id.startswith(("http://", "https://")):
        return _refuse(state, "A code_challenge and an http(s) client_id are required.")
    try:
        uris, name = await _client_document(client_id)
    except httpx.HTTPError:
        return _refuse(state, "The client_id could not be fetched.")
    if redirect_uri not in uris:
        return _refuse(state, "The redirect_uri is not one the client announces.")
    known = known_permissions(state.config)
    scopes = tuple(s for s in query.get("scope", "").split() if s in known)
    auth = AuthorizationRequest(
        client_id, name or client_id, redirect_uri, scopes, query.get("state"), query["code_challenge"]
    )
    txid = secrets.token_urlsafe(16)
    state.oauth2_requests[txid] = auth
    rights = permission_items(scopes)
    accounts = accept_buttons(list(state.users.values()))
    hidden = f'<input type="hidden" name="txid" value="{_e(txid)}">'
    body = (
        f"<h1>Allow {_e(auth.client_name)} to use your account?</h1>"
        f'<ul class="permissions">{rights}</ul><p>Redirects to <code>{_e(redirect_uri)}</code></p>'
        f'<form method="post" action="/oauth/decision">{hidden}<ul>{accounts}</ul></form>'
        f'<form method="post" action="/oauth/decision">{hidden}'
        '<button type="submit" class="deny" name="deny" value="1">Deny</button></form>'
    )
    return HTMLResponse(_page(state.config, "Allow access?", body))


async def decision(request: Request) -> Response:
    """Accept (`user`) or Deny (`deny`): back to the redirect URI with a code or an error."""
    state = _state(request)
    async with request.form() as form:
        txid, username, deny = form.get("txid"), form.get("user"), form.get("deny")
    auth = state.oauth2_requests.pop(txid, None) if isinstance(txid, str) else None
    if auth is None:
        return _refuse(state, "This authorization is unknown or already decided.")
    answer = {"state": auth.state} if auth.state is not None else {}
    if deny or not isinstance(username, str) or state.user_named(username) is None:
        answer = {"error": "access_denied", **answer}
    else:
        code = secrets.token_urlsafe(32)
        state.oauth2_grants[code] = Grant(auth, username, state.clock() + CODE_SECONDS)
        answer = {"code": code, **answer}
    answer["iss"] = state.config.base_url
    return RedirectResponse(f"{auth.redirect_uri}?{urlencode(answer)}", 302)


def _invalid_grant() -> Response:
    return JSONResponse({"error": "invalid_grant"}, 400)


async def token(request: Request) -> Response:
    """The code exchange: once, in time, with the matching verifier, redirect URI and client_id."""
    state = _state(request)
    async with request.form() as form:
        fields = {key: value for key, value in form.items() if isinstance(value, str)}
    state.oauth2_token_requests.append(fields)
    if fields.get("grant_type") != "authorization_code":
        return JSONResponse({"error": "unsupported_grant_type"}, 400)
    grant = state.oauth2_grants.get(fields.get("code", ""))
    if grant is None or grant.used or state.clock() > grant.expires_at:
        return _invalid_grant()
    grant.used = True
    auth = grant.request
    if fields.get("redirect_uri") != auth.redirect_uri or fields.get("client_id") != auth.client_id:
        return _invalid_grant()
    if s256(fields.get("code_verifier", "")) != auth.challenge:
        return _invalid_grant()
    issued = state.issue_token(grant.username, auth.scopes, name=auth.client_name)
    return JSONResponse(
        {"access_token": issued.token, "token_type": "Bearer", "scope": " ".join(auth.scopes)}
    )

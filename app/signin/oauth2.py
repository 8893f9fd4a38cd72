"""OAuth 2.0 sign-in (PROTOCOL.md section 4): metadata, PKCE S256, the code exchange. No web framework.

tobira is a public client whose `client_id` is the URL of its own client document (`client_document`): the
server reads the allowed redirect URI and the app's name and logo from there. Every sign-in has a fresh
PKCE verifier, and the authorization response's `iss` must name the server the browser was sent to (the
mix-up defence), checked by the caller before `exchange` is ever called.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import httpx

from app.discovery import OAuthMetadata, ServerInfo
from app.errors import InstanceBadAnswer, MiAuthUnsupported, NoSignInPending, SignInMismatch
from app.hosts import Instance
from app.ledger import Ledger
from app.signin.methods import AppIdentity, Approval, Method, Start
from app.signin.miauth import TOKEN, is_session_id, new_session_id, post_json, profile

VERIFIER_BYTES = 64  # 86 URL-safe characters: within RFC 7636's 43-128

log = logging.getLogger("tobira")


def new_verifier() -> str:
    """A fresh PKCE code verifier (RFC 7636: 43-128 unreserved characters)."""
    return secrets.token_urlsafe(VERIFIER_BYTES)


def challenge(verifier: str) -> str:
    """The S256 code challenge: unpadded base64url of the verifier's SHA-256."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorize_url(
    meta: OAuthMetadata,
    *,
    client_id: str,
    redirect_uri: str,
    scopes: Sequence[str],
    state: str,
    code_challenge: str,
) -> str:
    """The consent page URL; scopes are space-separated, as OAuth 2.0 says."""
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(scopes),
        "state": state,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
    }
    separator = "&" if "?" in meta.authorization_endpoint else "?"
    return meta.authorization_endpoint + separator + urlencode(query)


async def exchange(
    client: httpx.AsyncClient,
    instance: Instance,
    token_endpoint: str,
    *,
    code: str,
    verifier: str,
    client_id: str,
    redirect_uri: str,
) -> Approval | None:
    """Trade the code for a token once, then ask `/api/i` who it belongs to.

    None when the server refuses the grant (expired, used, not approved). Raises InstanceBadAnswer for a
    malformed answer or a token `/api/i` refuses, and the guard's errors for a failed request.
    """
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "client_id": client_id,
        "code_verifier": verifier,
    }
    response = await client.post(token_endpoint, data=form, headers={"Accept": "application/json"})
    try:
        answer = response.json()
    except ValueError:
        raise InstanceBadAnswer() from None
    if response.status_code == 400 and isinstance(answer, dict) and answer.get("error") == "invalid_grant":
        return None
    token = answer.get("access_token") if isinstance(answer, dict) else None
    if response.status_code != 200 or not isinstance(token, str) or not TOKEN.fullmatch(token):
        raise InstanceBadAnswer()
    status, user = await post_json(client, instance.url("/api/i"), {"i": token})
    if status != 200:
        raise InstanceBadAnswer()
    return Approval(token=token, user=profile(user))


def client_metadata(client_id: str, *, name: str, logo: str, redirect_uri: str) -> dict[str, Any]:
    """The JSON client metadata newer servers read at the client_id URL."""
    return {
        "client_id": client_id,
        "client_name": name,
        "client_uri": client_id,
        "logo_uri": logo,
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }


def client_document(client_id: str, *, name: str, logo: str, redirect_uri: str) -> str:
    """The HTML client document: the redirect URI link and an `h-app` whose `url` is the client_id."""
    e = html.escape
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(name)}</title>"
        f'<link rel="redirect_uri" href="{e(redirect_uri)}"></head><body>'
        f'<div class="h-app"><img src="{e(logo)}" alt="" class="u-logo" width="64" height="64">'
        f'<a href="{e(client_id)}" class="u-url p-name">{e(name)}</a></div></body></html>'
    )


def pending_record(*, verifier: str, issuer: str, token_endpoint: str) -> bytes:
    """What tobira keeps in its store for one sign-in under way, keyed by its `state`."""
    return json.dumps({"v": verifier, "i": issuer, "t": token_endpoint}).encode()


def read_pending_record(raw: bytes | None) -> tuple[str, str, str] | None:
    """(verifier, issuer, token endpoint) from `pending_record`, or None."""
    try:
        data = json.loads(raw) if raw else None
        return (data["v"], data["i"], data["t"]) if isinstance(data, dict) else None
    except (ValueError, KeyError):
        return None


class OAuth2:
    """OAuth 2.0 as a sign-in method, where the server offers Misskey's flow: a uuid4 `state` per sign-in,
    its PKCE verifier and expected issuer kept in the ledger until the callback, the code exchanged once."""

    name = Method.OAUTH2
    callback_path = "/callback/oauth2"

    def __init__(
        self, client: httpx.AsyncClient, ledger: Ledger, app: AppIdentity, client_id: str, redirect_uri: str
    ) -> None:
        self._client = client
        self._ledger = ledger
        self._app = app
        self.client_id = client_id
        self.redirect_uri = redirect_uri

    def session_in(self, params: Mapping[str, str]) -> str | None:
        state = params.get("state")
        answered = bool(params.get("code") or params.get("error"))
        return state if state is not None and is_session_id(state) and answered else None

    async def start(self, instance: Instance, info: ServerInfo) -> Start:
        if info.oauth2 is None:
            raise MiAuthUnsupported()  # chosen only where the server offers it; never sent elsewhere
        state, verifier = new_session_id(), new_verifier()
        meta = info.oauth2
        record = pending_record(verifier=verifier, issuer=meta.issuer, token_endpoint=meta.token_endpoint)
        await self._ledger.keep_oauth2_sign_in(state, record)
        location = authorize_url(
            meta,
            client_id=self.client_id,
            redirect_uri=self.redirect_uri,
            scopes=self._app.permissions,
            state=state,
            code_challenge=challenge(verifier),
        )
        return Start(state, location)

    async def finish(self, instance: Instance, session: str, params: Mapping[str, str]) -> Approval | None:
        record = read_pending_record(await self._ledger.take_oauth2_sign_in(session))
        if record is None:
            raise NoSignInPending()
        code = params.get("code")
        if params.get("error") or not code:  # denied (or failed) on the server: nothing to exchange
            return None
        verifier, issuer, token_endpoint = record
        if params.get("iss") != issuer:
            # Mix-up defence: a code from another server must never reach this server's token endpoint.
            log.warning("OAuth 2.0 callback from an unexpected issuer")
            raise SignInMismatch()
        return await exchange(
            self._client,
            instance,
            token_endpoint,
            code=code,
            verifier=verifier,
            client_id=self.client_id,
            redirect_uri=self.redirect_uri,
        )

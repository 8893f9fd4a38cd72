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
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from app.errors import InstanceBadAnswer, InstanceError
from app.hosts import Instance
from app.legacy import same_origin
from app.miauth import TOKEN, Approval, post_json, profile

METADATA_PATH = "/.well-known/oauth-authorization-server"
VERIFIER_BYTES = 64  # 86 URL-safe characters: within RFC 7636's 43-128
MAX_ISSUER = 1024


@dataclass(frozen=True, slots=True)
class OAuthMetadata:
    """What tobira needs from the server's authorization server metadata."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    scopes_supported: tuple[str, ...]


def _issuer(value: Any, instance: Instance) -> str | None:
    """The server's issuer: its own origin, as Misskey announces it (a trailing slash tolerated)."""
    if isinstance(value, str) and value.rstrip("/") == instance.origin and len(value) <= MAX_ISSUER:
        return value
    return None


async def metadata(client: httpx.AsyncClient, instance: Instance) -> OAuthMetadata | None:
    """The server's OAuth 2.0 metadata, or None when it does not offer OAuth 2.0 as tobira needs it.

    Both endpoints must be on the instance's own origin, S256 must be supported and the `iss` response
    parameter announced. A server that fails to answer is treated as not offering it.
    """
    try:
        response = await client.get(instance.url(METADATA_PATH))
        document = response.json() if response.status_code == 200 else None
    except (InstanceError, ValueError):
        return None
    if not isinstance(document, dict):
        return None
    issuer = _issuer(document.get("issuer"), instance)
    authorize, token = document.get("authorization_endpoint"), document.get("token_endpoint")
    methods, scopes = document.get("code_challenge_methods_supported"), document.get("scopes_supported")
    if issuer is None or document.get("authorization_response_iss_parameter_supported") is not True:
        return None
    if not isinstance(authorize, str) or not same_origin(authorize, instance) or len(authorize) > 2048:
        return None
    if not isinstance(token, str) or not same_origin(token, instance) or len(token) > 2048:
        return None
    if not isinstance(methods, list) or "S256" not in methods:
        return None
    kept = tuple(s for s in scopes if isinstance(s, str)) if isinstance(scopes, list) else ()
    return OAuthMetadata(issuer, authorize, token, kept)


async def scopes_supported(client: httpx.AsyncClient, instance: Instance) -> tuple[str, ...] | None:
    """The permission names the server publishes in its metadata's `scopes_supported`, or None when it
    publishes no such list (no metadata, no OAuth 2.0, a malformed answer). Never raises InstanceError.
    """
    try:
        response = await client.get(instance.url(METADATA_PATH))
        document = response.json() if response.status_code == 200 else None
    except (InstanceError, ValueError):
        return None
    scopes = document.get("scopes_supported") if isinstance(document, dict) else None
    if not isinstance(scopes, list) or not all(isinstance(scope, str) for scope in scopes):
        return None
    return tuple(scopes)


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

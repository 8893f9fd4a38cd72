"""Legacy app authentication, for servers older than MiAuth (PROTOCOL.md section 3). No web framework.

One app is registered per instance with `app/create` and its secret kept in tobira's store; each sign-in
asks `auth/session/generate` for a token and a consent URL, and once the browser comes back
`auth/session/userkey` gives the access token once. The API key is `sha256_hex(accessToken + secret)`:
the access token alone is never what tobira sends on the person's behalf.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

import anyio
import httpx

from app.discovery import ServerInfo
from app.errors import InstanceBadAnswer
from app.hosts import Instance
from app.ledger import REGISTERING_SECONDS, Ledger
from app.signin.methods import AppIdentity, Approval, Method, Start
from app.signin.miauth import TOKEN, post_json, profile

# Server-made session tokens (uuids on Misskey): short printable ASCII, nothing that could smuggle syntax.
SESSION_TOKEN = re.compile(r"[0-9A-Za-z._~-]{1,128}")
WAIT_STEP = 0.1


def is_session_token(value: str) -> bool:
    """True for a token shaped like the ones `auth/session/generate` hands out."""
    return SESSION_TOKEN.fullmatch(value) is not None


def api_key(access_token: str, secret: str) -> str:
    """The `i` a legacy app sends: sha256 hex of the access token followed by the app secret."""
    return hashlib.sha256((access_token + secret).encode()).hexdigest()


def app_id(instance: Instance, *, name: str, permissions: Sequence[str], callback: str) -> str:
    """The ledger's name of the app registered for this instance and this exact configuration."""
    digest = hashlib.sha256("\n".join([name, ",".join(permissions), callback]).encode()).hexdigest()
    return f"{instance.origin}:{digest[:32]}"


async def app_secret(
    client: httpx.AsyncClient,
    ledger: Ledger,
    instance: Instance,
    *,
    name: str,
    description: str,
    permissions: Sequence[str],
    callback: str,
) -> str:
    """The app secret for this instance, registering the app with `app/create` the first time.

    The ledger keeps the secret for a while after its last use. A changed name, permission list or callback
    registers a new app. Concurrent first sign-ins wait for the one registering (a duplicate registration
    after a timeout is harmless, only wasteful). Raises InstanceBadAnswer for a malformed answer and the
    guard's errors for a failed request.
    """
    app = app_id(instance, name=name, permissions=permissions, callback=callback)
    if (stored := await ledger.app_secret(app)) is not None:
        return stored
    if not await ledger.claim_app_registration(app):
        with anyio.move_on_after(REGISTERING_SECONDS):
            # Polled: the store (SQLite or Redis) has no way to announce a new key.
            while (stored := await ledger.app_secret(app)) is None:  # noqa: ASYNC110
                await anyio.sleep(WAIT_STEP)
            return stored
    body = {
        "name": name,
        "description": description,
        "permission": list(permissions),
        "callbackUrl": callback,
    }
    status, answer = await post_json(client, instance.url("/api/app/create"), body)
    secret = answer.get("secret") if isinstance(answer, dict) else None
    if status != 200 or not isinstance(secret, str) or not TOKEN.fullmatch(secret):
        raise InstanceBadAnswer()
    await ledger.keep_app_secret(app, secret)
    return secret


async def generate(client: httpx.AsyncClient, instance: Instance, secret: str) -> tuple[str, str]:
    """`auth/session/generate`: (session token, consent URL).

    Raises InstanceBadAnswer for a malformed answer or a consent URL off the instance's own origin (the
    browser would otherwise be sent wherever the server says).
    """
    status, answer = await post_json(
        client, instance.url("/api/auth/session/generate"), {"appSecret": secret}
    )
    if status != 200 or not isinstance(answer, dict):
        raise InstanceBadAnswer()
    token, url = answer.get("token"), answer.get("url")
    if not isinstance(token, str) or not is_session_token(token):
        raise InstanceBadAnswer()
    if not isinstance(url, str) or not instance.owns(url):
        raise InstanceBadAnswer()
    return token, url


async def userkey(client: httpx.AsyncClient, instance: Instance, secret: str, token: str) -> Approval | None:
    """`auth/session/userkey`, once: the access token and profile, or None when not (or no longer) approved.

    The Approval's token is the raw access token; `api_key` turns it into the `i` to send. Raises
    InstanceBadAnswer for a malformed answer and the guard's errors for a failed request.
    """
    url = instance.url("/api/auth/session/userkey")
    status, answer = await post_json(client, url, {"appSecret": secret, "token": token})
    if status == 400 and isinstance(answer, dict):
        error = answer.get("error")
        if isinstance(error, dict) and error.get("code") in ("PENDING_SESSION", "NO_SUCH_SESSION"):
            return None
    if status != 200 or not isinstance(answer, dict):
        raise InstanceBadAnswer()
    access_token = answer.get("accessToken")
    if not isinstance(access_token, str) or not TOKEN.fullmatch(access_token):
        raise InstanceBadAnswer()
    return Approval(token=access_token, user=profile(answer.get("user")))


class Legacy:
    """The legacy app flow as a sign-in method: one app per server, a session token per sign-in, `userkey`
    once at the callback, and `sha256(accessToken + secret)` as the API key kept."""

    name = Method.LEGACY
    callback_path = "/callback/legacy"  # no query string: the server appends `?token=` by concatenation

    def __init__(self, client: httpx.AsyncClient, ledger: Ledger, app: AppIdentity, callback: str) -> None:
        self._client = client
        self._ledger = ledger
        self._app = app
        self._callback = callback

    def session_in(self, params: Mapping[str, str]) -> str | None:
        token = params.get("token")
        return token if token is not None and is_session_token(token) else None

    async def start(self, instance: Instance, info: ServerInfo) -> Start:
        token, location = await generate(self._client, instance, await self._secret(instance))
        return Start(token, location)

    async def finish(self, instance: Instance, session: str, params: Mapping[str, str]) -> Approval | None:
        secret = await self._secret(instance)
        approval = await userkey(self._client, instance, secret, session)
        return None if approval is None else Approval(api_key(approval.token, secret), approval.user)

    async def _secret(self, instance: Instance) -> str:
        app = self._app
        return await app_secret(
            self._client,
            self._ledger,
            instance,
            name=app.name,
            description=app.description,
            permissions=app.permissions,
            callback=self._callback,
        )

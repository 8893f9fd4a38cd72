"""Legacy app authentication, for servers older than MiAuth (PROTOCOL.md section 3). No web framework.

One app is registered per instance with `app/create` and its secret kept in tobira's store; each sign-in
asks `auth/session/generate` for a token and a consent URL, and once the browser comes back
`auth/session/userkey` gives the access token once. The API key is `sha256_hex(accessToken + secret)`:
the access token alone is never what tobira sends on the person's behalf.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

import anyio
import httpx

from app.errors import InstanceBadAnswer
from app.hosts import Instance
from app.miauth import TOKEN, Approval, post_json, profile
from app.store import Store

# Server-made session tokens (uuids on Misskey): short printable ASCII, nothing that could smuggle syntax.
SESSION_TOKEN = re.compile(r"[0-9A-Za-z._~-]{1,128}")
# Anyone can name a new server (wildcard DNS makes names endless), and each first sign-in registers an app
# there: its secret is kept this long after its last use, not for ever. Expiry at worst costs a new app.
APP_SECRET_TTL = 30 * 24 * 3600
REGISTERING_SECONDS = 10.0  # how long one sign-in may hold the right to register the app
WAIT_STEP = 0.1


def is_session_token(value: str) -> bool:
    """True for a token shaped like the ones `auth/session/generate` hands out."""
    return SESSION_TOKEN.fullmatch(value) is not None


def api_key(access_token: str, secret: str) -> str:
    """The `i` a legacy app sends: sha256 hex of the access token followed by the app secret."""
    return hashlib.sha256((access_token + secret).encode()).hexdigest()


def app_key(instance: Instance, *, name: str, permissions: Sequence[str], callback: str) -> str:
    """The store key of the app registered for this instance and this exact configuration."""
    digest = hashlib.sha256("\n".join([name, ",".join(permissions), callback]).encode()).hexdigest()
    return f"legacy-app:{instance.origin}:{digest[:32]}"


async def app_secret(
    client: httpx.AsyncClient,
    store: Store,
    instance: Instance,
    *,
    name: str,
    description: str,
    permissions: Sequence[str],
    callback: str,
) -> str:
    """The app secret for this instance, registering the app with `app/create` the first time.

    The secret is kept APP_SECRET_TTL seconds after its last use. A changed name, permission list or
    callback registers a new app. Concurrent first sign-ins wait for the one registering (a duplicate
    registration after a timeout is harmless, only wasteful). Raises InstanceBadAnswer for a malformed
    answer and the guard's errors for a failed request.
    """
    key = app_key(instance, name=name, permissions=permissions, callback=callback)
    if (stored := await store.get(key)) is not None:
        await store.put(key, stored, APP_SECRET_TTL)  # renewed when used: only forgotten servers expire
        return stored.decode()
    if not await store.claim(f"{key}:registering", REGISTERING_SECONDS):
        with anyio.move_on_after(REGISTERING_SECONDS):
            # Polled: the store (SQLite or Redis) has no way to announce a new key.
            while (stored := await store.get(key)) is None:  # noqa: ASYNC110
                await anyio.sleep(WAIT_STEP)
            return stored.decode()
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
    await store.put(key, secret.encode(), APP_SECRET_TTL)
    return secret


def same_origin(url: str, instance: Instance) -> bool:
    """True when `url` is an absolute URL on the instance's own origin."""
    try:
        parts = urlsplit(url)
        origin = f"{parts.scheme.lower()}://{parts.netloc.lower()}"
    except ValueError:
        return False
    return origin == instance.origin and not parts.username and not parts.password


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
    if not isinstance(url, str) or len(url) > 2048 or not same_origin(url, instance):
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

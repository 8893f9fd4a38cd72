"""MiAuth, Misskey's sign-in protocol (PROTOCOL.md section 1). Protocol code: no web framework.

The app makes a fresh uuid4 session id, sends the browser to the instance's consent page and, once the
browser comes back, asks `/api/miauth/SESSION/check` exactly once: the check is one-shot on the server, so
a lost answer cannot be fetched again and is never retried.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from app.discovery import ServerInfo
from app.errors import InstanceBadAnswer
from app.hosts import Instance
from app.signin.methods import AppIdentity, Approval, Method, Start

SESSION_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
TOKEN = re.compile(r"[\x21-\x7e]{1,512}")


def new_session_id() -> str:
    return str(uuid.uuid4())


def is_session_id(value: str) -> bool:
    """True for the ids `new_session_id` makes (lowercase uuid4); anything else was not ours."""
    return SESSION_ID.fullmatch(value) is not None


def authorize_url(
    instance: Instance,
    session: str,
    *,
    name: str,
    callback: str,
    permissions: Sequence[str],
    icon: str | None = None,
) -> str:
    """The consent page URL; permissions are comma-joined without spaces, as the server splits them."""
    query = {"name": name, **({"icon": icon} if icon else {}), "callback": callback}
    query["permission"] = ",".join(permissions)
    return instance.url(f"/miauth/{session}?") + urlencode(query, quote_via=quote, safe=":/,")


async def post_json(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> tuple[int, Any]:
    """POST a JSON body and return (status, decoded JSON); raise InstanceBadAnswer if it is not JSON."""
    response = await client.post(url, json=body)
    try:
        return response.status_code, response.json()
    except ValueError:
        raise InstanceBadAnswer() from None


def profile(user: Any) -> dict[str, Any]:
    """The user object of a sign-in answer, any method; InstanceBadAnswer without string id and username."""
    if not isinstance(user, dict) or not isinstance(user.get("id"), str) or not user["id"]:
        raise InstanceBadAnswer()
    if not isinstance(user.get("username"), str):
        raise InstanceBadAnswer()
    return user


async def check(client: httpx.AsyncClient, instance: Instance, session: str) -> Approval | None:
    """Call `/check` once. None when the server says `{"ok": false}` (denied, pending, used, unknown).

    Raises InstanceBadAnswer for a malformed answer and the guard's errors for a failed request.
    """
    status, body = await post_json(client, instance.url(f"/api/miauth/{session}/check"), {})
    if status != 200 or not isinstance(body, dict) or not isinstance(body.get("ok"), bool):
        raise InstanceBadAnswer()
    if not body["ok"]:
        return None
    token = body.get("token")
    if not isinstance(token, str) or not TOKEN.fullmatch(token):
        raise InstanceBadAnswer()
    return Approval(token=token, user=profile(body.get("user")))


class MiAuth:
    """MiAuth as a sign-in method: a fresh uuid4 per sign-in, `/check` once at the callback."""

    name = Method.MIAUTH
    callback_path = "/callback"

    def __init__(self, client: httpx.AsyncClient, app: AppIdentity, callback: str) -> None:
        self._client = client
        self._app = app
        self._callback = callback

    def session_in(self, params: Mapping[str, str]) -> str | None:
        session = params.get("session")
        return session if session is not None and is_session_id(session) else None

    async def start(self, instance: Instance, info: ServerInfo) -> Start:
        session = new_session_id()
        app = self._app
        location = authorize_url(
            instance,
            session,
            name=app.name,
            icon=app.icon,
            callback=self._callback,
            permissions=app.permissions,
        )
        return Start(session, location)

    async def finish(self, instance: Instance, session: str, params: Mapping[str, str]) -> Approval | None:
        return await check(self._client, instance, session)

"""The stand-in's streaming API: `/streaming` as a WebSocket, as PROTOCOL.md §2 describes a real server.

The credential is the `i` query parameter or a Bearer header. A bad token (unknown, revoked, or an app token
without `read:account`) is refused with HTTP 401 at the handshake; no credential opens an anonymous stream.
Revoking a token later does not close its open streams, as on a real server.

Frames are JSON. `{"type":"connect","body":{"channel","id","pong"?}}` joins a channel (`"pong": true` asks
for `{"type":"connected","body":{"id"}}`), `{"type":"disconnect","body":{"id"}}` leaves it. Each new note is
sent as `{"type":"channel","body":{"id","type":"note","body":NOTE}}` to the channels that would show it:
`homeTimeline` the signed-in user's own notes (nobody follows anybody here), `localTimeline`,
`hybridTimeline` and `globalTimeline` every public note. `main` is accepted and stays quiet. Channels that
need a credential are ignored on an anonymous stream, and unknown frames are ignored, as Misskey does.
"""

from __future__ import annotations

import asyncio
import json

import anyio
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from app.standin import entities
from app.standin.state import AccessToken, NoteRecord, StandinState

PUBLIC_TIMELINES = frozenset(("localTimeline", "hybridTimeline", "globalTimeline"))
CHANNELS = frozenset(("main", "homeTimeline", *PUBLIC_TIMELINES))
NEED_CREDENTIAL = frozenset(("main", "homeTimeline", "hybridTimeline"))


async def handle_streaming(websocket: WebSocket) -> None:
    state: StandinState = websocket.app.state.standin
    credential = _credential(websocket)
    token = state.authenticate(credential) if credential is not None else None
    if credential is not None and (token is None or "read:account" not in token.permissions):
        await websocket.send_denial_response(Response(status_code=401))
        return
    await websocket.accept()
    joined: dict[str, str] = {}  # connection id → channel
    notes: asyncio.Queue[NoteRecord] = asyncio.Queue()
    state.note_listeners.add(notes.put_nowait)
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_send_notes, websocket, state, token, joined, notes)
            await _read_frames(websocket, token, joined)
            tasks.cancel_scope.cancel()
    finally:
        state.note_listeners.discard(notes.put_nowait)


def _credential(websocket: WebSocket) -> str | None:
    authorization = websocket.headers.get("authorization")
    if authorization is not None and authorization.startswith("Bearer "):
        return authorization[len("Bearer ") :]
    return websocket.query_params.get("i")


async def _read_frames(websocket: WebSocket, token: AccessToken | None, joined: dict[str, str]) -> None:
    """Handle the client's frames until it closes."""
    while True:
        try:
            text = await websocket.receive_text()
        except (WebSocketDisconnect, KeyError):  # KeyError: a binary frame, which Misskey also drops
            return
        try:
            frame = json.loads(text)
        except ValueError:
            continue
        body = frame.get("body") if isinstance(frame, dict) else None
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            continue
        if frame.get("type") == "connect":
            channel = body.get("channel")
            if channel not in CHANNELS or (token is None and channel in NEED_CREDENTIAL):
                continue
            joined[body["id"]] = str(channel)
            if body.get("pong") is True:
                await websocket.send_text(json.dumps({"type": "connected", "body": {"id": body["id"]}}))
        elif frame.get("type") == "disconnect":
            joined.pop(body["id"], None)


async def _send_notes(
    websocket: WebSocket,
    state: StandinState,
    token: AccessToken | None,
    joined: dict[str, str],
    notes: asyncio.Queue[NoteRecord],
) -> None:
    while True:
        record = await notes.get()
        note: dict[str, object] | None = None
        for connection_id, channel in list(joined.items()):
            if not _shows(channel, record, token):
                continue
            if note is None:
                files = [state.files[file_id] for file_id in record.file_ids if file_id in state.files]
                note = entities.note(state.config, record, files)
            event = {"type": "channel", "body": {"id": connection_id, "type": "note", "body": note}}
            await websocket.send_text(json.dumps(event))


def _shows(channel: str, record: NoteRecord, token: AccessToken | None) -> bool:
    if channel == "homeTimeline":
        return token is not None and record.user.id == token.user.id
    return (
        channel in PUBLIC_TIMELINES
        and record.visibility == "public"
        and not (channel == "globalTimeline" and record.local_only)
    )

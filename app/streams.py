"""The open streams of one process, by session, so that a sign-out closes them (`app.streaming` relays them).

A Misskey server keeps streams open after their token is revoked, so tobira closes its side itself.
"""

from __future__ import annotations

import asyncio


class StreamRegistry:
    """The open streams of this process by session id, so a sign-out can close them."""

    def __init__(self) -> None:
        self._streams: dict[str, set[asyncio.Event]] = {}

    def add(self, sid: str) -> asyncio.Event:
        """A new stream of session `sid`; the event is set when the session ends."""
        event = asyncio.Event()
        self._streams.setdefault(sid, set()).add(event)
        return event

    def remove(self, sid: str, event: asyncio.Event) -> None:
        streams = self._streams.get(sid)
        if streams is not None:
            streams.discard(event)
            if not streams:
                del self._streams[sid]

    def close(self, sid: str) -> None:
        """Ask every open stream of session `sid` to close."""
        for event in self._streams.pop(sid, ()):
            event.set()

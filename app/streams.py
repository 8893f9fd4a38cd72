"""The open streams of one process, by session, so that a sign-out closes them (`app.streaming` relays them),
and so that a stopping server closes them all with 1001 ("going away") before it goes.

A Misskey server keeps streams open after their token is revoked, so tobira closes its side itself. The
memory a closed stream's connections held is handed back to the system a while later (`app.heap`).

Stopping: uvicorn, on SIGTERM or SIGINT, stops accepting connections, then closes every WebSocket it still
has with 1012 ("service restart") and waits for HTTP requests under way. `closed_on_stop` puts a handler in
front of the server's own, for as long as the app runs: it asks every stream to close with 1001 first, then
hands the signal on, so the browser and the instance both hear "going away" from tobira itself.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from app.heap import HeapTrimmer

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StreamRegistry:
    """The open streams of this process by session id, so a sign-out can close them."""

    def __init__(self, trimmer: HeapTrimmer | None = None) -> None:
        self._streams: dict[str, set[Callable[[], None]]] = {}
        self._trimmer = trimmer or HeapTrimmer()
        self.stopping = False
        """True once the server stops: streams close with 1001 and no new one opens."""

    def add(self, sid: str, end: Callable[[], None]) -> None:
        """A new stream of session `sid`; `end()` is called when the session ends (or the server stops)."""
        self._streams.setdefault(sid, set()).add(end)

    def remove(self, sid: str, end: Callable[[], None]) -> None:
        """A stream of session `sid` closed; the memory its connections held goes back in a while."""
        self._trimmer.soon()
        streams = self._streams.get(sid)
        if streams is not None:
            streams.discard(end)
            if not streams:
                del self._streams[sid]

    def close(self, sid: str) -> None:
        """Ask every open stream of session `sid` to close."""
        for end in self._streams.pop(sid, ()):
            end()

    def stop(self) -> None:
        """Ask every open stream to close, as the server is stopping; refuse new ones from now on."""
        self.stopping = True
        for sid in list(self._streams):
            self.close(sid)


@contextmanager
def closed_on_stop(registry: StreamRegistry) -> Iterator[None]:
    """While in this block (the app's lifespan), SIGTERM and SIGINT first stop `registry`'s streams, then
    reach the handler that was there (the server's). Nothing changes where no server handles the signal
    (not the main thread, or the default handler): there is nobody to hand it on to."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

    def handler(sig: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(registry.stop)
        handed_on = previous[signal.Signals(sig)]
        if callable(handed_on):
            handed_on(sig, frame)

    installed = [sig for sig, handed_on in previous.items() if callable(handed_on)]
    for sig in installed:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig in installed:
            if signal.getsignal(sig) is handler:
                signal.signal(sig, previous[sig])

"""The guard's kept-alive connections: one gate per origin, idle connections closed on time and capped.

Every origin a request is under way to has a gate (at most `per_origin` requests at once, the rest wait)
and a stack of idle connections, newest on top. An idle connection is closed once it has been idle for
`idle_seconds` by a sweeper task, which runs only while there is something idle and is stopped by `aclose`:
checking the age only when a connection is taken again left every connection to a server that is never
asked again open for ever (60 look-ups of new names, 180 descriptors still open 20 s later). At most
`max_idle_per_origin` and `max_idle` connections are kept idle (the oldest go first), and an origin is
forgotten as soon as it has neither requests under way nor idle connections, so what is remembered stays
bounded by the requests under way and `max_idle`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

from app import http1

OriginKey = tuple[str, str, int]  # scheme, host, port

# Under the 5 s keep-alive timeout of Node's HTTP server (Misskey's), so a kept connection is rarely stale.
IDLE_SECONDS = 4.0
MAX_IDLE = 256
SWEEPS_PER_IDLE_LIMIT = 4  # so a connection is closed at most a quarter of the limit late


class Origin:
    """One origin's gate and idle connections (newest last)."""

    __slots__ = ("gate", "idle", "key", "users")

    def __init__(self, key: OriginKey, limit: int) -> None:
        self.key = key
        self.gate = asyncio.Semaphore(limit)
        self.idle: list[http1.Connection] = []
        self.users = 0


class Pool:
    """Kept-alive connections of every origin (see the module docstring)."""

    def __init__(
        self,
        per_origin: int,
        *,
        idle_seconds: float = IDLE_SECONDS,
        max_idle_per_origin: int | None = None,
        max_idle: int = MAX_IDLE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_origin = per_origin
        self._idle_seconds = idle_seconds
        self._max_idle_per_origin = per_origin if max_idle_per_origin is None else max_idle_per_origin
        self._max_idle = max_idle
        self._clock = clock
        self._origins: dict[OriginKey, Origin] = {}
        self._idle: OrderedDict[http1.Connection, Origin] = OrderedDict()  # oldest first, all origins
        self._sweeper: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def using(self, key: OriginKey) -> Iterator[Origin]:
        """The origin for one request, remembered while the request runs."""
        origin = self._origins.get(key)
        if origin is None:
            origin = self._origins[key] = Origin(key, self._per_origin)
        origin.users += 1
        try:
            yield origin
        finally:
            origin.users -= 1
            self._forget_if_unused(origin)

    def checkout(self, origin: Origin) -> http1.Connection | None:
        """The newest idle connection to `origin` that is still open and fresh, or None."""
        now = self._clock()
        while origin.idle:
            connection = origin.idle.pop()
            del self._idle[connection]
            if not connection.closed and now - connection.idle_since < self._idle_seconds:
                return connection
            connection.close(graceful=True)
        return None

    def checkin(self, origin: Origin, connection: http1.Connection) -> None:
        """Keep `connection` for the next request to `origin`, within the caps (the oldest idle one goes)."""
        if len(origin.idle) >= self._max_idle_per_origin:
            self._drop(origin.idle[0])
        if len(self._idle) >= self._max_idle:
            self._drop(next(iter(self._idle)))
        connection.idle_since = self._clock()
        origin.idle.append(connection)
        self._idle[connection] = origin
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(), name="tobira-pool-sweeper")

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    @property
    def origin_count(self) -> int:
        return len(self._origins)

    async def aclose(self) -> None:
        """Stop the sweeper and close every idle connection."""
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        while self._idle:
            self._drop(next(iter(self._idle)))
        self._origins.clear()

    async def _sweep(self) -> None:
        """Close connections idle past the limit, until nothing is idle any more."""
        try:
            while self._idle:
                await asyncio.sleep(self._idle_seconds / SWEEPS_PER_IDLE_LIMIT)
                expired = self._clock() - self._idle_seconds
                while self._idle:
                    connection = next(iter(self._idle))
                    if connection.idle_since > expired and not connection.closed:
                        break
                    self._drop(connection)
        finally:
            if self._sweeper is asyncio.current_task():
                self._sweeper = None

    def _drop(self, connection: http1.Connection) -> None:
        origin = self._idle.pop(connection)
        origin.idle.remove(connection)
        connection.close(graceful=True)
        self._forget_if_unused(origin)

    def _forget_if_unused(self, origin: Origin) -> None:
        if not origin.users and not origin.idle and self._origins.get(origin.key) is origin:
            del self._origins[origin.key]

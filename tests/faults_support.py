"""Helpers for `test_faults.py`: timing, the stand-in's counters, and what tobira's process holds open."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from app.standin import RunningStandin

HANG_UP_SECONDS = 1.0  # how soon tobira must drop a connection it has given up on


@dataclass
class Timed:
    seconds: float = 0.0


@contextmanager
def timed() -> Iterator[Timed]:
    """Measures the block's wall-clock time into the yielded `Timed`."""
    result = Timed()
    started = time.monotonic()
    try:
        yield result
    finally:
        result.seconds = time.monotonic() - started


@dataclass
class Hits:
    """Requests the stand-in received per route since this object was made."""

    standin: RunningStandin
    before: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.before = dict(self.standin.state.route_hits)

    def __getitem__(self, route: str) -> int:
        return self.standin.state.route_hits[route] - self.before.get(route, 0)


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    """True as soon as `condition()` holds, False if it still does not after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def hung_up(standin: RunningStandin) -> bool:
    """True once no faulted answer is still being written to (or held open for) tobira."""
    return wait_for(lambda: standin.state.faults_in_progress == 0, HANG_UP_SECONDS)


def open_fds(pid: int) -> int:
    """How many file descriptors the process holds (sockets, files, pipes)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

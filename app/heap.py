"""Freed heap memory handed back to the system, a while after connections close.

glibc keeps the pages of freed heap memory unless they are at the very top of the heap, and uvloop gives
every TLS connection a read buffer of 256 KiB, allocated on the heap and written only where data lands.
As streams open and close all day, the buffers of new connections land on pages that old ones left dirty:
`bench/capacity.py` saw tobira's resident memory keep growing from one round of streams to the next, the
same streams each time, towards some 300 KiB for every stream it ever held at once, although almost all of
it was free. `malloc_trim` gives those pages back. It walks the heap (a few milliseconds for hundreds of
MiB), so `HeapTrimmer` runs it once a while after the first close it is told of, never more often.

Only glibc has `malloc_trim`; elsewhere (musl, macOS) the trimmer does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Callable

TRIM_DELAY_SECONDS = 30.0


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


MALLOC_TRIM = _find_malloc_trim()


class HeapTrimmer:
    """Hands freed heap memory back to the system `delay` seconds after `soon()`, at most once a `delay`."""

    def __init__(self, delay: float = TRIM_DELAY_SECONDS, trim: Callable[[int], int] | None = MALLOC_TRIM):
        self._delay = delay
        self._trim = trim
        self._due: asyncio.TimerHandle | None = None

    def soon(self) -> None:
        """Something big was freed: trim within `delay` seconds (unless a trim is already due)."""
        if self._trim is not None and self._due is None:
            self._due = asyncio.get_running_loop().call_later(self._delay, self._run)

    def _run(self) -> None:
        self._due = None
        if self._trim is not None:
            self._trim(0)

"""How many sessions have ended, counted by every process of one host: lets a process trust its memory that
a session has not ended.

The proxy and forward authentication ask the store whether a session has ended on every request. With the
SQLite store every process of the host shares one database file, so they can also share one count: eight
bytes in a file beside the database (`…db-endings`), mapped into each process's memory. Ending a session
adds one *after* the store has recorded the end; a process that found a session not ended while the count
was N knows that it still is as long as the count is N. Reading the count is a memory read, no system call;
adding to it takes the file's lock, and sign-outs are rare.

Redis serves processes on several hosts, which share no memory: with it every request asks the store.
"""

from __future__ import annotations

import fcntl
import mmap
import os
from pathlib import Path

from app.store import SQLiteStore, Store

SIZE = 8  # one unsigned 64-bit count, little-endian


class EndingsCount:
    """The count, in a file mapped into memory (shared by the host's processes) or, with no file, in memory
    alone (a store in memory has only this process)."""

    def __init__(self, path: Path | None) -> None:
        self._fd: int | None = None
        if path is None:
            self._map = mmap.mmap(-1, SIZE)
            return
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size < SIZE:
            os.ftruncate(self._fd, SIZE)
        self._map = mmap.mmap(self._fd, SIZE)

    def value(self) -> int:
        return int.from_bytes(self._map[:SIZE], "little")

    def add_one(self) -> None:
        if self._fd is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            self._map[:SIZE] = (self.value() + 1).to_bytes(SIZE, "little", signed=False)
        finally:
            if self._fd is not None:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._map.close()
        if self._fd is not None:
            os.close(self._fd)


def endings_for(store: Store) -> EndingsCount | None:
    """The count that goes with `store`: beside an SQLite file, in memory for an SQLite store in memory,
    none for Redis."""
    if not isinstance(store, SQLiteStore):
        return None
    return EndingsCount(None if store.path == ":memory:" else Path(f"{store.path}-endings"))

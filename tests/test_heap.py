"""Freed heap memory handed back: one trim a while after a stream closes, however many close meanwhile."""

from __future__ import annotations

import asyncio
import sys

import pytest

from app.heap import MALLOC_TRIM, HeapTrimmer
from app.streams import StreamRegistry

pytestmark = pytest.mark.anyio
DELAY = 0.05


class Trims:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, pad: int) -> int:
        self.calls.append(pad)
        return 1


async def test_one_trim_a_while_after_the_first_request_however_many_follow() -> None:
    trims = Trims()
    trimmer = HeapTrimmer(DELAY, trims)
    for _ in range(100):
        trimmer.soon()
    assert trims.calls == []
    await asyncio.sleep(DELAY * 3)
    assert trims.calls == [0]
    trimmer.soon()
    await asyncio.sleep(DELAY * 3)
    assert trims.calls == [0, 0]


async def test_without_malloc_trim_nothing_is_scheduled() -> None:
    trimmer = HeapTrimmer(DELAY, None)
    trimmer.soon()
    await asyncio.sleep(DELAY * 2)  # nothing to wait for, nothing raised


async def test_a_closed_stream_asks_for_a_trim() -> None:
    trims = Trims()
    streams = StreamRegistry(HeapTrimmer(DELAY, trims))
    streams.add("sid", end := lambda: None)
    await asyncio.sleep(DELAY * 3)
    assert trims.calls == []  # opening one frees nothing
    streams.remove("sid", end)
    await asyncio.sleep(DELAY * 3)
    assert trims.calls == [0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_glibc_s_malloc_trim_is_found_and_runs() -> None:
    assert MALLOC_TRIM is not None
    assert MALLOC_TRIM(0) in (0, 1)

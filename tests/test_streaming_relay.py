"""The streaming relay's clocks, in-process: the idle deadline and the periodic look at the store.

A real stream waits 300 s to idle out and 30 s between looks; here both are shortened, and the browser and
the instance are fakes that record what they are sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app import streaming
from app.streaming import _Relay

pytestmark = pytest.mark.anyio
IDLE = 0.4
LOOK = 0.1


class Browser:
    """The browser's side as the ASGI server presents it: frames it sends, messages it is sent."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        return await self.frames.get()

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


class Instance:
    """The instance's socket: frames it sends, frames and the close it is sent."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[str] = asyncio.Queue()
        self.sent: list[str | bytes] = []
        self.close_code: int | None = None

    async def send(self, data: str | bytes) -> None:
        self.sent.append(data)

    async def close(self, code: int = 1000) -> None:
        self.close_code = code

    async def __aiter__(self) -> AsyncIterator[str]:
        while True:
            yield await self.frames.get()


class Store:
    """Answers the relay's looks at the store with `answers`, in order, then the last one again."""

    def __init__(self, *answers: bool | Exception) -> None:
        self.answers = list(answers)
        self.looks: list[float] = []

    async def ended_elsewhere(self) -> bool:
        self.looks.append(time.monotonic())
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture(autouse=True)
def short_clocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streaming, "IDLE_SECONDS", IDLE)
    monkeypatch.setattr(streaming, "ENDED_CHECK_SECONDS", LOOK)


def relay(browser: Browser, instance: Instance, store: Store, stopping: bool = False) -> _Relay:
    return _Relay(
        browser.receive,
        browser.send,
        instance,  # type: ignore[arg-type]
        ended_elsewhere=store.ended_elsewhere,
        stopping=lambda: stopping,
    )


async def test_an_idle_stream_is_closed_going_away_on_both_sides() -> None:
    browser, instance, store = Browser(), Instance(), Store(False)
    began = time.monotonic()
    await asyncio.wait_for(relay(browser, instance, store).run(), 5)
    assert IDLE <= time.monotonic() - began < IDLE + 1
    assert browser.sent == [{"type": "websocket.close", "code": 1001}]
    assert instance.close_code == 1001
    assert len(store.looks) >= 2  # looked every LOOK seconds meanwhile


async def test_a_frame_either_way_puts_the_idle_deadline_back() -> None:
    browser, instance, store = Browser(), Instance(), Store(False)
    running = asyncio.create_task(relay(browser, instance, store).run())
    await asyncio.sleep(IDLE * 0.75)
    instance.frames.put_nowait('{"type":"channel"}')
    await asyncio.sleep(IDLE * 0.75)
    browser.frames.put_nowait({"type": "websocket.receive", "text": '{"type":"connect"}'})
    await asyncio.sleep(IDLE * 0.75)
    assert not running.done()
    began = time.monotonic()
    await asyncio.wait_for(running, 5)
    assert time.monotonic() - began < IDLE
    assert browser.sent == [
        {"type": "websocket.send", "text": '{"type":"channel"}'},
        {"type": "websocket.close", "code": 1001},
    ]
    assert instance.sent == ['{"type":"connect"}']


async def test_a_sign_out_on_another_replica_is_seen_at_the_next_look() -> None:
    browser, instance, store = Browser(), Instance(), Store(False, False, True)
    began = time.monotonic()
    await asyncio.wait_for(relay(browser, instance, store).run(), 5)
    gaps = [later - earlier for earlier, later in zip([began, *store.looks], store.looks, strict=False)]
    assert len(gaps) == 3
    assert all(LOOK <= gap < LOOK + 0.2 for gap in gaps), gaps  # every LOOK seconds, never sooner
    assert browser.sent == [{"type": "websocket.close", "code": streaming.SIGNED_OUT}]
    assert instance.close_code == 1000


@pytest.mark.parametrize(("stopping", "codes"), [(False, (streaming.SIGNED_OUT, 1000)), (True, (1001, 1001))])
async def test_the_session_ending_here_closes_at_once(stopping: bool, codes: tuple[int, int]) -> None:
    browser, instance, store = Browser(), Instance(), Store(False)
    stream = relay(browser, instance, store, stopping)
    running = asyncio.create_task(stream.run())
    await asyncio.sleep(0.01)
    stream.session_ended()
    await asyncio.wait_for(running, 1)
    assert browser.sent == [{"type": "websocket.close", "code": codes[0]}]
    assert instance.close_code == codes[1]


async def test_a_look_that_fails_unexpectedly_ends_the_stream_with_its_error() -> None:
    browser, instance, store = Browser(), Instance(), Store(RuntimeError("broken"))
    with pytest.raises(RuntimeError, match="broken"):
        await asyncio.wait_for(relay(browser, instance, store).run(), 5)
    assert browser.sent == []

"""The host's count of ended sessions (app.endings): a session a process remembers as not ended is asked
about again as soon as any process of the host ends any session."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from app.endings import EndingsCount, endings_for
from app.ledger import Ledger
from app.store import SQLiteStore, open_store


def ledger_on(path: Path) -> Ledger:
    store = open_store(f"sqlite:///{path}")
    return Ledger(store, endings_for(store))


@pytest.mark.anyio
async def test_a_sign_out_by_another_ledger_of_the_host_is_seen_at_once(tmp_path: Path) -> None:
    database = tmp_path / "tobira.db"
    here, there = ledger_on(database), ledger_on(database)
    try:
        assert not await here.session_ended("s1")  # remembered as not ended
        await there.end_session("s1", 60)
        assert await here.session_ended("s1")
        assert (tmp_path / "tobira.db-endings").stat().st_mode & 0o777 == 0o600
    finally:
        await here.close()
        await there.close()


def _add(path: str, times: int) -> None:
    count = EndingsCount(Path(path))
    for _ in range(times):
        count.add_one()
    count.close()


def test_processes_adding_at_once_lose_no_ending(tmp_path: Path) -> None:
    path = tmp_path / "count"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_add, args=(str(path), 500)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    count = EndingsCount(path)
    try:
        assert count.value() == 1500
    finally:
        count.close()


def test_redis_has_no_count_and_memory_one_of_its_own() -> None:
    memory = open_store("sqlite:///:memory:")
    assert isinstance(memory, SQLiteStore)
    count = endings_for(memory)
    assert count is not None
    count.add_one()
    assert count.value() == 1
    count.close()
    assert endings_for(open_store("redis://127.0.0.1:1/0")) is None

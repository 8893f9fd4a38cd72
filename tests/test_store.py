"""The store: the same behaviour from SQLite (file and memory) and Redis, plus what only SQLite promises.

Redis comes from TOBIRA_TEST_REDIS_URL (default redis://127.0.0.1:6379/0); each test uses its own random
namespace and deletes its keys afterwards, never the whole database. Without a Redis the run fails, unless
TOBIRA_TEST_ALLOW_SKIP_REDIS=1 turns that into a skip.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import sqlite3
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import pytest
import redis
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.store import PURGE_EVERY, Store, open_store

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[1]
TTL = 0.2
"""Short enough for Redis's real clock; PAST_TTL is safely beyond it."""
PAST_TTL = 0.25

Elapse = Callable[[float], Awaitable[None]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    """A frozen `time.time` that tests move forward by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis URL, once checked to answer; a loud failure (or, if allowed, a skip) otherwise."""
    url = os.environ.get("TOBIRA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("TOBIRA_TEST_ALLOW_SKIP_REDIS") == "1":
            pytest.skip(f"no Redis at TOBIRA_TEST_REDIS_URL ({type(exc).__name__})")
        pytest.fail(
            f"no Redis answers at TOBIRA_TEST_REDIS_URL (default redis://127.0.0.1:6379/0): {exc}. "
            "Start one, or set TOBIRA_TEST_ALLOW_SKIP_REDIS=1 to skip these tests.",
            pytrace=False,
        )
    finally:
        client.close()
    return url


async def drop_namespace(url: str, namespace: str) -> None:
    """Delete this test's keys, and only those: a shared Redis may hold other data."""
    client = redis.asyncio.Redis.from_url(url)
    keys = [key async for key in client.scan_iter(match=f"{namespace}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def random_namespace() -> str:
    return f"tobira-test-{secrets.token_hex(8)}"


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def store(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Store]:
    """A fresh store of each kind; SQLite runs on the fake clock, Redis on its own."""
    if backend == "redis":
        url: str = request.getfixturevalue("redis_url")
        namespace = random_namespace()
        redis_store = open_store(url, namespace=namespace)
        yield redis_store
        await redis_store.close()
        await drop_namespace(url, namespace)
        return
    path = f"{tmp_path}/store.db" if backend == "sqlite-file" else ":memory:"
    sqlite_store = open_store(f"sqlite:///{path}", clock=clock)
    yield sqlite_store
    await sqlite_store.close()


@pytest.fixture
def elapse(backend: str, clock: FakeClock) -> Elapse:
    """Let time pass: the fake clock moves for SQLite, Redis needs real time."""

    async def elapse(seconds: float) -> None:
        if backend == "redis":
            await anyio.sleep(seconds)
        else:
            clock.now += seconds

    return elapse


# The behaviour every backend shares.


async def test_claim_succeeds_once(store: Store) -> None:
    assert await store.claim("k", 60) is True
    assert await store.claim("k", 60) is False
    assert await store.exists("k") is True


async def test_claim_lasts_its_ttl_and_a_failed_claim_does_not_extend_it(
    store: Store, elapse: Elapse
) -> None:
    assert await store.claim("k", TTL) is True
    assert await store.claim("k", 60) is False
    await elapse(PAST_TTL)
    assert await store.exists("k") is False
    assert await store.claim("k", TTL) is True
    assert await store.claim("k", TTL) is False


async def test_fifty_concurrent_claims_have_one_winner(store: Store) -> None:
    results: list[bool] = []

    async def claim() -> None:
        results.append(await store.claim("race", 60))

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(claim)
    assert sorted(results) == [False] * 49 + [True]


async def test_exists(store: Store) -> None:
    assert await store.exists("k") is False
    await store.put("k", b"v")
    assert await store.exists("k") is True
    await store.delete("k")
    assert await store.exists("k") is False


async def test_incr_counts_within_a_window(store: Store) -> None:
    assert [await store.incr("n", 60) for _ in range(3)] == [1, 2, 3]
    assert await store.incr("other", 60) == 1


async def test_incr_window_ends_where_it_started(store: Store, elapse: Elapse) -> None:
    # Window of 0.3 s: the second count at 0.1 s must not push its end to 0.4 s.
    assert await store.incr("n", 0.3) == 1
    await elapse(0.1)
    assert await store.incr("n", 0.3) == 2
    await elapse(0.25)
    assert await store.incr("n", 0.3) == 1


async def test_put_get_delete(store: Store) -> None:
    assert await store.get("k") is None
    await store.put("k", b"one")
    assert await store.get("k") == b"one"
    await store.put("k", b"two")
    assert await store.get("k") == b"two"
    await store.delete("k")
    assert await store.get("k") is None
    await store.delete("k")


async def test_put_with_and_without_ttl(store: Store, elapse: Elapse) -> None:
    await store.put("expiring", b"v", ttl=TTL)
    await store.put("kept", b"a")
    await store.put("renewed", b"old", ttl=TTL)
    await store.put("renewed", b"new")
    assert await store.get("expiring") == b"v"
    await elapse(PAST_TTL)
    assert await store.get("expiring") is None
    assert await store.exists("expiring") is False
    assert await store.get("kept") == b"a"
    assert await store.get("renewed") == b"new"


async def test_claims_and_counters_read_back_alike(store: Store) -> None:
    await store.claim("claimed", 60)
    await store.incr("counted", 60)
    await store.incr("counted", 60)
    assert await store.get("claimed") == b"1"
    assert await store.get("counted") == b"2"


@pytest.mark.parametrize("ttl", [0, -1, math.nan, math.inf], ids=["zero", "negative", "nan", "infinite"])
@pytest.mark.parametrize("operation", ["claim", "incr", "put"])
async def test_ttl_must_be_positive_and_finite(store: Store, operation: str, ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl must be a positive number of seconds"):
        if operation == "put":
            await store.put("k", b"v", ttl=ttl)
        elif operation == "claim":
            await store.claim("k", ttl)
        else:
            await store.incr("k", ttl)
    assert await store.exists("k") is False


async def test_ping_answers(store: Store) -> None:
    await store.ping()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.text(max_size=40), value=st.binary(max_size=300))
async def test_any_key_and_value_round_trip(store: Store, key: str, value: bytes) -> None:
    await store.put(key, value)
    assert await store.get(key) == value
    assert await store.exists(key) is True
    await store.delete(key)
    assert await store.get(key) is None


# Opening: URLs.


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://tobira:hunter2@db/tobira", "unsupported store URL scheme 'mysql'"),
        ("postgresql://tobira:hunter2@db/tobira", "unsupported store URL scheme 'postgresql'"),
        ("http://127.0.0.1:6379/", "unsupported store URL scheme 'http'"),
        ("/var/lib/tobira/store.db", "unsupported store URL scheme ''"),
        ("", "unsupported store URL scheme ''"),
        ("sqlite://host/store.db", "an SQLite store URL is sqlite:///"),
        ("sqlite:///", "an SQLite store URL is sqlite:///"),
        ("sqlite:store.db", "an SQLite store URL is sqlite:///"),
    ],
    ids=[
        "mysql",
        "postgresql",
        "http",
        "bare-path",
        "empty",
        "sqlite-with-host",
        "sqlite-no-path",
        "sqlite-opaque",
    ],
)
def test_bad_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        open_store(url)
    assert "hunter2" not in str(caught.value)


async def test_unreachable_redis_fails_ping() -> None:
    with anyio.fail_after(10):
        store = open_store("redis://127.0.0.1:1/0")
        with pytest.raises(redis.ConnectionError):
            await store.ping()
        await store.close()


# What only SQLite promises: the file, restarts, several processes.


async def test_sqlite_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "store.db"
    store = open_store(f"sqlite:///{path}")
    await store.put("k", b"v")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    await store.close()


async def test_sqlite_relative_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///data/store.db")
    await store.close()
    assert (tmp_path / "data" / "store.db").is_file()


async def test_sqlite_survives_a_restart(tmp_path: Path, clock: FakeClock) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    first = open_store(url, clock=clock)
    assert await first.claim("claimed", 60) is True
    await first.put("value", b"v")
    assert await first.incr("n", 60) == 1
    await first.close()

    second = open_store(url, clock=clock)
    assert await second.claim("claimed", 60) is False
    assert await second.get("value") == b"v"
    assert await second.incr("n", 60) == 2
    await second.close()


async def test_sqlite_expiry_is_at_the_deadline(clock: FakeClock) -> None:
    store = open_store("sqlite:///:memory:", clock=clock)
    assert await store.claim("k", 10) is True
    clock.now += 9.999
    assert await store.claim("k", 10) is False
    clock.now += 0.001
    assert await store.claim("k", 10) is True
    await store.close()


async def test_sqlite_purges_expired_rows(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "store.db"

    def rows() -> set[str]:
        with sqlite3.connect(path) as db:
            return {key for (key,) in db.execute("SELECT key FROM kv")}

    store = open_store(f"sqlite:///{path}", clock=clock)
    await store.put("expired", b"v", ttl=1)
    await store.put("kept", b"v")
    clock.now += 2
    for _ in range(PURGE_EVERY - 3):
        await store.put("filler", b"v")
    assert rows() == {"expired", "kept", "filler"}
    await store.put("filler", b"v")
    assert rows() == {"kept", "filler"}

    await store.put("expired", b"v", ttl=1)
    await store.close()
    clock.now += 2
    reopened = open_store(f"sqlite:///{path}", clock=clock)
    assert rows() == {"kept", "filler"}
    await reopened.close()


async def test_sqlite_two_stores_on_one_file_share_claims(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    stores = [open_store(url), open_store(url)]
    results: list[bool] = []

    async def claim(store: Store) -> None:
        results.append(await store.claim("race", 60))

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(claim, stores[i % 2])
    assert sorted(results) == [False] * 49 + [True]
    for store in stores:
        await store.close()


RACER = """
import asyncio, json, sys
from app.store import open_store

async def race() -> None:
    store = open_store(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()
    won = [k for k in range(100) if await store.claim(f"k{k}", 60)]
    counts = [await store.incr("n", 60) for _ in range(100)]
    await store.close()
    print(json.dumps({"won": won, "last_count": counts[-1]}), flush=True)

asyncio.run(race())
"""


def test_sqlite_processes_racing_on_one_file_stay_atomic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    anyio.run(open_store(url).close)  # create the file before the race, as the app does at start-up
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, url],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for racer in racers:
        assert racer.stdout is not None
        assert racer.stdout.readline() == "ready\n"
    for racer in racers:  # all are waiting: start them together
        assert racer.stdin is not None
        racer.stdin.write("go\n")
        racer.stdin.flush()
    won: list[int] = []
    last_counts: list[int] = []
    for racer in racers:
        out, _ = racer.communicate(timeout=30)
        assert racer.returncode == 0
        result = json.loads(out)
        won += result["won"]
        last_counts.append(result["last_count"])
    assert sorted(won) == list(range(100))
    assert max(last_counts) == 300  # no increment lost


# What only Redis promises: namespaces.


async def test_redis_keys_live_under_the_namespace(redis_url: str) -> None:
    ours, theirs = random_namespace(), random_namespace()
    store, neighbour = open_store(redis_url, namespace=ours), open_store(redis_url, namespace=theirs)
    raw = redis.asyncio.Redis.from_url(redis_url)
    try:
        await store.put("k", b"v")
        await store.incr("n", 60)
        assert await raw.get(f"{ours}:k") == b"v"
        assert 0 < await raw.pttl(f"{ours}:n") <= 60_000
        assert await neighbour.get("k") is None
        assert await neighbour.exists("n") is False
    finally:
        await raw.aclose()
        for s in (store, neighbour):
            await s.close()
        await drop_namespace(redis_url, ours)
        await drop_namespace(redis_url, theirs)

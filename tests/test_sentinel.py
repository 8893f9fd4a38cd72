"""The store behind Redis Sentinel (`redis+sentinel://`): the URL, and a real failover.

The live tests start Debian's `redis-server` and `redis-sentinel` on free loopback ports (a primary, a
replica, three sentinels: `tests.redis_cluster`) and kill the primary with SIGKILL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import redis

from app.standin import RunningStandin
from app.store import SentinelTarget, open_store, parse_sentinel_url
from tests.failover import run_failover
from tests.redis_cluster import SentinelGroup

# What a request that needs the store answers while it is away: 503 STORE_UNAVAILABLE.
STORE_DOWN_STATUSES = {503}


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("redis+sentinel://10.0.0.1:26379/mymaster", SentinelTarget((("10.0.0.1", 26379),), "mymaster")),
        (
            "redis+sentinel://:s3cr%40t@a:1,b:2,c:3/tobira/2",
            SentinelTarget((("a", 1), ("b", 2), ("c", 3)), "tobira", 2, None, "s3cr@t"),
        ),
        (
            "redis+sentinel://ops:pw@sentinel/tobira",
            SentinelTarget((("sentinel", 26379),), "tobira", 0, "ops", "pw"),
        ),
        (
            "REDIS+SENTINEL://[::1]:5000,[fd00::2]/tobira/15/",
            SentinelTarget((("::1", 5000), ("fd00::2", 26379)), "tobira", 15),
        ),
    ],
    ids=["one-sentinel", "password-three-sentinels-db", "user-default-port", "ipv6"],
)
def test_sentinel_urls(url: str, target: SentinelTarget) -> None:
    assert parse_sentinel_url(url) == target


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://:hunter2@h:1",  # no service
        "redis+sentinel://:hunter2@h:1/",
        "redis+sentinel://:hunter2@h:1/svc/x",  # db not a number
        "redis+sentinel://:hunter2@h:1/svc/0/extra",
        "redis+sentinel://:hunter2@h:port/svc",
        "redis+sentinel://:hunter2@h:0/svc",
        "redis+sentinel://:hunter2@h:65536/svc",
        "redis+sentinel://:hunter2@h:1,,h:2/svc",
        "redis+sentinel://:hunter2@/svc",
        "redis+sentinel://:hunter2@[::1/svc",
        "redis+sentinel://:hunter2@h:1/svc?ssl=true",
    ],
)
def test_malformed_sentinel_urls_are_refused_without_the_password(url: str) -> None:
    with pytest.raises(ValueError, match="a Sentinel store URL is redis") as caught:
        open_store(url)
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(parse_sentinel_url("redis+sentinel://:hunter2@h:1/svc"))


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    with SentinelGroup(tmp_path / "redis", password="a-password") as running:
        yield running


@pytest.mark.anyio
async def test_the_store_finds_the_primary_through_the_sentinels(group: SentinelGroup) -> None:
    store = open_store(group.url(db=3), namespace="t")
    try:
        assert await store.claim("c", 60) is True
        assert await store.claim("c", 60) is False
        assert await store.incr("n", 60) == 1
        await store.put("k", b"v")
        await store.ping()
        with group.primary.client() as primary:
            primary.select(3)
            assert primary.get("t:k") == b"v"
    finally:
        await store.close()


@pytest.mark.anyio
async def test_a_wrong_password_is_an_error_that_does_not_show_it(group: SentinelGroup) -> None:
    store = open_store(group.url().replace("a-password", "not-the-password"))
    with anyio.fail_after(15):
        with pytest.raises(redis.AuthenticationError) as caught:
            await store.ping()
    assert "not-the-password" not in str(caught.value)
    await store.close()


@pytest.mark.anyio
async def test_after_the_primary_dies_the_store_works_again_by_itself(group: SentinelGroup) -> None:
    store = open_store(group.url(), namespace="t")
    try:
        await store.claim("before", 600)
        with group.primary.client() as primary:
            assert primary.wait(1, 2000) == 1  # the replica has it
        group.primary.kill()
        killed, errors = time.monotonic(), 0
        with anyio.fail_after(30):
            while True:
                try:
                    await store.put("after", b"1", 60)
                    break
                except redis.ConnectionError:
                    errors += 1
                    await anyio.sleep(0.1)
        recovered = time.monotonic() - killed
        assert group.primary_port() == group.replica.port
        assert recovered < 15, recovered
        assert await store.claim("before", 600) is False  # a claim made before the failover still holds
        assert await store.get("after") == b"1"
    finally:
        await store.close()


def test_tobira_rides_out_a_failover_under_load(tmp_path: Path, standin: RunningStandin) -> None:
    """Two tobira processes behind nginx, a steady load of sign-ins and proxy calls, the primary killed.

    The longer variant is bench/failover.py."""
    report = run_failover(tmp_path, standin, threads=4, before_kill=3.0, after_failover=4.0, limit=45.0)
    print(report.table())
    answers, errors = report.answers, report.errors()
    assert len(answers) > 100
    # Nothing fails before the kill, and everything works again by itself within 3 s of the promotion
    # (the sentinels take DOWN_AFTER_MS and an election to promote the replica).
    assert [e for e in errors if e.at < report.killed_at] == []
    assert [e for e in errors if e.at > report.promoted_at + 3.0] == []
    assert report.promoted_at - report.killed_at < 15
    # In between: only "the store is away", said plainly, a bounded number of times (4 people, each
    # waiting for an answer before asking again).
    assert {error.status for error in errors} <= STORE_DOWN_STATUSES, {
        (e.step, e.status, e.body) for e in errors
    }
    assert len(errors) <= 300
    # Sign-ins finish again after the failover, and nothing happened twice.
    assert [a for a in answers if a.step == "callback" and a.status == 303 and a.at > report.promoted_at]
    assert report.replays_finished == 0
    assert report.checks_called_twice == 0
    assert report.signed_out
    assert report.signed_out_accepted == 0

"""The store going away: what needs it answers 503 STORE_UNAVAILABLE (a page or JSON), /readyz says 503 while
/healthz stays 200, and tobira recovers by itself when the store is back.

SQLite runs in-process, and its faults are made with SQLite's own switches on tobira's connection, so that
tobira meets the very errors a real fault gives: `PRAGMA query_only` fails every write with SQLITE_READONLY
("attempt to write a readonly database", what an unwritable file or a read-only remount gives; chmod cannot
show it, since the tests run as root and an open file stays writable anyway), and a `max_page_count` reached
fails every write that needs room with SQLITE_FULL ("database or disk is full"). Redis is a real
`redis-server` of the test's own, stopped and started again under a real tobira process.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from app.config import load_settings
from app.hosts import parse_instance
from app.main import create_app
from app.standin import RunningStandin
from tests.conftest import Browser, free_port, start_tobira
from tests.oidc_support import SECRET, clients_file

ORIGIN = "http://127.0.0.1:8000"
DEAD_INSTANCE = "http://127.0.0.1:9"  # nothing listens: the revocation at sign-out fails at once
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def make_unwritable(db: sqlite3.Connection) -> Callable[[], None]:
    db.execute("PRAGMA query_only = ON")
    return lambda: db.execute("PRAGMA query_only = OFF")


def fill_the_disk(db: sqlite3.Connection) -> Callable[[], None]:
    """No page may be added, and the pages there are filled to the brim: no new row fits."""
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    db.execute(f"PRAGMA max_page_count = {pages}")
    filler = 0
    for size in (1000, 100, 10, 0):
        try:
            while True:
                db.execute("INSERT INTO kv VALUES (?, zeroblob(?), NULL)", (f"~{filler}", size))
                filler += 1
        except sqlite3.OperationalError as exc:
            assert exc.sqlite_errorname == "SQLITE_FULL"
    return lambda: db.execute("PRAGMA max_page_count = 1073741823")


@pytest.mark.anyio
@pytest.mark.parametrize("fault", [make_unwritable, fill_the_disk], ids=["unwritable", "disk-full"])
async def test_a_failing_sqlite_store_answers_503_and_recovers(
    tmp_path: Path, fault: Callable[[sqlite3.Connection], Callable[[], None]]
) -> None:
    settings = load_settings(
        data_dir=tmp_path, secret_keys=["k" * 32], login_rate_limit=5, dev_instances=[DEAD_INSTANCE]
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        services = app.state.services
        _, cookie = services.cookies.issue(
            parse_instance(DEAD_INSTANCE, settings.dev_origins),
            token="T" * 32,
            user={"id": "u1", "username": "alice"},
            method="miauth",
        )
        transport = httpx.ASGITransport(app)
        headers = {"Origin": ORIGIN}
        async with httpx.AsyncClient(transport=transport, base_url=ORIGIN, headers=headers) as client:
            client.cookies.set("tobira", cookie)
            assert (await client.get("/readyz")).status_code == 200
            repair = fault(services.ledger.store._db)

            ready, health = await client.get("/readyz"), await client.get("/healthz")
            assert (ready.status_code, ready.json()) == (503, {"status": "store unavailable"})
            assert (health.status_code, health.json()) == (200, {"status": "ok"})
            page = await client.post("/logout")  # recording the sign-out is a write
            assert page.status_code == 503
            assert page.headers["content-type"].startswith("text/html")
            assert "STORE_UNAVAILABLE" in page.text
            assert "tobira cannot reach its storage right now" in page.text
            lookup = await client.get("/lookup", params={"instance": "x.example"})  # its rate limit writes
            assert lookup.status_code == 503
            assert lookup.json()["error"]["code"] == "STORE_UNAVAILABLE"
            assert lookup.json()["error"]["id"].startswith("5c0e4d4e-")
            # Reading still works: the person is still signed in, nothing was half done.
            assert (await client.get("/session")).status_code == 200

            repair()
            assert (await client.get("/readyz")).status_code == 200
            signed_out = await client.post("/logout")
            assert signed_out.status_code == 303
            client.cookies.set("tobira", cookie)  # the ended session's cookie, replayed
            assert (await client.get("/session")).status_code == 401


@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[int]:
    """The port of a Redis of this test's own, which the test may stop (`stop_redis`) and start again."""
    port = free_port()
    yield port
    stop_redis(port)


def start_redis(port: int, tmp_path: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    RUNNING[port] = process
    client = redis.Redis(port=port, socket_connect_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            client.close()
            return process
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


RUNNING: dict[int, subprocess.Popen[bytes]] = {}


def stop_redis(port: int) -> None:
    process = RUNNING.pop(port, None)
    if process is not None:
        process.terminate()
        process.wait(timeout=10)


def test_redis_stopped_answers_503_and_recovers_when_it_is_back(
    tmp_path: Path, redis_port: int, standin: RunningStandin
) -> None:
    start_redis(redis_port, tmp_path)
    tobira = start_tobira(
        tmp_path,
        TOBIRA_STORE_URL=f"redis://127.0.0.1:{redis_port}/0",
        TOBIRA_DEV_INSTANCES=standin.url,
        TOBIRA_PERMISSIONS="read:account",
        TOBIRA_OIDC_CLIENTS=str(clients_file(tmp_path, "http://127.0.0.1:9")),
    )
    try:
        with httpx.Client(timeout=20) as client:
            browser = Browser(tobira.url, standin, client)
            browser.sign_in()
            assert browser.api("i").status_code == 200
            cookie = client.cookies["tobira"]
            other = Browser(tobira.url, standin, httpx.Client(timeout=20))
            approved = other.approve(other.start().headers["location"])  # its callback comes in the outage
            checks = standin.state.route_hits["api/miauth/check"]

            stop_redis(redis_port)
            started = time.monotonic()
            ready, health = httpx.get(tobira.url + "/readyz"), httpx.get(tobira.url + "/healthz")
            assert (ready.status_code, ready.json()) == (503, {"status": "store unavailable"})
            assert health.status_code == 200
            api = browser.api("i")
            assert api.status_code == 503
            assert api.json()["error"]["code"] == "STORE_UNAVAILABLE"
            page = client.get(tobira.url + "/")
            assert page.status_code == 503
            assert "STORE_UNAVAILABLE" in page.text
            assert browser.session().status_code == 503
            visit = {"X-Forwarded-Host": "app.example", "X-Forwarded-Uri": "/", "X-Forwarded-Proto": "https"}
            forward = client.get(tobira.url + "/auth/request", headers=visit)  # nginx auth_request
            assert (forward.status_code, "STORE_UNAVAILABLE" in forward.text) == (503, True)
            finished = other.callback(approved)
            assert (finished.status_code, "STORE_UNAVAILABLE" in finished.text) == (503, True)
            assert standin.state.route_hits["api/miauth/check"] == checks  # its one-shot check not spent
            # The OpenID endpoints apps call answer in OAuth's own shape.
            token = httpx.post(
                tobira.url + "/oidc/token",
                data={
                    "grant_type": "authorization_code",
                    "code": "x",
                    "redirect_uri": "http://127.0.0.1:9/cb?x=1",
                },
                auth=("wiki", SECRET),
            )
            bearer = {"Authorization": "Bearer " + "x" * 43}
            userinfo = httpx.get(tobira.url + "/oidc/userinfo", headers=bearer)
            for answer in (token, userinfo):
                assert (answer.status_code, answer.json()["error"]) == (503, "temporarily_unavailable")
            assert time.monotonic() - started < 5  # refused at once, not after a timeout

            start_redis(redis_port, tmp_path)
            assert httpx.get(tobira.url + "/readyz").status_code == 200
            assert browser.api("i").status_code == 200  # the same tobira process, no restart
            assert browser.post_form("/logout", {}).status_code == 303
            client.cookies.set("tobira", cookie)
            assert browser.session().status_code == 401
            other.sign_in()  # the sign-in cut by the outage is simply started again
            assert other.session().json()["user"]["username"] == "alice"
            other.client.close()
        log = tobira.log()
        assert "the store does not answer: ConnectionError" in log
        assert "Traceback" not in log
    finally:
        tobira.stop()

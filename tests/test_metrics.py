"""`GET /metrics`: behind TOBIRA_METRICS_TOKEN, read with prometheus-client's own parser, and the same totals
from whichever of several worker processes answers (prometheus-client's multiprocess mode)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from app import metrics
from app.config import load_settings
from app.main import create_app
from app.standin import RunningStandin
from tests.conftest import ROOT, Browser, TobiraProcess, free_port

TOKEN = "metrics-" + "m" * 32
ORIGIN = "http://127.0.0.1:8000"
FAMILIES = {
    "tobira_sign_ins",
    "tobira_proxy_requests",
    "tobira_proxy_duration_seconds",
    "tobira_instance_duration_seconds",
    "tobira_instance_errors",
    "tobira_open_streams",
    "tobira_store_errors",
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample by (name, labels), as prometheus-client's parser reads the text."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer  {TOKEN}", True),
        (f"Bearer {TOKEN}x", False),
        (f"Bearer {TOKEN[:-1]}", False),
        (f"Basic {TOKEN}", False),
        (TOKEN, False),
        ("Bearer ", False),
        (None, False),
    ],
)
def test_the_token_is_checked(header: str | None, allowed: bool) -> None:
    assert metrics.authorized(header, TOKEN) is allowed


@pytest.mark.anyio
async def test_metrics_need_the_token_and_parse(tmp_path: Path) -> None:
    async def get(app: object, **headers: str) -> httpx.Response:
        transport = httpx.ASGITransport(app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
            return await client.get("/metrics", headers=headers)

    closed = create_app(load_settings(data_dir=tmp_path, secret_keys=["k" * 32]))
    async with closed.router.lifespan_context(closed):
        assert (await get(closed)).status_code == 404  # no token set: no metrics at all
        assert (await get(closed, authorization=f"Bearer {TOKEN}")).status_code == 404

    app = create_app(load_settings(data_dir=tmp_path, secret_keys=["k" * 32], metrics_token=TOKEN))
    async with app.router.lifespan_context(app):
        refused = await get(app, authorization="Bearer wrong")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.json()["error"]["code"] == "CREDENTIAL_REQUIRED"
        assert (await get(app)).status_code == 401
        answer = await get(app, authorization=f"Bearer {TOKEN}")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    names = {family.name for family in text_string_to_metric_families(answer.text)}
    assert names >= FAMILIES
    assert TOKEN not in answer.text
    assert "/metrics" not in app.openapi()["paths"]


def start_workers(tmp_path: Path, standin: RunningStandin, workers: int) -> TobiraProcess:
    """tobira under `uvicorn --workers N`, the processes sharing one SQLite store and one metrics folder."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    multiproc = tmp_path / "metrics"
    multiproc.mkdir()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "TOBIRA_PUBLIC_URL": url,
        "TOBIRA_DATA_DIR": str(tmp_path / "data"),
        "TOBIRA_SECRET_KEYS": "s" * 32,
        "TOBIRA_LOGIN_RATE_LIMIT": "0",
        "TOBIRA_DEV_INSTANCES": standin.url,
        "TOBIRA_PERMISSIONS": "read:account",
        "TOBIRA_METRICS_TOKEN": TOKEN,
        "TOBIRA_LOG_FORMAT": "json",
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--port", str(port)]
    log_path = tmp_path / "tobira.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--workers", str(workers)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = TobiraProcess(url, log_path, process, env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        started = [line for line in log_lines(server) if line["message"] == "Application startup complete."]
        if len(started) == workers:
            return server
        if process.poll() is not None:
            break
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"tobira did not start:\n{server.log()}")


def log_lines(server: TobiraProcess) -> list[dict[str, object]]:
    return [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]


@pytest.fixture
def workers(tmp_path: Path, standin: RunningStandin) -> Iterator[TobiraProcess]:
    server = start_workers(tmp_path, standin, 2)
    yield server
    server.stop()


def served_by(server: TobiraProcess, request_id: str) -> object:
    """The pid of the worker whose access log line carries `request_id`."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in log_lines(server):
            if line["request_id"] == request_id and line["logger"] == "uvicorn.access":
                return line["pid"]
        time.sleep(0.02)
    raise AssertionError(f"no access line for {request_id}")


def until_both_workers(server: TobiraProcess, call: Callable[[str], httpx.Response]) -> list[httpx.Response]:
    """Make `call` (each on a new connection, with a request id of its own) until both workers answered."""
    answers, pids = [], set()
    for number in range(200):
        request_id = f"spread-{number}-{time.monotonic_ns()}"
        answers.append(call(request_id))
        pids.add(served_by(server, request_id))
        if len(pids) == 2:
            return answers
    raise AssertionError("one worker answered everything")


def test_every_worker_reports_the_totals_of_all(workers: TobiraProcess, standin: RunningStandin) -> None:
    with httpx.Client(timeout=20) as client:
        browser = Browser(workers.url, standin, client)
        browser.sign_in("alice")
        browser.sign_in("bob")
        denied = browser.start()
        assert denied.status_code == 303
        client.post(f"{standin.url}/miauth/{browser.last_session}/deny")
        assert client.get(f"{workers.url}/callback?session={browser.last_session}").status_code == 403

        def call(request_id: str) -> httpx.Response:
            headers = {"Connection": "close", "X-Request-Id": request_id}
            return browser.api("i", headers=headers)

        calls = until_both_workers(workers, call)
        assert {answer.status_code for answer in calls} == {200}
        assert browser.api("admin/meta").status_code == 403  # refused before the instance
        cookie = client.cookies["tobira"]

    def scrape(request_id: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKEN}", "Connection": "close", "X-Request-Id": request_id}
        return httpx.get(workers.url + "/metrics", headers=headers)

    ws_url = "ws" + workers.url.removeprefix("http") + "/streaming"
    with connect(ws_url, origin=workers.url, additional_headers={"Cookie": f"tobira={cookie}"}):  # type: ignore[arg-type]
        scrapes = until_both_workers(workers, scrape)
    for answer in scrapes:
        samples = parse(answer.text)
        assert value(samples, "tobira_sign_ins_total", method="miauth", outcome="success") == 2
        outcome = "SIGN_IN_NOT_APPROVED"
        assert value(samples, "tobira_sign_ins_total", method="miauth", outcome=outcome) == 1
        assert value(samples, "tobira_proxy_requests_total", status="2xx") == len(calls)
        assert value(samples, "tobira_proxy_requests_total", status="4xx") == 1
        assert value(samples, "tobira_proxy_duration_seconds_count") == len(calls) + 1
        assert value(samples, "tobira_instance_duration_seconds_count") == len(calls)
        assert value(samples, "tobira_open_streams") == 1
        assert value(samples, "tobira_store_errors_total") == 0
    time.sleep(0.3)  # the stream's end reaches its worker
    closed = parse(scrape("after").text)
    assert value(closed, "tobira_open_streams") == 0

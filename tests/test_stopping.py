"""A graceful stop: on SIGTERM `tobira serve` stops taking connections, lets requests under way finish (up to
10 s) and closes streams with WebSocket code 1001 — tested with a real process, a request the stand-in answers
slowly (one byte at a time) and an open stream."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from app.standin import Fault, FaultKind, RunningStandin
from tests.conftest import ROOT, Browser, TobiraProcess, free_port


@pytest.fixture
def served(tmp_path: Path, standin: RunningStandin) -> Iterator[TobiraProcess]:
    """`tobira serve`, as an operator runs it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "TOBIRA_PUBLIC_URL": url,
        "TOBIRA_DATA_DIR": str(tmp_path / "data"),
        "TOBIRA_LOGIN_RATE_LIMIT": "0",
        "TOBIRA_DEV_INSTANCES": standin.url,
        "TOBIRA_PERMISSIONS": "read:account",
        "TOBIRA_LOG_FORMAT": "json",
    }
    log_path = tmp_path / "tobira.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = TobiraProcess(url, log_path, process, env)
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            if time.monotonic() > deadline or process.poll() is not None:
                server.stop()
                raise RuntimeError(f"tobira did not start:\n{server.log()}") from None
            time.sleep(0.05)
    yield server
    standin.state.faults.clear()
    if process.poll() is None:
        process.kill()
        process.wait()


def slow_call(browser: Browser, standin: RunningStandin, seconds: float) -> Future[httpx.Response]:
    """`POST /api/i` through tobira, which the stand-in answers one byte at a time over about `seconds`;
    returned once the instance is answering it."""
    size = len(browser.api("i").content)
    standin.state.faults["api/i"] = Fault(FaultKind.DRIP_BODY, size=0, interval=seconds / size)
    pool = ThreadPoolExecutor(1)
    future = pool.submit(browser.api, "i")
    pool.shutdown(wait=False)
    deadline = time.monotonic() + 5
    while not standin.state.faults_in_progress:
        assert time.monotonic() < deadline, "the slow call never reached the stand-in"
        time.sleep(0.01)
    return future


def open_stream(served: TobiraProcess, browser: Browser) -> ClientConnection:
    return connect(
        "ws" + served.url.removeprefix("http") + "/streaming",
        origin=served.url,  # type: ignore[arg-type]
        additional_headers={"Cookie": f"tobira={browser.client.cookies['tobira']}"},
        open_timeout=5,
    )


def test_sigterm_finishes_requests_and_closes_streams_with_1001(
    served: TobiraProcess, standin: RunningStandin
) -> None:
    with httpx.Client(timeout=30) as client:
        browser = Browser(served.url, standin, client)
        browser.sign_in()
        expected = browser.api("i").json()
        with open_stream(served, browser) as stream:
            call = slow_call(browser, standin, seconds=2.0)
            served.process.send_signal(signal.SIGTERM)
            stopped_at = time.monotonic()
            with pytest.raises(ConnectionClosed):
                while True:
                    stream.recv(timeout=5)
            assert stream.close_code == 1001
            assert time.monotonic() - stopped_at < 1
        time.sleep(0.3)
        with pytest.raises(httpx.ConnectError):  # no new connections
            httpx.get(served.url + "/healthz", timeout=2)

        answer = call.result(timeout=15)  # the request under way finished
        assert (answer.status_code, answer.json()) == (200, expected)
        assert answer.elapsed.total_seconds() >= 1.5
    served.process.wait(timeout=10)
    assert time.monotonic() - stopped_at < 5
    assert served.process.returncode in (0, -signal.SIGTERM)
    # `tobira serve` with JSON logs: every line but its own greeting is one JSON object.
    lines = served.log().splitlines()
    assert lines[0].startswith("tobira: listening on")
    messages = [json.loads(line)["message"] for line in lines[1:]]
    assert "Application shutdown complete." in messages
    assert not any(message.startswith("Cancel") for message in messages)


def test_requests_longer_than_10_seconds_are_cut_off(served: TobiraProcess, standin: RunningStandin) -> None:
    with httpx.Client(timeout=30) as client:
        browser = Browser(served.url, standin, client)
        browser.sign_in()
        call = slow_call(browser, standin, seconds=14.0)
        served.process.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        served.process.wait(timeout=14)
        waited = time.monotonic() - stopped_at
        cut = call.result(timeout=5)  # uvicorn answers what it had to cancel with a bare 500
    assert cut.status_code == 500
    assert 9.5 < cut.elapsed.total_seconds() < 12.5
    assert 9.5 < waited < 12.5
    assert "Cancel 1 running task(s), timeout graceful shutdown exceeded" in served.log()

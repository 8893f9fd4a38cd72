"""No secret ever leaks: a recognisable canary token is followed through every route and every log level.

The stand-in is made to issue the canary as its token; tobira runs as a real process with DEBUG logs and
uvicorn's access log on. Every answer tobira gives (bodies, headers, redirects, cookies as sent) and its
whole log must be free of the token and of the MiAuth session ids, in either log format (text and
`TOBIRA_LOG_FORMAT=json`).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import app.standin.state
from app.standin import RunningStandin, StandinConfig, run_standin_in_thread
from tests.conftest import STANDIN_HOST, Browser, TobiraProcess, free_port, start_tobira

CANARY = "CANARYtokenXq7Zr4Wm9Pk2Ls8Dv5Nb3"  # 32 letters and digits, like a MiAuth token


class CanarySecrets:
    """Stands in for `secrets` inside the stand-in: its next token is the canary, one character at a time."""

    def __init__(self) -> None:
        self._next = iter(CANARY * 1000)

    def choice(self, alphabet: str) -> str:
        return next(self._next)

    def __getattr__(self, name: str) -> object:
        return getattr(secrets, name)


@pytest.fixture(scope="module")
def canary_standin() -> Iterator[RunningStandin]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app.standin.state, "secrets", CanarySecrets())
        port = free_port(STANDIN_HOST)
        config = StandinConfig(base_url=f"http://{STANDIN_HOST}:{port}")
        with run_standin_in_thread(config, host=STANDIN_HOST, port=port) as running:
            yield running


@pytest.fixture(scope="module", params=["text", "json"])
def leaky(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    canary_standin: RunningStandin,
) -> Iterator[TobiraProcess]:
    server = start_tobira(
        tmp_path_factory.mktemp("leaks"),
        TOBIRA_DEV_INSTANCES=canary_standin.url,
        TOBIRA_PERMISSIONS="read:account,write:notes",
        TOBIRA_LOG_LEVEL="DEBUG",
        TOBIRA_LOG_FORMAT=request.param,
    )
    yield server
    server.stop()


def everything_seen(answer: httpx.Response) -> str:
    return "\n".join(
        [str(answer.status_code), *(f"{k}: {v}" for k, v in answer.headers.multi_items()), answer.text]
    )


def test_the_canary_token_never_leaks(
    leaky: TobiraProcess, canary_standin: RunningStandin, tmp_path: Path
) -> None:
    seen: list[str] = []
    sessions: list[str] = []
    with httpx.Client(timeout=20, event_hooks={"response": [lambda r: r.read()]}) as client:
        browser = Browser(leaky.url, canary_standin, client)
        client.event_hooks["response"].append(lambda r: seen.append(everything_seen(r)))
        browser.sign_in("alice")
        sessions.append(browser.last_session or "")
        assert canary_standin.state.token_of("alice") == CANARY

        for endpoint, body in [
            ("i", {}),
            ("notes/create", {"text": "hello", "i": "x"}),
            ("notes/create", {}),  # the instance's own 400
            ("admin/meta", {}),  # refused by tobira
            ("no/such-endpoint", {}),  # the instance's 404, reshaped
            ("following/create", {"userId": "x"}),  # permission denied upstream
        ]:
            browser.api(endpoint, body)
        browser.api("notes/create", content=b"{broken", headers={"Content-Type": "application/json"})
        browser.api("notes/create", content=b"{}", headers={"Content-Type": "text/plain"})
        browser.session()
        client.get(leaky.url + "/")
        client.get(f"{leaky.url}/callback?session={sessions[0]}")  # replayed callback: an error page

        started = browser.start()
        sessions.append(browser.last_session or "")
        client.post(f"{canary_standin.url}/miauth/{sessions[-1]}/deny")
        client.get(f"{leaky.url}/callback?session={sessions[-1]}")  # not approved

        cookie = client.cookies["tobira"]
        logout = browser.post_form("/logout", {})
        client.get(leaky.url + logout.headers["location"])
        client.cookies.set("tobira", cookie)
        browser.api("i")  # replay after logout
        assert started.status_code == 303

    log = leaky.log()
    assert "GET /callback" in log  # the access log is on, so this test would see a leak there
    assert "[redacted]" in log
    for text in [*seen, log]:
        assert CANARY not in text
    for session in sessions:
        assert session not in log
    if leaky.env["TOBIRA_LOG_FORMAT"] == "json":
        lines = [json.loads(line) for line in log.splitlines()]  # every line one JSON object
        assert any("/callback?session=[redacted]" in line["message"] for line in lines)

"""Every sign-in method end to end in a real browser, and a fork's nodeinfo end to end.

One Chromium test signs in against a stand-in in each mode — MiAuth, the legacy app flow, OAuth 2.0 — and
checks that the proxied calls carry exactly the `i` the stand-in expects for alice in that mode: the issued
token for MiAuth and OAuth 2.0, `sha256_hex(accessToken + appSecret)` for the legacy flow. A stand-in that
calls itself Sharkey then shows up as Sharkey in `/session` and on the signed-in page, whether it answers
`/.well-known/nodeinfo` (federation on) or only `/nodeinfo/2.1` (federation off, like a fresh server).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser as Chromium
from playwright.sync_api import expect

from app.standin import RunningStandin, StandinConfig, run_standin_in_thread
from app.standin.state import AccessToken
from tests.conftest import STANDIN_HOST, Browser, TobiraProcess, free_port, start_tobira

PERMISSIONS = "read:account,write:notes"
READ_SESSION = "async () => { const r = await fetch('/session'); return [r.status, await r.json()]; }"
CALL_I = """async () => {
  const r = await fetch('/api/i', {
    method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{}',
  });
  return [r.status, await r.json()];
}"""


@dataclass(frozen=True)
class Mode:
    """How to start the stand-in and tobira for one sign-in method, and the consent page's path."""

    standin: dict[str, Any]
    tobira_env: dict[str, str]
    consent_path: str


MODES = {
    "miauth": Mode({}, {}, "/miauth/"),
    "legacy": Mode({"miauth": False, "version": "12.20.0"}, {}, "/auth/"),
    "oauth2": Mode({"oauth2": True}, {"TOBIRA_AUTH_METHODS": "oauth2,miauth,legacy"}, "/oauth/authorize"),
}
# How the signed-in page names each method.
METHOD_NAMES = {"miauth": "MiAuth", "legacy": "legacy app authentication", "oauth2": "OAuth 2.0"}


@dataclass
class Pair:
    standin: RunningStandin
    tobira: TobiraProcess


def start_pair(tmp_path: Path, tobira_env: dict[str, str], **config: Any) -> Iterator[Pair]:
    """A stand-in on STANDIN_HOST and a tobira process that trusts it, stopped afterwards."""
    port = free_port(STANDIN_HOST)
    settings = StandinConfig(base_url=f"http://{STANDIN_HOST}:{port}", **config)
    with run_standin_in_thread(settings, host=STANDIN_HOST, port=port) as running:
        tobira = start_tobira(
            tmp_path, TOBIRA_DEV_INSTANCES=running.url, TOBIRA_PERMISSIONS=PERMISSIONS, **tobira_env
        )
        try:
            yield Pair(running, tobira)
        finally:
            tobira.stop()


@pytest.fixture(params=list(MODES))
def mode_pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Pair]]:
    mode = MODES[request.param]
    for pair in start_pair(tmp_path, mode.tobira_env, **mode.standin):
        yield request.param, pair


def issued_to_alice(pair: Pair) -> AccessToken:
    """The one token the stand-in issued to alice (the legacy flow files it under two keys)."""
    issued = {id(t): t for t in pair.standin.state.tokens.values() if t.user.username == "alice"}
    assert len(issued) == 1, issued
    return next(iter(issued.values()))


def expected_i(method: str, pair: Pair) -> str:
    """The credential the stand-in expects from tobira for alice in this mode."""
    token = issued_to_alice(pair)
    if method != "legacy":
        return token.token
    (session,) = [s for s in pair.standin.state.legacy_sessions.values() if s.access_token is not None]
    assert session.access_token == token.token
    return hashlib.sha256((token.token + session.app.secret).encode()).hexdigest()


def test_sign_in_by_every_method(chromium: Chromium, mode_pair: tuple[str, Pair]) -> None:
    method, pair = mode_pair
    standin, tobira = pair.standin, pair.tobira
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(tobira.url + "/login")
        page.get_by_label("Your Misskey server").fill(f"{STANDIN_HOST}:{standin.port}")
        page.get_by_role("button", name="Continue to your server").click()
        page.wait_for_url(f"{standin.url}{MODES[method].consent_path}**")
        if method == "miauth":
            page.get_by_role("button", name="@alice").click()
            page.get_by_role("button", name="Accept", exact=True).click()
        else:
            page.get_by_role("button", name="Accept as @alice", exact=True).click()
        page.wait_for_url(tobira.url + "/")
        expect(page.get_by_role("heading", name="Signed in")).to_be_visible()
        expect(page.get_by_text(f"@alice@{STANDIN_HOST}:{standin.port}")).to_be_visible()
        version = standin.state.config.version
        line = f"Misskey {version} · signed in with {METHOD_NAMES[method]}"
        expect(page.get_by_text(line, exact=True)).to_be_visible()

        status, session = page.evaluate(READ_SESSION)
        assert status == 200
        assert (session["method"], session["user"]["username"]) == (method, "alice")
        assert session["instance"] == f"{STANDIN_HOST}:{standin.port}"

        page.get_by_role("button", name="Post").click()
        expect(page.locator("#playground-output")).to_contain_text("createdNote")
        status, me = page.evaluate(CALL_I)
        assert (status, me["username"]) == (200, "alice")
    finally:
        context.close()

    i = expected_i(method, pair)
    calls = standin.state.calls
    assert [call.token for call in standin.state.calls_to("notes/create")] == [i]
    assert standin.state.calls_to("i")[-1].token == i
    # Whatever else tobira sent upstream, it never used another credential (nor the raw legacy token).
    assert {call.token for call in calls if call.token is not None} == {i}
    assert [note.text for note in standin.state.notes] == ["Hello from tobira!"]


@pytest.fixture(params=[False, True], ids=["federation-off", "federation-on"])
def fork_pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    yield from start_pair(tmp_path, {}, software="sharkey", version="2024.11.2", federation=request.param)


def test_fork_nodeinfo_end_to_end(fork_pair: Pair) -> None:
    with httpx.Client(timeout=20) as client:
        browser = Browser(fork_pair.tobira.url, fork_pair.standin, client)
        finished = browser.sign_in()
        assert finished.headers["location"] == "/"
        session = browser.session().json()
        assert session["server"] == {
            "software": "sharkey",
            "version": "2024.11.2",
            "name": "Stand-in Misskey",
        }
        assert session["method"] == "miauth"
        page = client.get(fork_pair.tobira.url + "/")
        assert page.status_code == 200
        assert '<p class="hint">Sharkey 2024.11.2 · signed in with MiAuth</p>' in page.text

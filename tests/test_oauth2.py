"""OAuth 2.0 sign-in: PKCE, the client document, and the whole flow against a stand-in in OAuth mode."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.signin import oauth2
from app.signin.flow import choose_method
from app.standin import RunningStandin
from tests.conftest import STANDIN_HOST, Browser, TobiraProcess, free_port, start_tobira

TXID = re.compile(r'name="txid" value="([^"]+)"')


@pytest.fixture(scope="module")
def oauth_server() -> Iterator[RunningStandin]:
    from app.standin import StandinConfig, run_standin_in_thread

    port = free_port(STANDIN_HOST)
    config = StandinConfig(base_url=f"http://{STANDIN_HOST}:{port}", oauth2=True)
    with run_standin_in_thread(config, host=STANDIN_HOST, port=port) as running:
        yield running


@pytest.fixture(scope="module")
def oauth_tobira(
    tmp_path_factory: pytest.TempPathFactory, oauth_server: RunningStandin
) -> Iterator[TobiraProcess]:
    server = start_tobira(
        tmp_path_factory.mktemp("oauth2"),
        TOBIRA_DEV_INSTANCES=oauth_server.url,
        TOBIRA_AUTH_METHODS="oauth2,miauth",
        TOBIRA_PERMISSIONS="read:account,write:notes",
    )
    yield server
    server.stop()


@pytest.fixture
def make_browser(oauth_tobira: TobiraProcess, oauth_server: RunningStandin) -> Iterator[object]:
    clients: list[httpx.Client] = []

    def make() -> Browser:
        clients.append(httpx.Client(timeout=20))
        return Browser(oauth_tobira.url, oauth_server, clients[-1])

    yield make
    for client in clients:
        client.close()


def decide(browser: Browser, consent_url: str, **choice: str) -> str:
    """Open the consent page and submit a decision; returns where the server redirects."""
    page = browser.client.get(consent_url)
    assert page.status_code == 200, page.text
    match = TXID.search(page.text)
    assert match is not None
    answer = browser.client.post(f"{browser.standin.url}/oauth/decision", data={"txid": match[1], **choice})
    assert answer.status_code == 302, answer.text
    location: str = answer.headers["location"]
    return location


def query(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def test_rfc7636_example() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert oauth2.challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


@given(st.integers(min_value=0, max_value=20))
def test_verifiers_are_fresh_and_well_formed(_: int) -> None:
    verifier = oauth2.new_verifier()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43,128}", verifier)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", oauth2.challenge(verifier))
    assert oauth2.new_verifier() != verifier


@pytest.mark.parametrize(
    ("allowed", "miauth", "oauth", "chosen"),
    [
        (["oauth2", "miauth"], True, True, "oauth2"),
        (["miauth", "oauth2"], True, True, "miauth"),
        (["oauth2", "miauth"], True, False, "miauth"),
        (["oauth2", "legacy"], False, True, "oauth2"),
    ],
    ids=["oauth2-first", "miauth-first", "not-advertised", "oauth2-before-legacy"],
)
def test_choose_method_with_oauth2(allowed: list[str], miauth: bool, oauth: bool, chosen: str) -> None:
    assert choose_method(allowed, miauth_supported=miauth, oauth2_supported=oauth) == chosen


def test_client_document(oauth_tobira: TobiraProcess) -> None:
    base = oauth_tobira.url
    page = httpx.get(base + "/client", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert page.headers["link"] == f'<{base}/callback/oauth2>; rel="redirect_uri"'
    assert f'<link rel="redirect_uri" href="{base}/callback/oauth2">' in page.text
    assert '<div class="h-app">' in page.text
    assert f'<a href="{base}/client" class="u-url p-name">tobira</a>' in page.text
    assert f'src="{base}/static/tobira.svg"' in page.text
    document = httpx.get(base + "/client", headers={"Accept": "application/json"}).json()
    assert (document["client_id"], document["client_name"]) == (base + "/client", "tobira")
    assert document["redirect_uris"] == [base + "/callback/oauth2"]
    assert document["logo_uri"] == base + "/static/tobira.svg"


def test_approve_signs_in_with_oauth2(make_browser: object, oauth_server: RunningStandin) -> None:
    browser: Browser = make_browser()  # type: ignore[operator]
    started = browser.start(return_to="/after")
    assert started.status_code == 303, started.text
    consent = started.headers["location"]
    asked = query(consent)
    assert consent.startswith(oauth_server.url + "/oauth/authorize?")
    assert asked["client_id"] == browser.tobira + "/client"
    assert asked["redirect_uri"] == browser.tobira + "/callback/oauth2"
    assert (asked["scope"], asked["code_challenge_method"]) == ("read:account write:notes", "S256")
    callback_url = decide(browser, consent, user="alice")
    assert query(callback_url)["iss"] == oauth_server.url
    finished = browser.callback(callback_url)
    assert finished.status_code == 303, finished.text
    assert finished.headers["location"] == "/after"
    body = browser.session().json()
    assert (body["method"], body["user"]["username"]) == ("oauth2", "alice")
    assert browser.api("i").status_code == 200
    token = oauth_server.state.calls_to("i")[-1].token
    assert isinstance(token, str)
    issued = oauth_server.state.tokens[token]
    assert (issued.user.username, issued.permissions) == ("alice", ("read:account", "write:notes"))
    form = oauth_server.state.oauth2_token_requests[-1]
    assert oauth2.challenge(form["code_verifier"]) == asked["code_challenge"]


def test_deny_is_not_approved(make_browser: object) -> None:
    browser: Browser = make_browser()  # type: ignore[operator]
    callback_url = decide(browser, browser.start().headers["location"], deny="1")
    assert query(callback_url)["error"] == "access_denied"
    answer = browser.callback(callback_url)
    assert answer.status_code == 403
    assert "SIGN_IN_NOT_APPROVED" in answer.text
    assert browser.session().status_code == 401


def test_wrong_iss_is_refused_without_exchange(make_browser: object, oauth_server: RunningStandin) -> None:
    browser: Browser = make_browser()  # type: ignore[operator]
    callback_url = decide(browser, browser.start().headers["location"], user="alice")
    before = len(oauth_server.state.oauth2_token_requests)
    params = {**query(callback_url), "iss": "https://evil.example"}
    answer = browser.callback(f"{browser.tobira}/callback/oauth2?{urlencode(params)}")
    assert answer.status_code == 403
    assert "SIGN_IN_MISMATCH" in answer.text
    assert len(oauth_server.state.oauth2_token_requests) == before
    assert browser.session().status_code == 401


def test_state_started_elsewhere_is_refused(make_browser: object, oauth_server: RunningStandin) -> None:
    attacker: Browser = make_browser()  # type: ignore[operator]
    victim: Browser = make_browser()  # type: ignore[operator]
    callback_url = decide(attacker, attacker.start().headers["location"], user="bob")
    victim.start()
    before = len(oauth_server.state.oauth2_token_requests)
    answer = victim.callback(callback_url)
    assert answer.status_code == 403
    assert "SIGN_IN_MISMATCH" in answer.text
    assert len(oauth_server.state.oauth2_token_requests) == before


def test_replayed_callback_is_refused(make_browser: object) -> None:
    browser: Browser = make_browser()  # type: ignore[operator]
    callback_url = decide(browser, browser.start().headers["location"], user="alice")
    assert browser.callback(callback_url).status_code == 303
    replay = browser.callback(callback_url)
    assert replay.status_code == 400
    assert "NO_SIGN_IN_PENDING" in replay.text


@pytest.mark.parametrize(
    "params", ["", "?state=x&code=y", "?code=y"], ids=["none", "malformed-state", "no-state"]
)
def test_malformed_callback_is_refused(make_browser: object, params: str) -> None:
    browser: Browser = make_browser()  # type: ignore[operator]
    answer = browser.callback(f"{browser.tobira}/callback/oauth2{params}")
    assert answer.status_code == 400
    assert "INVALID_CALLBACK" in answer.text


def test_an_oauth2_sign_in_asks_for_the_metadata_once(tmp_path: Path, oauth_server: RunningStandin) -> None:
    """Discovery fetches the OAuth 2.0 metadata (scopes and offer together); nothing fetches it again, not
    even with discovery's cache off."""
    server = start_tobira(
        tmp_path,
        TOBIRA_DEV_INSTANCES=oauth_server.url,
        TOBIRA_AUTH_METHODS="oauth2,miauth",
        TOBIRA_DISCOVERY_CACHE_SECONDS="0",
    )
    try:
        with httpx.Client(timeout=20) as client:
            browser = Browser(server.url, oauth_server, client)
            before = oauth_server.state.route_hits[".well-known"]
            started = browser.start()
            assert started.headers["location"].startswith(oauth_server.url + "/oauth/authorize?")
            finished = browser.callback(decide(browser, started.headers["location"], user="alice"))
            assert finished.status_code == 303, finished.text
            assert oauth_server.state.route_hits[".well-known"] - before == 1
    finally:
        server.stop()


def test_sharkey_is_signed_in_with_miauth_although_it_publishes_oauth2(tmp_path: Path) -> None:
    """A real Sharkey publishes Misskey's OAuth 2.0 metadata but answers its authorize request with a 500."""
    from app.standin import StandinConfig, run_standin_in_thread

    port = free_port(STANDIN_HOST)
    config = StandinConfig(
        base_url=f"http://{STANDIN_HOST}:{port}",
        software="sharkey",
        version="2025.5.2-dev+g3d130248",
        oauth2=True,
        federation=True,
    )
    with run_standin_in_thread(config, host=STANDIN_HOST, port=port) as sharkey:
        params = {"response_type": "code", "client_id": "https://t.example/client", "code_challenge": "x"}
        refused = httpx.get(
            f"{sharkey.url}/oauth/authorize", params={**params, "code_challenge_method": "S256"}
        )
        assert (refused.status_code, refused.json()) == (500, {"code": "ERR_INVALID_URL"})
        server = start_tobira(tmp_path, TOBIRA_DEV_INSTANCES=sharkey.url, TOBIRA_AUTH_METHODS="oauth2,miauth")
        try:
            with httpx.Client(timeout=20) as client:
                browser = Browser(server.url, sharkey, client)
                started = browser.start()
                assert started.status_code == 303, started.text
                assert started.headers["location"].startswith(sharkey.url + "/miauth/")
                browser.callback(browser.approve(started.headers["location"]))
                assert browser.session().json()["method"] == "miauth"
        finally:
            server.stop()

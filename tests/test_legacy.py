"""The legacy app flow: an old server (no MiAuth) signs in through `app/create` and `auth/session/*`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from app.errors import InstanceBadAnswer, MiAuthUnsupported
from app.hosts import parse_instance
from app.ledger import APP_SECRET_SECONDS, Ledger
from app.signin import legacy
from app.signin.flow import choose_method
from app.standin import RunningStandin
from app.store import open_store
from tests.conftest import STANDIN_HOST, Browser, TobiraProcess, free_port, start_tobira

INSTANCE = parse_instance("misskey.io")


@pytest.fixture(scope="module")
def old_server() -> Iterator[RunningStandin]:
    from app.standin import StandinConfig, run_standin_in_thread

    port = free_port(STANDIN_HOST)
    config = StandinConfig(base_url=f"http://{STANDIN_HOST}:{port}", miauth=False, version="12.20.0")
    with run_standin_in_thread(config, host=STANDIN_HOST, port=port) as running:
        yield running


@pytest.fixture(scope="module")
def legacy_tobira(
    tmp_path_factory: pytest.TempPathFactory, old_server: RunningStandin
) -> Iterator[TobiraProcess]:
    server = start_tobira(
        tmp_path_factory.mktemp("legacy"),
        TOBIRA_DEV_INSTANCES=old_server.url,
        TOBIRA_PERMISSIONS="read:account,write:notes",
    )
    yield server
    server.stop()


@pytest.fixture
def make_browser(legacy_tobira: TobiraProcess, old_server: RunningStandin) -> Iterator[object]:
    clients: list[httpx.Client] = []

    def make() -> Browser:
        clients.append(httpx.Client(timeout=20))
        return Browser(legacy_tobira.url, old_server, clients[-1])

    yield make
    for client in clients:
        client.close()


def approve(browser: Browser, consent_url: str, user: str = "alice") -> str:
    """Open the old server's consent page and Accept; returns the callback URL it redirects to."""
    assert browser.client.get(consent_url).status_code == 200
    answer = browser.client.post(consent_url + "/accept", data={"user": user})
    assert answer.status_code == 303, answer.text
    location: str = answer.headers["location"]
    return location


def token_of(url: str) -> str:
    return urlsplit(url).path.rsplit("/", 1)[-1]


def test_api_key_is_sha256_of_token_then_secret() -> None:
    assert legacy.api_key("abc", "def") == "bef57ec7f53a6d40beb640a780a639c83bc29ac8a9816f1fc6c5c6dcd93c4721"


@pytest.mark.parametrize(
    ("url", "same"),
    [
        ("https://misskey.io/auth/x", True),
        ("HTTPS://MISSKEY.IO/auth/x", True),
        ("http://misskey.io/auth/x", False),
        ("https://misskey.io:8443/auth/x", False),
        ("https://evil.example/auth/x", False),
        ("https://misskey.io.evil.example/auth/x", False),
        ("https://user@misskey.io/auth/x", False),
        ("/auth/x", False),
        ("javascript:alert(1)", False),
        ("https://[::1/", False),
    ],
    ids=["same", "case", "http", "port", "other", "suffix", "userinfo", "relative", "javascript", "broken"],
)
def test_consent_url_must_be_on_the_instance(url: str, same: bool) -> None:
    assert INSTANCE.owns(url) is same


@pytest.mark.parametrize(
    ("allowed", "miauth", "chosen"),
    [
        (["miauth", "legacy"], True, "miauth"),
        (["miauth", "legacy"], False, "legacy"),
        (["legacy", "miauth"], True, "miauth"),
        (["oauth2", "legacy"], False, "legacy"),
        (["legacy"], False, "legacy"),
    ],
    ids=["new-server", "old-server", "legacy-first-new-server", "oauth2-skipped", "legacy-only"],
)
def test_choose_method(allowed: list[str], miauth: bool, chosen: str) -> None:
    assert choose_method(allowed, miauth_supported=miauth) == chosen


@pytest.mark.parametrize(
    ("allowed", "miauth"),
    [(["miauth"], False), (["legacy"], True), (["oauth2"], True)],
    ids=["miauth-only-old-server", "legacy-only-new-server", "oauth2-only"],
)
def test_choose_method_without_a_fit(allowed: list[str], miauth: bool) -> None:
    with pytest.raises(MiAuthUnsupported):
        choose_method(allowed, miauth_supported=miauth)


@pytest.mark.anyio
async def test_app_is_registered_once_per_configuration() -> None:
    created: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/app/create"
        created.append(json.loads(request.content))
        return httpx.Response(200, json={"id": "a", "secret": f"secret{len(created)}"})

    store = open_store("sqlite:///:memory:")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:

        async def register(callback: str) -> str:
            return await legacy.app_secret(
                client,
                Ledger(store),
                INSTANCE,
                name="tobira",
                description="d",
                permissions=["read:account"],
                callback=callback,
            )

        first, again, other = [await register(f"https://t.example/{path}") for path in ("cb", "cb", "b")]
    await store.close()
    assert (first, again, other) == ("secret1", "secret1", "secret2")
    assert created[0] == {
        "name": "tobira",
        "description": "d",
        "permission": ["read:account"],
        "callbackUrl": "https://t.example/cb",
    }


@pytest.mark.anyio
async def test_generate_refuses_a_consent_url_elsewhere() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"token": "abc", "url": "https://evil.example/auth/abc"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(InstanceBadAnswer):
            await legacy.generate(client, INSTANCE, "secret")


def test_old_server_signs_in_end_to_end(make_browser: object, old_server: RunningStandin) -> None:
    browser: Browser = make_browser()  # type: ignore[operator]
    started = browser.start(return_to="/after")
    assert started.status_code == 303, started.text
    consent = started.headers["location"]
    assert consent.startswith(old_server.url + "/auth/")
    callback_url = approve(browser, consent)
    token = token_of(consent)
    assert callback_url == f"{browser.tobira}/callback/legacy?token={token}"

    finished = browser.callback(callback_url)
    assert finished.status_code == 303, finished.text
    assert finished.headers["location"] == "/after"
    assert finished.headers["referrer-policy"] == "no-referrer"
    body = browser.session().json()
    assert (body["method"], body["user"]["username"]) == ("legacy", "alice")

    assert browser.api("i").status_code == 200
    session = old_server.state.legacy_sessions[token]
    assert session.access_token is not None
    expected = hashlib.sha256((session.access_token + session.app.secret).encode()).hexdigest()
    assert old_server.state.calls_to("i")[-1].token == expected
    assert session.app.callback_url == browser.tobira + "/callback/legacy"
    assert session.app.permissions == ("read:account", "write:notes")


def test_a_second_sign_in_reuses_the_registered_app(make_browser: object, old_server: RunningStandin) -> None:
    for _ in range(2):
        browser: Browser = make_browser()  # type: ignore[operator]
        browser.callback(approve(browser, browser.start().headers["location"]))
    assert len(old_server.state.legacy_apps) == 1


def test_deny_then_callback_is_not_approved(make_browser: object) -> None:
    browser: Browser = make_browser()  # type: ignore[operator]
    consent = browser.start().headers["location"]
    assert browser.client.post(consent + "/deny").status_code == 200
    answer = browser.callback(f"{browser.tobira}/callback/legacy?token={token_of(consent)}")
    assert answer.status_code == 403
    assert "SIGN_IN_NOT_APPROVED" in answer.text
    assert browser.session().status_code == 401


def test_token_started_elsewhere_is_refused_without_userkey(
    make_browser: object, old_server: RunningStandin
) -> None:
    attacker: Browser = make_browser()  # type: ignore[operator]
    victim: Browser = make_browser()  # type: ignore[operator]
    callback_url = approve(attacker, attacker.start().headers["location"], "bob")
    victim.start()
    answer = victim.callback(callback_url)
    assert answer.status_code == 403
    assert "SIGN_IN_MISMATCH" in answer.text
    assert urlsplit(callback_url).query.removeprefix("token=") not in old_server.state.userkey_calls
    assert victim.session().status_code == 401


def test_legacy_token_on_the_miauth_callback_is_refused(make_browser: object) -> None:
    browser: Browser = make_browser()  # type: ignore[operator]
    callback_url = approve(browser, browser.start().headers["location"])
    token = urlsplit(callback_url).query.removeprefix("token=")
    answer = browser.callback(f"{browser.tobira}/callback?session={token}")
    assert answer.status_code == 403
    assert "SIGN_IN_MISMATCH" in answer.text


def test_replayed_callback_is_refused(make_browser: object) -> None:
    browser: Browser = make_browser()  # type: ignore[operator]
    callback_url = approve(browser, browser.start().headers["location"])
    assert browser.callback(callback_url).status_code == 303
    replay = browser.callback(callback_url)
    assert replay.status_code == 400
    assert "NO_SIGN_IN_PENDING" in replay.text


@pytest.mark.parametrize("query", ["", "?token=", "?token=%3Cscript%3E"], ids=["none", "empty", "markup"])
def test_malformed_legacy_callback_is_refused(make_browser: object, query: str) -> None:
    browser: Browser = make_browser()  # type: ignore[operator]
    answer = browser.callback(f"{browser.tobira}/callback/legacy{query}")
    assert answer.status_code == 400
    assert "INVALID_CALLBACK" in answer.text


def test_miauth_only_refuses_an_old_server(tmp_path: Path, old_server: RunningStandin) -> None:
    server = start_tobira(tmp_path, TOBIRA_DEV_INSTANCES=old_server.url, TOBIRA_AUTH_METHODS="miauth")
    try:
        with httpx.Client(timeout=20) as client:
            answer = Browser(server.url, old_server, client).start()
            assert answer.status_code == 502
            assert "MIAUTH_UNSUPPORTED" in answer.text
    finally:
        server.stop()


@pytest.mark.anyio
async def test_an_app_secret_expires_unless_used() -> None:
    created: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        created.append(request.url.path)
        return httpx.Response(200, json={"id": "a", "secret": f"secret{len(created)}"})

    now = [1_000_000.0]
    store = open_store("sqlite:///:memory:", clock=lambda: now[0])
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:

        async def secret_after(days: float) -> str:
            now[0] += days * 24 * 3600
            return await legacy.app_secret(
                client,
                Ledger(store),
                INSTANCE,
                name="tobira",
                description="d",
                permissions=[],
                callback="https://t/cb",
            )

        used = [await secret_after(0), await secret_after(29), await secret_after(29)]  # each use renews it
        forgotten = await secret_after(31)
    await store.close()
    assert used == ["secret1", "secret1", "secret1"]
    assert forgotten == "secret2"
    assert APP_SECRET_SECONDS == 30 * 24 * 3600

"""An app with Misskey permissions, signing in on a server older than MiAuth: tobira registers an app of
the app's own name there (the legacy flow) and hands the app the API key the flow gives."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from app.standin import RunningStandin
from tests.conftest import STANDIN_HOST, Browser, TobiraProcess, free_port, start_tobira
from tests.oidc_support import APP_SECRET, authorize, clients_file, query, to_page, token_request

NOTES_CB = "http://127.0.0.1:9/notes/cb"


@pytest.fixture(scope="module")
def standin() -> Iterator[RunningStandin]:
    from app.standin import StandinConfig, run_standin_in_thread

    port = free_port(STANDIN_HOST)
    config = StandinConfig(base_url=f"http://{STANDIN_HOST}:{port}", miauth=False, version="12.20.0")
    with run_standin_in_thread(config, host=STANDIN_HOST, port=port) as running:
        yield running


@pytest.fixture(scope="module")
def tobira(tmp_path_factory: pytest.TempPathFactory, standin: RunningStandin) -> Iterator[TobiraProcess]:
    folder = tmp_path_factory.mktemp("tobira-oidc-legacy")
    server = start_tobira(
        folder,
        TOBIRA_DEV_INSTANCES=standin.url,
        TOBIRA_OIDC_CLIENTS=str(clients_file(folder, "http://127.0.0.1:9")),
    )
    yield server
    server.stop()


def test_an_app_with_permissions_on_an_old_server(browser: Browser, tobira: TobiraProcess) -> None:
    params = {
        "client_id": "notes",
        "redirect_uri": NOTES_CB,
        "response_type": "code",
        "scope": "openid profile",
    }
    authorization, _ = to_page(browser, authorize(browser, **params, state="old"))
    started = browser.post_form(
        "/oidc/authorize/login",
        {"authorization": authorization, "instance": f"{STANDIN_HOST}:{browser.standin.port}"},
    )
    assert started.status_code == 303, started.text
    consent = started.headers["location"]
    page = browser.client.get(consent)
    assert page.status_code == 200 and "Notes Helper" in page.text  # the old server names the app itself
    accepted = browser.client.post(consent + "/accept", data={"user": "alice"})
    assert accepted.status_code == 303, accepted.text
    back = browser.callback(accepted.headers["location"])
    assert back.status_code == 303 and back.headers["location"].startswith(NOTES_CB), back.text
    answer = query(back.headers["location"])
    assert answer["state"] == "old"
    form = {"grant_type": "authorization_code", "code": answer["code"], "redirect_uri": NOTES_CB}
    token = token_request(tobira.url, form, auth=("notes", APP_SECRET))
    assert token.status_code == 200, token.text
    me = httpx.post(browser.standin.url + "/api/i", json={"i": token.json()["misskey_access_token"]})
    assert me.status_code == 200 and me.json()["username"] == "alice"
    assert browser.session().status_code == 401  # the app's sign-in is not tobira's own session

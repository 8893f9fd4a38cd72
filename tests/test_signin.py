"""The whole sign-in as a person meets it: tobira and the stand-in as real servers, driven over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from app.standin import RunningStandin
from tests.conftest import STANDIN_HOST, Browser, TobiraProcess, random_session, session_param, start_tobira


def test_approve_signs_in_and_session_shows_the_user(browser: Browser) -> None:
    started = browser.start()
    assert started.status_code == 303
    consent = urlsplit(started.headers["location"])
    assert f"{consent.scheme}://{consent.netloc}" == browser.standin.url
    query = parse_qs(consent.query)
    assert query["name"] == ["tobira"]
    assert query["callback"] == [browser.tobira + "/callback"]
    assert query["permission"] == ["read:account,write:notes,write:drive"]
    assert "permission=read:account,write:notes,write:drive" in consent.query

    finished = browser.callback(browser.approve(started.headers["location"], "alice"))
    assert finished.status_code == 303
    assert finished.headers["location"] == "/"
    assert finished.headers["cache-control"] == "no-store"
    assert finished.headers["referrer-policy"] == "no-referrer"

    answer = browser.session()
    assert answer.status_code == 200
    body = answer.json()
    assert body["instance"] == f"{STANDIN_HOST}:{browser.standin.port}"
    assert body["user"]["username"] == "alice"
    assert set(body["user"]) == {"id", "username", "host", "name", "avatarUrl"}
    assert "token" not in answer.text


def test_session_cookie_attributes(browser: Browser) -> None:
    finished = browser.sign_in()
    cookies = [value for name, value in finished.headers.multi_items() if name == "set-cookie"]
    session_cookie = next(c for c in cookies if c.startswith("tobira="))
    attributes = [part.strip().lower() for part in session_cookie.split(";")[1:]]
    assert "httponly" in attributes
    assert "path=/" in attributes
    assert "samesite=lax" in attributes
    assert not any(a.startswith("domain") for a in attributes)
    assert "secure" not in attributes  # plain http in this test; https is covered by the unit tests
    assert len(session_cookie.split(";")[0]) < 4000


def test_deny_leaves_the_browser_on_the_instance_and_callback_is_refused(browser: Browser) -> None:
    started = browser.start()
    session = urlsplit(started.headers["location"]).path.rsplit("/", 1)[-1]
    denied = browser.client.post(f"{browser.standin.url}/miauth/{session}/deny")
    assert denied.status_code == 200
    assert "location" not in denied.headers
    # The person comes back by hand (or a stale link): the server says ok:false.
    answer = browser.callback(f"{browser.tobira}/callback?session={session}")
    assert answer.status_code == 403
    assert "SIGN_IN_NOT_APPROVED" in answer.text
    assert 'action="/login"' in answer.text
    assert browser.session().status_code == 401


def test_session_started_in_another_browser_is_refused_without_check(
    browser: Browser, new_browser: object, standin: object
) -> None:
    attacker: Browser = new_browser()  # type: ignore[operator]
    started = attacker.start()
    callback_url = attacker.approve(started.headers["location"], "bob")
    victim = browser
    victim.start()  # the victim has a sign-in of their own under way
    answer = victim.callback(callback_url)
    assert answer.status_code == 403
    assert "SIGN_IN_MISMATCH" in answer.text
    assert victim.standin.state.check_count(session_param(callback_url)) == 0
    assert victim.session().status_code == 401


def test_callback_without_any_sign_in_under_way_is_400(browser: Browser) -> None:
    answer = browser.callback(f"{browser.tobira}/callback?session={random_session()}")
    assert answer.status_code == 400
    assert "NO_SIGN_IN_PENDING" in answer.text


@pytest.mark.parametrize("query", ["", "?session=", "?session=not-a-uuid", "?session=%00"])
def test_malformed_callback_is_400(browser: Browser, query: str) -> None:
    browser.start()
    answer = browser.callback(f"{browser.tobira}/callback{query}")
    assert answer.status_code == 400


def test_callback_replay_is_refused_and_check_called_once(browser: Browser) -> None:
    started = browser.start()
    callback_url = browser.approve(started.headers["location"])
    assert browser.callback(callback_url).status_code == 303
    replay = browser.callback(callback_url)
    assert replay.status_code == 400
    assert browser.standin.state.check_count(session_param(callback_url)) == 1


def test_two_users_at_once_do_not_mix(new_browser: object) -> None:
    alice: Browser = new_browser()  # type: ignore[operator]
    bob: Browser = new_browser()  # type: ignore[operator]
    alice_start, bob_start = alice.start(), bob.start()
    bob_callback = bob.approve(bob_start.headers["location"], "bob")
    alice_callback = alice.approve(alice_start.headers["location"], "alice")
    assert bob.callback(bob_callback).status_code == 303
    assert alice.callback(alice_callback).status_code == 303
    assert alice.session().json()["user"]["username"] == "alice"
    assert bob.session().json()["user"]["username"] == "bob"


def test_two_tabs_in_one_browser_both_finish(browser: Browser) -> None:
    first, second = browser.start(return_to="/first"), browser.start(return_to="/second")
    second_done = browser.callback(browser.approve(second.headers["location"], "bob"))
    first_done = browser.callback(browser.approve(first.headers["location"], "alice"))
    assert (second_done.status_code, second_done.headers["location"]) == (303, "/second")
    assert (first_done.status_code, first_done.headers["location"]) == (303, "/first")
    assert browser.session().json()["user"]["username"] == "alice"


@pytest.mark.parametrize(
    ("return_to", "expected"),
    [
        ("/dashboard?tab=1", "/dashboard?tab=1"),
        ("//evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("/%2F%2Fevil.example", "/"),
    ],
)
def test_return_to_only_same_origin_paths(browser: Browser, return_to: str, expected: str) -> None:
    assert browser.sign_in(return_to=return_to).headers["location"] == expected


def test_get_login_with_instance_starts_at_once(browser: Browser) -> None:
    answer = browser.client.get(
        f"{browser.tobira}/login",
        params={"instance": f"{STANDIN_HOST}:{browser.standin.port}", "return_to": "/x"},
    )
    assert answer.status_code == 303
    assert answer.headers["location"].startswith(browser.standin.url + "/miauth/")


def test_login_form_is_a_plain_form(browser: Browser) -> None:
    page = browser.client.get(browser.tobira + "/login")
    assert page.status_code == 200
    assert '<form method="post" action="/login"' in page.text
    assert 'name="instance"' in page.text


@pytest.mark.parametrize(
    ("typed", "status", "code"),
    [
        ("", 400, "INVALID_INSTANCE"),
        ("127.0.0.1", 400, "INVALID_INSTANCE"),
        ("localhost", 400, "INVALID_INSTANCE"),
        ("http://misskey.io", 400, "INVALID_INSTANCE"),
        ("https://misskey.io:8443", 400, "INVALID_INSTANCE"),
        ("https://user@misskey.io", 400, "INVALID_INSTANCE"),
        ("misskey.local", 400, "INVALID_INSTANCE"),
    ],
)
def test_bad_instances_get_a_clear_page(browser: Browser, typed: str, status: int, code: str) -> None:
    answer = browser.start(typed)
    assert answer.status_code == status
    assert code in answer.text
    assert answer.headers["content-type"].startswith("text/html")


def test_logout_ends_the_session_and_a_replayed_cookie_is_refused(browser: Browser) -> None:
    browser.sign_in()
    cookie = browser.client.cookies["tobira"]
    answer = browser.post_form("/logout", {})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/signed-out"
    page = browser.client.get(browser.tobira + answer.headers["location"])
    assert "Settings › Apps" in page.text  # this stand-in refuses i/revoke-token like 2026.5.4
    assert f"{browser.standin.url}/settings/apps" in page.text
    with httpx.Client() as replayer:
        replayer.cookies.set("tobira", cookie)
        assert replayer.get(browser.tobira + "/session").status_code == 401
        replay = replayer.post(f"{browser.tobira}/api/i", json={}, headers={"Origin": browser.tobira})
        assert replay.status_code == 401
        assert replay.json()["error"]["code"] == "CREDENTIAL_REQUIRED"


def test_logout_cross_site_is_refused(browser: Browser) -> None:
    browser.sign_in()
    answer = browser.client.post(browser.tobira + "/logout", headers={"Origin": "https://evil.example"})
    assert answer.status_code == 403
    assert browser.session().status_code == 200


def test_logout_revokes_where_the_server_allows_it(tmp_path: Path) -> None:
    from app.standin import StandinConfig, run_standin_in_thread
    from tests.conftest import free_port

    port = free_port(STANDIN_HOST)
    config = StandinConfig(base_url=f"http://{STANDIN_HOST}:{port}", revoke_token_self=True)
    with run_standin_in_thread(config, host=STANDIN_HOST, port=port) as standin:
        server = start_tobira(tmp_path, TOBIRA_DEV_INSTANCES=standin.url)
        try:
            with httpx.Client(timeout=20) as client:
                browser = Browser(server.url, standin, client)
                browser.sign_in()
                assert browser.api("i").status_code == 200
                answer = browser.post_form("/logout", {})
                page = client.get(server.url + answer.headers["location"])
                assert "has been withdrawn" in page.text
                token = standin.state.calls[-1].token
                assert token is not None and standin.state.is_revoked(token)
        finally:
            server.stop()


def test_logout_replay_refused_with_either_store(
    tmp_path: Path, standin: RunningStandin, store_url: str
) -> None:
    server = start_tobira(tmp_path, TOBIRA_DEV_INSTANCES=standin.url, TOBIRA_STORE_URL=store_url)
    try:
        with httpx.Client(timeout=20) as client:
            browser = Browser(server.url, standin, client)
            browser.sign_in()
            cookie = client.cookies["tobira"]
            assert browser.post_form("/logout", {}).status_code == 303
            client.cookies.set("tobira", cookie)
            assert browser.session().status_code == 401
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("methods", "status", "expected"),
    [
        ({}, 303, "/auth/"),
        ({"TOBIRA_AUTH_METHODS": "miauth"}, 502, "MIAUTH_UNSUPPORTED"),
    ],
    ids=["legacy-allowed", "miauth-only"],
)
def test_instance_without_miauth(tmp_path: Path, methods: dict[str, str], status: int, expected: str) -> None:
    """An old server signs in through the legacy app flow, unless the operator allows MiAuth only."""
    from app.standin import StandinConfig, run_standin_in_thread
    from tests.conftest import free_port

    port = free_port(STANDIN_HOST)
    config = StandinConfig(base_url=f"http://{STANDIN_HOST}:{port}", miauth=False, version="12.20.0")
    with run_standin_in_thread(config, host=STANDIN_HOST, port=port) as standin:
        server = start_tobira(tmp_path, TOBIRA_DEV_INSTANCES=standin.url, **methods)
        try:
            with httpx.Client(timeout=20) as client:
                answer = Browser(server.url, standin, client).start()
                assert answer.status_code == status
                shown = answer.headers.get("location", answer.text)
                assert expected in shown
        finally:
            server.stop()


def test_a_server_that_is_not_misskey_gets_a_clear_page(tmp_path: Path, tobira: TobiraProcess) -> None:
    # tobira itself is an HTTP server that is not Misskey: allow it as a dev instance of a second tobira.
    server = start_tobira(tmp_path, TOBIRA_DEV_INSTANCES=tobira.url)
    try:
        answer = httpx.post(
            server.url + "/login", data={"instance": tobira.url}, headers={"Origin": server.url}
        )
        assert answer.status_code == 502
        assert "NOT_MISSKEY" in answer.text
    finally:
        server.stop()


def test_a_server_that_is_down_gets_a_clear_page(tmp_path: Path) -> None:
    from tests.conftest import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    server = start_tobira(tmp_path, TOBIRA_DEV_INSTANCES=dead)
    try:
        answer = httpx.post(server.url + "/login", data={"instance": dead}, headers={"Origin": server.url})
        assert answer.status_code == 502
        assert "INSTANCE_UNREACHABLE" in answer.text
    finally:
        server.stop()


CROSS_SITE_POSTS = [
    pytest.param({"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}, id="other-origin"),
    pytest.param({"Sec-Fetch-Site": "cross-site"}, id="fetch-metadata-only"),
    pytest.param({}, id="neither-header"),
]


@pytest.mark.parametrize("headers", CROSS_SITE_POSTS)
def test_a_sign_in_another_site_posts_lands_on_the_filled_form(
    browser: Browser, standin: RunningStandin, headers: dict[str, str]
) -> None:
    """Login CSRF: another site's form names a server that approves at once. Nothing starts: the person
    sees tobira's form, filled in, and their own session stays theirs."""
    browser.sign_in("alice")
    hits = standin.state.route_hits["api/meta"]
    typed = f"{STANDIN_HOST}:{standin.port}"
    answer = browser.client.post(
        browser.tobira + "/login", data={"instance": typed, "return_to": "/after"}, headers=headers
    )
    assert answer.status_code == 200
    assert f'value="{typed}"' in answer.text
    assert 'name="return_to" value="/after"' in answer.text
    assert 'class="notice"' in answer.text
    assert "set-cookie" not in answer.headers
    assert standin.state.route_hits["api/meta"] == hits
    assert browser.session().json()["user"]["username"] == "alice"
    # One click of the person's own, on tobira's page, goes on.
    assert browser.start(typed, return_to="/after").status_code == 303


@pytest.mark.parametrize(
    ("fetch_site", "status"), [("cross-site", 200), ("same-site", 200), ("none", 303), ("same-origin", 303)]
)
def test_a_sign_in_link_from_another_site_lands_on_the_filled_form(
    browser: Browser, standin: RunningStandin, fetch_site: str, status: int
) -> None:
    typed = f"{STANDIN_HOST}:{standin.port}"
    answer = browser.client.get(
        browser.tobira + "/login", params={"instance": typed}, headers={"Sec-Fetch-Site": fetch_site}
    )
    assert answer.status_code == status
    if status == 200:
        assert f'value="{typed}"' in answer.text
        assert 'class="notice"' in answer.text
    else:
        assert answer.headers["location"].startswith(standin.url + "/miauth/")


def test_the_signed_out_page_believes_no_link(browser: Browser) -> None:
    """`/signed-out` shows only what tobira recorded about this browser's sign-out, never its query."""
    page = browser.client.get(browser.tobira + "/signed-out?host=misskey-io-login.net&revoked=0")
    assert page.status_code == 200
    assert "misskey-io-login.net" not in page.text
    assert "Settings › Apps" not in page.text
    claimed = browser.client.get(browser.tobira + "/signed-out?host=misskey.io&revoked=1")
    assert "misskey.io" not in claimed.text and "withdrawn" not in claimed.text


def test_the_sign_out_notice_is_this_browsers_own(browser: Browser, new_browser: Any) -> None:
    browser.sign_in()
    browser.post_form("/logout", {})
    notice = browser.client.cookies["tobira-signed-out"]
    host = f"{STANDIN_HOST}:{browser.standin.port}"
    # The same browser sees it again, in another language too.
    again = browser.client.get(browser.tobira + "/signed-out", params={"lang": "ja"})
    assert host in again.text and "/settings/apps" in again.text
    # Another browser, or the notice altered by one character, sees nothing of it.
    other: Browser = new_browser()
    assert host not in other.client.get(other.tobira + "/signed-out").text
    # One character of the signed data changed (the last one of a signature may only hold padding bits).
    tampered = ("A" if notice[0] != "A" else "B") + notice[1:]
    other.client.cookies.set("tobira-signed-out", tampered)
    assert host not in other.client.get(other.tobira + "/signed-out").text


def test_only_servers_signed_in_with_are_offered_again(browser: Browser, standin: RunningStandin) -> None:
    host = f"{STANDIN_HOST}:{standin.port}"
    assert browser.start("localhost").status_code == 400
    assert "tobira-recent" not in browser.client.cookies
    browser.sign_in()
    assert browser.client.cookies["tobira-recent"] == host
    form = browser.client.get(browser.tobira + "/login", params={"return_to": "/after"}).text
    assert (
        f'<li><a href="/login?instance={host.replace(":", "%3A")}&amp;return_to=%2Fafter">{host}</a></li>'
        in form
    )


def test_a_recent_list_is_parsed_again_when_read(browser: Browser, standin: RunningStandin) -> None:
    host = f"{STANDIN_HOST}:{standin.port}"
    browser.client.cookies.set("tobira-recent", f"javascript:alert(1)|localhost|{host}|127.0.0.1|{host}")
    form = browser.client.get(browser.tobira + "/login").text
    assert form.count('<li><a href="/login?instance=') == 1
    assert "javascript" not in form and "localhost" not in form


def test_forgetting_the_recent_list(browser: Browser) -> None:
    browser.sign_in()
    refused = browser.client.post(
        browser.tobira + "/forget-recent", headers={"Origin": "https://evil.example"}
    )
    assert refused.status_code == 403
    assert "tobira-recent" in browser.client.cookies
    answer = browser.post_form("/forget-recent", {"return_to": "/after"})
    assert (answer.status_code, answer.headers["location"]) == (303, "/login?return_to=%2Fafter")
    assert "tobira-recent" not in browser.client.cookies

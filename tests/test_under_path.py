"""tobira under a path (`TOBIRA_PUBLIC_URL=http://127.0.0.1:PORT/misskey`), a real process, paths passed as a
reverse proxy passes them: every page, link, asset, form, redirect and cookie stays under the prefix; a
sign-in, the proxy and streaming work there; outside it nothing answers but the health check."""

from __future__ import annotations

import json
from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from app.standin import RunningStandin
from tests.conftest import Browser, TobiraProcess, start_tobira
from tests.oidc_support import clients_file

BASE = "/misskey"
TIMEOUT = 5


class Links(HTMLParser):
    """Every URL a page names: links, assets, form actions; and the `data-base` its scripts read."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.data_base: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src", "action", "formaction") and value is not None:
                self.urls.append(value)
            if tag == "body" and name == "data-base":
                self.data_base = value


def links(html: str) -> Links:
    parser = Links()
    parser.feed(html)
    return parser


@pytest.fixture(scope="module")
def tobira(tmp_path_factory: pytest.TempPathFactory, standin: RunningStandin) -> Iterator[TobiraProcess]:
    folder = tmp_path_factory.mktemp("under-path")
    server = start_tobira(
        folder,
        base_path=BASE,
        TOBIRA_DEV_INSTANCES=standin.url,
        TOBIRA_PERMISSIONS="read:account,write:notes",
        TOBIRA_OIDC_CLIENTS=str(clients_file(folder, "http://127.0.0.1:9")),
    )
    yield server
    server.stop()


def origin_of(tobira: TobiraProcess) -> str:
    return tobira.url.removesuffix(BASE)


@pytest.fixture
def browser(tobira: TobiraProcess, standin: RunningStandin) -> Iterator[Browser]:
    with httpx.Client(timeout=20) as client:
        yield Browser(tobira.url, standin, client, origin=origin_of(tobira))


def api(browser: Browser, endpoint: str, body: object = None) -> httpx.Response:
    return browser.client.post(
        f"{browser.tobira}/api/{endpoint}", json=body or {}, headers={"Origin": browser.origin or ""}
    )


def check_page(browser: Browser, path: str, status: int = 200) -> Links:
    """Fetch a page under the prefix: every URL on it is under the prefix (or elsewhere entirely), every
    asset of tobira's loads."""
    answer = browser.client.get(browser.tobira + path)
    assert answer.status_code == status, (path, answer.text)
    assert answer.headers["content-type"].startswith("text/html")
    found = links(answer.text)
    assert found.data_base == BASE
    assert found.urls, path
    origin = browser.origin or ""
    for url in found.urls:
        if url.startswith(origin):
            url = url.removeprefix(origin)
        elif url.startswith(("http://", "https://")):
            continue  # a server's own page, e.g. a Misskey settings link
        assert url.startswith(BASE + "/"), (path, url)
        if url.startswith(BASE + "/static/"):
            assert browser.client.get(origin + url).status_code == 200, url
    return found


def assert_cookies_under_prefix(answer: httpx.Response) -> None:
    cookies = answer.headers.get_list("set-cookie")
    assert cookies
    for cookie in cookies:
        assert f"Path={BASE}" in cookie.split("; "), cookie


def test_every_page_link_asset_and_form_is_under_the_prefix(browser: Browser) -> None:
    for path in ("/", "/login", "/button", "/signed-out", "/login?return_to=/misskey/button&lang=fr"):
        check_page(browser, path)
    check_page(browser, "/nothing-here", 404)
    error = browser.post_form("/login", {"instance": "not a server!"})
    assert error.status_code == 400
    assert all(url.startswith(BASE + "/") for url in links(error.text).urls if url.startswith("/"))
    # The language links of the page carry the prefix too, and the language cookie is for it.
    french = browser.client.get(browser.tobira + "/login?lang=fr")
    assert f'href="{BASE}/login?lang=ja"' in french.text
    assert_cookies_under_prefix(french)


def test_the_button_snippet_and_the_client_document_name_the_public_url(browser: Browser) -> None:
    public = browser.tobira
    snippet = browser.client.get(public + "/button").text
    assert f"{public}/static/button.js" in snippet
    assert f"{public}/login" in snippet
    # The button's files are embeddable by other sites' pages, under the prefix as at the root.
    script = browser.client.get(public + "/static/button.js")
    assert script.headers["cross-origin-resource-policy"] == "cross-origin"
    assert script.headers["access-control-allow-origin"] == "*"
    document = browser.client.get(public + "/client", headers={"Accept": "application/json"}).json()
    assert document["client_id"] == public + "/client"
    assert document["redirect_uris"] == [public + "/callback/oauth2"]


def test_outside_the_prefix_is_a_404_but_the_health_check_answers(browser: Browser) -> None:
    origin = browser.origin
    for path in ("/", "/login", "/static/tobira.css", "/openapi.json", "/callback", "/misskeyx/login"):
        assert browser.client.get(f"{origin}{path}").status_code == 404, path
    assert (
        browser.client.post(f"{origin}/api/i", json={}, headers={"Origin": origin or ""}).status_code == 404
    )
    assert browser.client.get(f"{origin}/healthz").status_code == 200
    assert browser.client.get(f"{origin}{BASE}/healthz").status_code == 200
    bare = browser.client.get(f"{origin}{BASE}?lang=ja")
    assert (bare.status_code, bare.headers["location"]) == (308, f"{BASE}/?lang=ja")


def test_openapi_and_openid_discovery_name_the_prefix(browser: Browser) -> None:
    document = browser.client.get(browser.tobira + "/openapi.json").json()
    assert document["servers"] == [{"url": BASE}]
    assert "/login" in document["paths"]
    discovery = browser.client.get(browser.tobira + "/.well-known/openid-configuration").json()
    assert discovery["issuer"] == browser.tobira
    for name in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"):
        assert discovery[name].startswith(browser.tobira + "/oidc/"), discovery[name]
    assert browser.client.get(discovery["jwks_uri"]).status_code == 200
    authorize = browser.client.get(
        browser.tobira + "/oidc/authorize",
        params={
            "client_id": "spa",
            "redirect_uri": "http://127.0.0.1:9/spa/cb",
            "response_type": "code",
            "scope": "openid",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
        },
    )
    assert authorize.status_code == 303
    assert authorize.headers["location"].startswith(f"{BASE}/oidc/authorize/page?authorization=")
    check_page(browser, authorize.headers["location"].removeprefix(BASE))


def test_forward_authentication_answers_under_the_prefix(browser: Browser) -> None:
    answer = browser.client.get(
        browser.tobira + "/auth/request", headers={"X-Original-URL": (browser.origin or "") + "/app/"}
    )
    assert answer.status_code == 401
    assert answer.headers["location"].startswith(browser.tobira + "/login")


def test_sign_in_under_the_prefix_end_to_end(browser: Browser, standin: RunningStandin) -> None:
    started = browser.start(return_to=f"{BASE}/button")
    assert started.status_code == 303
    consent = parse_qs(urlsplit(started.headers["location"]).query)
    assert consent["callback"] == [browser.tobira + "/callback"]
    assert_cookies_under_prefix(started)
    callback = browser.approve(started.headers["location"])
    assert callback.startswith(browser.tobira + "/callback?session=")
    finished = browser.callback(callback)
    assert (finished.status_code, finished.headers["location"]) == (303, f"{BASE}/button")
    assert_cookies_under_prefix(finished)
    session = browser.session().json()
    assert session["user"]["username"] == "alice"
    signed_in = check_page(browser, "/")
    assert f"{BASE}/static/playground.js" in signed_in.urls
    assert api(browser, "i").json()["username"] == "alice"
    out = browser.post_form("/logout", {})
    assert (out.status_code, out.headers["location"]) == (303, f"{BASE}/signed-out")
    assert_cookies_under_prefix(out)
    assert browser.session().status_code == 401


@pytest.mark.parametrize(
    ("return_to", "lands_on"),
    [
        (f"{BASE}/button", f"{BASE}/button"),
        (BASE, BASE),
        ("/", f"{BASE}/"),
        ("/elsewhere", f"{BASE}/"),
        (f"{BASE}x/login", f"{BASE}/"),
        (f"{BASE}/../admin", f"{BASE}/"),
        (f"{BASE}/%2e%2e/admin", f"{BASE}/"),
        ("//evil.example/", f"{BASE}/"),
    ],
)
def test_return_to_stays_under_the_prefix(browser: Browser, return_to: str, lands_on: str) -> None:
    assert browser.sign_in(return_to=return_to).headers["location"] == lands_on


def test_forget_recent_stays_under_the_prefix(browser: Browser) -> None:
    browser.sign_in()
    answer = browser.post_form("/forget-recent", {"return_to": f"{BASE}/button"})
    assert answer.status_code == 303
    assert answer.headers["location"] == f"{BASE}/login?return_to=%2Fmisskey%2Fbutton"
    assert_cookies_under_prefix(answer)


@pytest.mark.anyio
async def test_streaming_under_the_prefix(browser: Browser) -> None:
    await anyio.to_thread.run_sync(browser.sign_in)
    cookie = browser.client.cookies.get("tobira")
    ws = "ws" + browser.tobira.removeprefix("http") + "/streaming"
    origin = Origin(browser.origin or "")
    async with connect(ws, origin=origin, additional_headers={"Cookie": f"tobira={cookie}"}) as stream:
        frame = {"type": "connect", "body": {"channel": "homeTimeline", "id": "home", "pong": True}}
        await stream.send(json.dumps(frame))
        with anyio.fail_after(TIMEOUT):
            assert json.loads(await stream.recv())["type"] == "connected"
        note = await anyio.to_thread.run_sync(lambda: api(browser, "notes/create", {"text": "under a path"}))
        assert note.status_code == 200, note.text
        with anyio.fail_after(TIMEOUT):
            event = json.loads(await stream.recv())
    assert event["body"]["body"]["text"] == "under a path"
    outside = "ws" + (browser.origin or "").removeprefix("http") + "/streaming"
    with pytest.raises(InvalidStatus):
        async with connect(outside, origin=origin, additional_headers={"Cookie": f"tobira={cookie}"}):
            pass

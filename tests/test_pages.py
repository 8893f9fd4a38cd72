"""The pages and the sign-in form's server lookup: `/lookup` against the stand-in (a real tobira process, and
an in-process app where a test needs its own settings), pages rendered signed in and out, touch targets in the
stylesheet, and nothing loaded from anywhere but tobira itself."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import load_settings
from app.errors import ErrorCode
from app.main import create_app
from app.standin import RunningStandin, StandinConfig, run_standin_in_thread
from app.standin.entities import ICON_PATH
from tests.conftest import STANDIN_HOST, Browser, TobiraProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
KEY = "k" * 32
LANGUAGES = {"ja": "ja", "en": "en", "fr": "fr", "ko": "ko", "zh-TW": "zh-Hant", "zh-CN": "zh-Hans"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def lookup(tobira: TobiraProcess, instance: str, **headers: str) -> httpx.Response:
    return httpx.get(tobira.url + "/lookup", params={"instance": instance}, headers=headers, timeout=20)


# --- /lookup against the stand-in ------------------------------------------------------------------------


def test_lookup_tells_what_the_server_is(tobira: TobiraProcess, standin: RunningStandin) -> None:
    answer = lookup(tobira, f"{STANDIN_HOST}:{standin.port}", **{"Sec-Fetch-Site": "same-origin"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {
        "host": f"{STANDIN_HOST}:{standin.port}",
        "name": "Stand-in Misskey",
        "iconUrl": standin.url + ICON_PATH,
        "software": "misskey",
        "softwareName": "Misskey",
        "version": "2026.5.4",
        "miauth": True,
        "missingPermissions": [],  # the default stand-in publishes no list of its own
    }


def test_lookup_accepts_what_the_form_accepts(tobira: TobiraProcess, standin: RunningStandin) -> None:
    assert lookup(tobira, standin.url).json()["host"] == f"{STANDIN_HOST}:{standin.port}"


@pytest.mark.parametrize(
    ("typed", "status", "code"),
    [
        ("", 400, "INVALID_INSTANCE"),
        ("localhost", 400, "INVALID_INSTANCE"),
        ("10.0.0.1", 400, "INVALID_INSTANCE"),
        ("https://misskey.io/notes/x", 400, "INVALID_INSTANCE"),
        ("x" * 2049, 400, "INVALID_BODY"),
    ],
    ids=["empty", "localhost", "ip", "path", "too-long"],
)
def test_lookup_refuses_what_the_form_refuses(
    tobira: TobiraProcess, typed: str, status: int, code: str
) -> None:
    answer = lookup(tobira, typed)
    assert answer.status_code == status
    assert answer.json()["error"]["code"] == code


@pytest.mark.parametrize("site", ["cross-site", "same-site", "none"])
def test_lookup_answers_only_tobiras_own_pages(
    tobira: TobiraProcess, standin: RunningStandin, site: str
) -> None:
    answer = lookup(tobira, f"{STANDIN_HOST}:{standin.port}", **{"Sec-Fetch-Site": site})
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "CROSS_SITE_REQUEST"


def test_lookup_is_in_the_api_document_with_its_errors(tobira: TobiraProcess) -> None:
    responses = httpx.get(tobira.url + "/openapi.json").json()["paths"]["/lookup"]["get"]["responses"]
    assert {"200", "403", "429", "502", "504"} <= set(responses)


@pytest.fixture(scope="module")
def sharkey_without_miauth() -> Iterator[RunningStandin]:
    port = free_port(STANDIN_HOST)
    config = StandinConfig(
        base_url=f"http://{STANDIN_HOST}:{port}", name="Old Shark", software="sharkey", miauth=False
    )
    with run_standin_in_thread(config, host=STANDIN_HOST, port=port) as running:
        yield running


async def in_process(tmp_path: Path, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        load_settings(secret_keys=[KEY], data_dir=tmp_path, **settings),
        clock=lambda: 1_000_000.0,  # one rate-limit window throughout
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
            yield client


@pytest.mark.anyio
async def test_lookup_of_a_fork_without_miauth(
    tmp_path: Path, sharkey_without_miauth: RunningStandin
) -> None:
    async for client in in_process(tmp_path, dev_instances=[sharkey_without_miauth.url]):
        answer = await client.get("/lookup", params={"instance": sharkey_without_miauth.url})
        body = answer.json()
        assert (body["name"], body["software"], body["softwareName"], body["miauth"]) == (
            "Old Shark",
            "sharkey",
            "Sharkey",
            False,
        )


@pytest.mark.anyio
async def test_lookup_applies_the_deny_list(tmp_path: Path) -> None:
    async for client in in_process(tmp_path, instances_deny=["*.example.social"]):
        answer = await client.get("/lookup", params={"instance": "@alice@mk.example.social"})
        assert answer.status_code == 403
        assert answer.json()["error"] == {
            "code": "INSTANCE_NOT_ALLOWED",
            "message": "Signing in with that server is not allowed here.",
            "id": ErrorCode.INSTANCE_NOT_ALLOWED.id,
        }


@pytest.mark.anyio
async def test_lookup_has_its_own_rate_limit(tmp_path: Path) -> None:
    async for client in in_process(tmp_path, login_rate_limit=1):
        statuses = [(await client.get("/lookup?instance=localhost")).status_code for _ in range(4)]
        limited = await client.get("/lookup?instance=localhost")
        assert statuses == [400, 400, 400, 400]
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "20"
        assert limited.json()["error"]["code"] == "RATE_LIMITED"
        # The sign-in's own limit is separate.
        assert (await client.get("/login?instance=localhost")).status_code == 400


# --- pages -----------------------------------------------------------------------------------------------

PAGES = [
    "/",
    "/login",
    "/login?return_to=/x",
    "/button",
    "/signed-out",
    "/signed-out?host=misskey.io&revoked=0",
]


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize("accept", list(LANGUAGES))
def test_pages_render_in_every_language(tobira: TobiraProcess, path: str, accept: str) -> None:
    answer = httpx.get(tobira.url + path, headers={"Accept-Language": accept})
    assert answer.status_code == 200
    assert f'<html lang="{LANGUAGES[accept]}">' in answer.text
    assert answer.headers["vary"] == "Accept-Language, Cookie"


def test_the_form_shows_the_permissions_in_words(tobira: TobiraProcess) -> None:
    page = httpx.get(tobira.url + "/login").text
    assert "tobira asks for permission to:" in page
    # Each item names its permission too: login.js shows the ones a server does not offer in these words.
    assert (
        '<li data-permission="read:account">See your account details</li>'
        '<li data-permission="write:notes">Post and delete notes</li>'
    ) in page
    assert '<li data-permission="write:drive">Upload, change and delete files in your Drive</li>' in page


@pytest.mark.anyio
async def test_the_form_without_permissions(tmp_path: Path) -> None:
    async for client in in_process(tmp_path, permissions=[], app_name="Notes & Co"):
        page = (await client.get("/login", headers={"Accept-Language": "ja"})).text
        assert "Notes &amp; Co は権限を求めません。" in page
        assert "公開プロフィールだけが見えます。" in page


def test_the_signed_in_page(browser: Browser) -> None:
    browser.sign_in("bob")
    page = browser.client.get(browser.tobira + "/", headers={"Accept-Language": "ko"}).text
    assert "<h1>로그인했습니다</h1>" in page
    assert f"@bob@{STANDIN_HOST}:{browser.standin.port}" in page
    assert '<form method="post" action="/logout"><button type="submit">로그아웃</button></form>' in page


def test_the_not_approved_page_offers_to_start_again(browser: Browser) -> None:
    started = browser.start()
    callback = f"{browser.tobira}/callback?session={browser.last_session}"
    page = browser.client.get(callback, headers={"Accept-Language": "zh-TW"})
    assert started.status_code == 303
    assert page.status_code == 403
    assert "<h1>未獲核准</h1>" in page.text
    assert "<code>SIGN_IN_NOT_APPROVED</code>" in page.text
    assert f'value="{STANDIN_HOST}:{browser.standin.port}"' in page.text


@pytest.mark.parametrize(
    ("accept", "line"),
    [
        ("en", "Misskey 2026.5.4 · signed in with MiAuth"),
        ("ja", "Misskey 2026.5.4 · MiAuth でログイン"),
        ("zh-CN", "Misskey 2026.5.4 · 通过 MiAuth 登录"),
    ],
)
def test_the_signed_in_page_names_the_server_software_and_the_method(
    browser: Browser, accept: str, line: str
) -> None:
    browser.sign_in()
    page = browser.client.get(browser.tobira + "/", headers={"Accept-Language": accept}).text
    assert f'<p class="hint">{line}</p>' in page


def titles(page: str) -> list[str]:
    return re.findall(r"<title>(.*?)</title>", page)


def test_every_page_has_its_own_title(browser: Browser) -> None:
    def title(path: str) -> list[str]:
        return titles(browser.client.get(browser.tobira + path).text)

    assert title("/") == ["Sign in with Misskey · tobira"]
    assert title("/login") == ["Sign in · tobira"]
    assert title("/button") == ["The button · tobira"]
    assert title("/nowhere") == ["There is nothing here. · tobira"]
    browser.sign_in()
    assert title("/") == ["Signed in · tobira"]


@pytest.mark.parametrize(
    ("path", "button"),
    [
        ("/nowhere", "Sign in with Misskey"),
        ("/callback?session=x", "Sign in again"),
        (f"/callback?session={'0' * 8}-0000-4000-8000-{'0' * 12}", "Sign in again"),
    ],
    ids=["not-found", "invalid-callback", "mismatch"],
)
def test_sign_in_again_only_after_a_sign_in(browser: Browser, path: str, button: str) -> None:
    if "0000-4000" in path:
        browser.start()  # a sign-in under way, not the one in the link: SIGN_IN_MISMATCH
    page = browser.client.get(browser.tobira + path).text
    assert f'<p class="actions"><a class="button" href="/login">{button}</a>' in page


# --- the stylesheet and the assets -----------------------------------------------------------------------

CSS = (ROOT / "static" / "tobira.css").read_text()


def rules(css: str) -> list[tuple[list[str], str]]:
    """(selectors, declarations) of every plain rule, media queries flattened."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.DOTALL)
    found = []
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        names = [name.strip() for name in selectors.split(",")]
        found.append((names, body))
    return found


@pytest.mark.parametrize(
    "selector", ["button", ".button", "input[type=text]", "a.plain", "footer a"], ids=lambda s: s
)
def test_touch_targets_are_at_least_44px_tall(selector: str) -> None:
    bodies = [body for names, body in rules(CSS) if selector in names]
    assert any(re.search(r"min-height:\s*44px", body) for body in bodies)


def test_dark_scheme_follows_the_system() -> None:
    assert "color-scheme: light dark" in CSS
    assert "@media (prefers-color-scheme: dark)" in CSS


def test_focus_is_always_visible() -> None:
    assert any(":focus-visible" in names and "outline: 3px solid" in body for names, body in rules(CSS))


ASSETS = sorted(
    [*(ROOT / "templates").glob("*.html"), *(ROOT / "static").glob("*.css"), *(ROOT / "static").glob("*.js")]
)
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


@pytest.mark.parametrize("path", ASSETS, ids=lambda path: path.name)
def test_nothing_is_loaded_from_elsewhere(path: Path) -> None:
    text = path.read_text()
    if path.suffix == ".html":
        # Literal addresses a page loads or links to are tobira's own; templated ones are tobira's origin,
        # the instance's own pages, or its icons and avatars.
        literal = re.findall(r'\b(?:src|href|action)="([^"{]*)"', text)
        assert [url for url in literal if not url.startswith("/")] == []
    elif path.suffix == ".css":
        assert "@import" not in text
        assert re.findall(r"url\(\s*['\"]?(?!data:)[a-z]+:", text) == []
    else:
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
        addresses = re.findall(r"[\"'`]([a-z]+://[^\"'`]*)", code)
        assert [address for address in addresses if address != SVG_NAMESPACE] == []

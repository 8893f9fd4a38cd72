"""The pages in a real browser (Debian's Chromium via Playwright) against tobira and the stand-in: the server
shown while it is typed, a Japanese browser signing in, a phone screen in dark mode, the keyboard alone, and
the language switch. Every page is also checked for Content-Security-Policy violations and for requests to
anywhere but tobira (and, once a server is typed, that server's icon)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from app.standin import RunningStandin
from tests.conftest import STANDIN_HOST, TobiraProcess


class Watched:
    """A page with what it asked for and what the browser complained about."""

    def __init__(self, context: BrowserContext) -> None:
        self.context = context
        self.page = context.new_page()
        self.requests: list[str] = []
        self.violations: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on(
            "console",
            lambda message: (
                self.violations.append(message.text) if "Content Security" in message.text else None
            ),
        )

    def origins(self) -> set[str]:
        return {"/".join(url.split("/", 3)[:3]) for url in self.requests}

    def lookups(self) -> int:
        return sum("/lookup?" in url for url in self.requests)


@pytest.fixture
def open_page(chromium: Browser) -> Iterator[Any]:
    contexts: list[BrowserContext] = []

    def make(**options: Any) -> Watched:
        context = chromium.new_context(**options)
        contexts.append(context)
        return Watched(context)

    yield make
    for context in contexts:
        context.close()


def server_of(standin: RunningStandin) -> str:
    return f"{STANDIN_HOST}:{standin.port}"


def approve(page: Page, tobira: TobiraProcess, standin: RunningStandin, user: str = "@alice") -> None:
    page.wait_for_url(f"{standin.url}/miauth/**")
    page.get_by_role("button", name=user).click()
    page.get_by_role("button", name="Accept").click()
    page.wait_for_url(tobira.url + "/")


def test_typing_shows_the_server_before_submitting(
    open_page: Any, tobira: TobiraProcess, standin: RunningStandin
) -> None:
    watched = open_page(locale="en-US")
    page = watched.page
    page.goto(tobira.url + "/login")
    assert watched.origins() == {tobira.url}
    page.get_by_label("Your Misskey server").press_sequentially(server_of(standin))
    preview = page.locator("#server-preview")
    expect(preview).to_contain_text("Stand-in Misskey")
    expect(preview).to_contain_text(f"{server_of(standin)} · Misskey 2026.5.4")
    icon = preview.locator("img")
    expect(icon).to_have_attribute("src", standin.url + "/static-assets/icons/192.png")
    page.wait_for_function("document.querySelector('#server-preview img')?.naturalWidth > 0")
    assert watched.lookups() == 1  # debounced: one lookup for the whole name
    assert page.url == tobira.url + "/login"  # nothing was sent yet
    page.get_by_role("button", name="Continue to your server").click()
    page.wait_for_url(f"{standin.url}/miauth/**")
    assert watched.violations == []


def test_a_server_that_cannot_be_used_is_explained_while_typing(
    open_page: Any, tobira: TobiraProcess
) -> None:
    watched = open_page(locale="fr-FR")
    page = watched.page
    page.goto(tobira.url + "/login")
    page.locator("#instance").fill("https://misskey.io/notes/abc")
    expect(page.locator("#server-preview")).to_contain_text(
        "Saisissez seulement le nom du serveur, ou une adresse de profil"
    )
    assert watched.origins() == {tobira.url}


def test_a_japanese_browser_signs_in_in_japanese(
    open_page: Any, tobira: TobiraProcess, standin: RunningStandin
) -> None:
    watched = open_page(locale="ja-JP")
    page = watched.page
    page.goto(tobira.url + "/")
    assert page.locator("html").get_attribute("lang") == "ja"
    page.get_by_role("link", name="Misskey でログイン").click()
    expect(page.get_by_role("heading", name="Misskey でログイン")).to_be_visible()
    expect(page.get_by_text("tobira が求める権限：")).to_be_visible()
    page.get_by_label("あなたの Misskey サーバー").fill(server_of(standin))
    page.get_by_role("button", name="サーバーへ進む").click()
    approve(page, tobira, standin)
    expect(page.get_by_role("heading", name="ログインしました")).to_be_visible()
    # Only servers signed in with are remembered on this device, never what was merely typed.
    for typed in ("javascript:alert(1)", "localhost", "nowhere.invalid"):
        page.goto(tobira.url + "/login")
        page.get_by_label("あなたの Misskey サーバー").fill(typed)
        page.get_by_role("button", name="サーバーへ進む").click()
        expect(page.locator("p[role=alert]")).to_be_visible()
    page.goto(tobira.url + "/login")
    expect(page.locator("#recent-list a")).to_have_text([server_of(standin)])
    # Offered as a link that starts at once; "Forget these" drops the list.
    page.get_by_role("link", name=server_of(standin)).click()
    page.wait_for_url(f"{standin.url}/miauth/**")
    page.goto(tobira.url + "/login")
    page.get_by_role("button", name="履歴を消去").click()
    page.wait_for_url(tobira.url + "/login?return_to=%2F")
    expect(page.locator("#recent")).to_have_count(0)
    assert page.evaluate("localStorage.getItem('tobira.recent')") is None
    assert watched.violations == []


TOO_SMALL = """() => [...document.querySelectorAll('a, button, input:not([type=hidden])')]
    .filter(element => element.offsetParent !== null)
    .map(element => [element.outerHTML.slice(0, 80), element.getBoundingClientRect().height])
    .filter(([, height]) => height < 44)"""


@pytest.mark.parametrize("path", ["/", "/login", "/signed-out", "/callback?session=x"])
def test_a_phone_in_dark_mode(open_page: Any, tobira: TobiraProcess, path: str) -> None:
    watched = open_page(
        viewport={"width": 390, "height": 844},
        device_scale_factor=3,
        is_mobile=True,
        has_touch=True,
        color_scheme="dark",
    )
    page = watched.page
    page.goto(tobira.url + path)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.evaluate(TOO_SMALL) == []
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(22, 24, 28)"
    assert watched.origins() == {tobira.url}
    assert watched.violations == []


def test_a_phone_signs_in_by_touch(open_page: Any, tobira: TobiraProcess, standin: RunningStandin) -> None:
    watched = open_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = watched.page
    page.goto(tobira.url + "/login")
    page.locator("#instance").tap()
    page.keyboard.type(server_of(standin))
    expect(page.locator("#server-preview")).to_contain_text("Stand-in Misskey")
    page.get_by_role("button", name="Continue to your server").tap()
    approve(page, tobira, standin, "@bob")
    expect(page.get_by_role("heading", name="Signed in")).to_be_visible()


def test_keyboard_only(open_page: Any, tobira: TobiraProcess, standin: RunningStandin) -> None:
    watched = open_page(locale="en-US")
    page = watched.page
    page.goto(tobira.url + "/login")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "instance"
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
    page.keyboard.type(server_of(standin))
    expect(page.locator("#server-preview")).to_contain_text("Stand-in Misskey")
    page.keyboard.press("Enter")
    approve(page, tobira, standin)
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Sign out":
            break
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="You are signed out")).to_be_visible()


def test_the_language_switch_is_remembered(open_page: Any, tobira: TobiraProcess) -> None:
    watched = open_page(locale="en-US")
    page = watched.page
    page.goto(tobira.url + "/login?return_to=/somewhere")
    page.get_by_role("navigation", name="Language").get_by_role("link", name="한국어").click()
    expect(page.get_by_role("heading", name="Misskey로 로그인")).to_be_visible()
    assert page.locator("html").get_attribute("lang") == "ko"
    assert page.locator("input[name=return_to]").get_attribute("value") == "/somewhere"
    page.goto(tobira.url + "/button")
    assert page.locator("html").get_attribute("lang") == "ko"
    page.get_by_role("navigation", name="언어").get_by_role("link", name="繁體中文").click()
    assert page.locator("html").get_attribute("lang") == "zh-Hant"

"""The embeddable "Sign in with Misskey" button (static/button.js, static/button.css) on a site tobira did not
serve: a page on another loopback origin pastes the snippet, real Chromium renders it, and clicking it starts
the sign-in on tobira. The site's Content-Security-Policy allows tobira's origin and nothing else (no inline
styles or scripts, Trusted Types enforced), which proves the button adds nothing to the host page."""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from app.standin import RunningStandin
from tests.conftest import STANDIN_HOST, TobiraProcess, free_port

SITE_HOST = "127.0.0.5"  # another loopback address: another origin and another site than tobira's


def snippet(tobira: str, **attributes: str) -> str:
    """What GET /button shows site owners: the stylesheet (so the no-JS fallback looks right and nothing
    shifts when the script takes over), the script, and the element around its fallback link."""
    attrs = "".join(f' {name.replace("_", "-")}="{html.escape(value)}"' for name, value in attributes.items())
    return (
        f'<link rel="stylesheet" href="{tobira}/static/button.css">\n'
        f'<script src="{tobira}/static/button.js" defer></script>\n'
        f'<tobira-button{attrs}><a class="tobira-button" href="{tobira}/login">Sign in with Misskey</a>'
        "</tobira-button>"
    )


def site_page(body: str) -> bytes:
    head = '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>A site</title></head>'
    return f"{head}\n<body>\n<p>Welcome to a site.</p>\n{body}\n</body></html>\n".encode()


@dataclass
class Site:
    """Someone else's web site: fixed pages on SITE_HOST under a Content-Security-Policy of its own."""

    url: str


def site_policy(tobira: str) -> str:
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {tobira}",
            f"style-src {tobira}",
            "require-trusted-types-for 'script'",
            "trusted-types 'none'",
        ]
    )


# A site that wants SharedArrayBuffer and the like: it may only load what other origins mark as embeddable.
CROSS_ORIGIN_ISOLATED = {
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@pytest.fixture(scope="module")
def site(tobira: TobiraProcess, standin: RunningStandin) -> Iterator[Site]:
    pages = {
        "/": site_page(snippet(tobira.url, theme="auto", size="medium", return_to="/after")),
        "/direct": site_page(snippet(tobira.url, instance=f"{STANDIN_HOST}:{standin.port}")),
        "/sizes": site_page(
            "\n".join(
                snippet(tobira.url, id=f"{theme}-{size}", theme=theme, size=size)
                for theme in ("light", "dark", "auto")
                for size in ("small", "medium", "large")
            )
        ),
        "/labels": site_page(
            snippet(tobira.url, id="default") + snippet(tobira.url, id="own", label="Mit Misskey anmelden")
        ),
        "/isolated": site_page(snippet(tobira.url)),
        "/unstyled": site_page(snippet(tobira.url, return_to="/after")),
    }
    policy = {"Content-Security-Policy": site_policy(tobira.url)}
    headers = {
        "/isolated": {**policy, **CROSS_ORIGIN_ISOLATED},
        # A site that forgot tobira in style-src: the button still works, unstyled.
        "/unstyled": {
            "Content-Security-Policy": site_policy(tobira.url).replace(f"style-src {tobira.url}", "")
        },
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            for name, value in headers.get(self.path, policy).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body or b"not here")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    port = free_port(SITE_HOST)
    server = ThreadingHTTPServer((SITE_HOST, port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Site(f"http://{SITE_HOST}:{port}")
    server.shutdown()
    server.server_close()
    thread.join()


@dataclass
class Visit:
    page: Page
    problems: list[str]  # console errors and page errors: CSP violations, script failures


@pytest.fixture
def visit(chromium: Browser) -> Iterator[Callable[..., Visit]]:
    contexts = []

    def open_page(url: str, **context_options: Any) -> Visit:
        context = chromium.new_context(**context_options)
        contexts.append(context)
        page = context.new_page()
        problems: list[str] = []
        page.on(
            "console",
            lambda message: (
                problems.append(f"{message.location['url']}: {message.text}")
                if message.type == "error"
                else None
            ),
        )
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto(url)
        return Visit(page, problems)

    yield open_page
    for context in contexts:
        context.close()


def enhanced(page: Page, selector: str = "tobira-button") -> dict[str, Any]:
    """Wait until the element has swapped its fallback for its own link; describe that link."""
    page.wait_for_function(
        "s => document.querySelector(s)?.shadowRoot?.querySelector('a.tobira-button')", arg=selector
    )
    result: dict[str, Any] = page.evaluate(
        """s => {
            const link = document.querySelector(s).shadowRoot.querySelector("a");
            const box = link.getBoundingClientRect();
            return {href: link.href, text: link.textContent, lang: link.lang, target: link.target,
                    height: box.height, background: getComputedStyle(link).backgroundColor,
                    slots: document.querySelector(s).shadowRoot.querySelectorAll("slot").length};
        }""",
        selector,
    )
    return result


def test_renders_a_link_to_tobira(visit: Callable[..., Visit], site: Site, tobira: TobiraProcess) -> None:
    seen = visit(site.url + "/")
    link = enhanced(seen.page)
    assert link == {
        "href": f"{tobira.url}/login?return_to=%2Fafter",
        "text": "Sign in with Misskey",
        "lang": "en",
        "target": "_top",
        "height": 44,
        "background": "rgb(255, 255, 255)",
        "slots": 0,
    }
    # The fallback is no longer shown: exactly one link by that name, the component's.
    links = seen.page.get_by_role("link", name="Sign in with Misskey")
    assert links.count() == 1
    assert seen.problems == []
    # The site's policy is in force: were the button to write HTML, Trusted Types would have stopped it.
    write_html = (
        "() => { try { document.body.insertAdjacentHTML('beforeend', '<i>'); } catch (e) { return e.name; } }"
    )
    assert seen.page.evaluate(write_html) == "TypeError"
    links.click()
    seen.page.wait_for_url(f"{tobira.url}/login?return_to=%2Fafter")
    assert seen.page.locator('form[method="post"][action="/login"] input[name="instance"]').count() == 1


def test_keyboard_focus_and_enter(visit: Callable[..., Visit], site: Site, tobira: TobiraProcess) -> None:
    seen = visit(site.url + "/")
    enhanced(seen.page)
    seen.page.keyboard.press("Tab")
    focused = seen.page.evaluate(
        """() => {
            const outer = document.activeElement, inner = outer.shadowRoot?.activeElement;
            const style = inner && getComputedStyle(inner);
            return [outer.localName, inner?.localName, style?.outlineStyle, style?.outlineWidth];
        }"""
    )
    assert focused == ["tobira-button", "a", "solid", "3px"]
    seen.page.keyboard.press("Enter")
    seen.page.wait_for_url(f"{tobira.url}/login?return_to=%2Fafter")


def test_instance_fills_the_form_and_one_click_goes_on_to_consent(
    visit: Callable[..., Visit], site: Site, tobira: TobiraProcess, standin: RunningStandin
) -> None:
    """A sign-in another site starts is never carried out at once (login CSRF), not even from a button:
    the person lands on tobira's form, filled in, and continues with one click of their own."""
    seen = visit(site.url + "/direct")
    link = enhanced(seen.page)
    assert link["href"] == f"{tobira.url}/login?instance={STANDIN_HOST}%3A{standin.port}"
    assert seen.problems == []
    seen.page.get_by_role("link", name="Sign in with Misskey").click()
    seen.page.wait_for_url(f"{tobira.url}/login?**")
    assert seen.page.locator("#instance").input_value() == f"{STANDIN_HOST}:{standin.port}"
    assert seen.page.locator(".notice").is_visible()
    seen.page.get_by_role("button", name="Continue to your server").click()
    seen.page.wait_for_url(f"{standin.url}/miauth/**")
    seen.page.get_by_role("button", name="@alice").click()
    seen.page.get_by_role("button", name="Accept").click()
    seen.page.wait_for_url(tobira.url + "/")
    signed_in = seen.page.request.get(tobira.url + "/session")
    assert signed_in.status == 200
    assert signed_in.json()["user"]["username"] == "alice"


LIGHT, DARK = "rgb(255, 255, 255)", "rgb(31, 35, 41)"


@pytest.mark.parametrize(
    ("scheme", "backgrounds"),
    [
        pytest.param("light", {"light": LIGHT, "dark": DARK, "auto": LIGHT}, id="light-scheme"),
        pytest.param("dark", {"light": LIGHT, "dark": DARK, "auto": DARK}, id="dark-scheme"),
    ],
)
def test_themes_and_sizes(
    visit: Callable[..., Visit], site: Site, scheme: str, backgrounds: dict[str, str]
) -> None:
    seen = visit(site.url + "/sizes", color_scheme=scheme)
    for theme, background in backgrounds.items():
        links = {size: enhanced(seen.page, f"#{theme}-{size}") for size in ("small", "medium", "large")}
        assert {size: link["background"] for size, link in links.items()} == dict.fromkeys(links, background)
        assert {size: link["height"] for size, link in links.items()} == {
            "small": 32,
            "medium": 44,
            "large": 52,
        }
    assert seen.problems == []


@pytest.mark.parametrize(
    ("locale", "label", "lang"),
    [
        pytest.param("en-GB", "Sign in with Misskey", "en", id="en"),
        pytest.param("ja-JP", "Misskeyでログイン", "ja", id="ja"),
        pytest.param("fr-CA", "Se connecter avec Misskey", "fr", id="fr"),
        pytest.param("ko-KR", "Misskey로 로그인", "ko", id="ko"),
        pytest.param("zh-CN", "使用 Misskey 登录", "zh", id="zh-CN"),
        pytest.param("zh-TW", "使用 Misskey 登入", "zh-Hant", id="zh-TW"),
        pytest.param("de-DE", "Sign in with Misskey", "en", id="unknown-is-en"),
    ],
)
def test_label_follows_the_visitors_language(
    visit: Callable[..., Visit], site: Site, locale: str, label: str, lang: str
) -> None:
    seen = visit(site.url + "/labels", locale=locale)
    default = enhanced(seen.page, "#default")
    assert (default["text"], default["lang"]) == (label, lang)
    own = enhanced(seen.page, "#own")
    assert (own["text"], own["lang"]) == ("Mit Misskey anmelden", "")
    assert seen.page.get_by_role("link", name=label).count() == 1


def test_attributes_changed_later_update_the_link(
    visit: Callable[..., Visit], site: Site, tobira: TobiraProcess
) -> None:
    seen = visit(site.url + "/labels")
    enhanced(seen.page, "#default")
    seen.page.evaluate(
        """() => {
            const button = document.querySelector("#default");
            button.setAttribute("instance", " misskey.example ");
            button.setAttribute("return-to", "/app?x=1");
            button.setAttribute("label", "Log in");
        }"""
    )
    link = enhanced(seen.page, "#default")
    assert (link["href"], link["text"]) == (
        f"{tobira.url}/login?instance=misskey.example&return_to=%2Fapp%3Fx%3D1",
        "Log in",
    )


def test_without_javascript_the_fallback_link_works(
    visit: Callable[..., Visit], site: Site, tobira: TobiraProcess
) -> None:
    seen = visit(site.url + "/", java_script_enabled=False)
    fallback = seen.page.get_by_role("link", name="Sign in with Misskey")
    # Styled by the snippet's stylesheet, the fallback already looks like the button.
    box = fallback.bounding_box()
    assert box is not None and box["height"] == 44
    fallback.click()
    seen.page.wait_for_url(tobira.url + "/login")


def test_without_its_stylesheet_the_link_still_works(
    visit: Callable[..., Visit], site: Site, tobira: TobiraProcess
) -> None:
    seen = visit(site.url + "/unstyled")
    link = enhanced(seen.page)
    assert (link["href"], link["text"], link["slots"]) == (
        f"{tobira.url}/login?return_to=%2Fafter",
        "Sign in with Misskey",
        0,
    )
    assert any("Content Security Policy" in problem for problem in seen.problems)
    seen.page.get_by_role("link", name="Sign in with Misskey").click()
    seen.page.wait_for_url(f"{tobira.url}/login?return_to=%2Fafter")


def test_works_on_a_cross_origin_isolated_site(visit: Callable[..., Visit], site: Site) -> None:
    seen = visit(site.url + "/isolated")
    assert seen.page.evaluate("crossOriginIsolated") is True
    assert seen.page.evaluate("Boolean(customElements.get('tobira-button'))") is True

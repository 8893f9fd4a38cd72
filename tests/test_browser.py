"""The sign-in in a real browser: Debian's Chromium driven by Playwright, tobira and the stand-in as real
servers. This is where the Content-Security-Policy's `form-action` meets the sign-in form's 303 to the
instance: browsers check that redirect against the policy too."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from app.standin import RunningStandin
from tests.conftest import STANDIN_HOST, TobiraProcess


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context()
    page = context.new_page()
    yield page
    context.close()


def start_sign_in(page: Page, tobira: TobiraProcess, standin: RunningStandin) -> list[str]:
    violations: list[str] = []
    page.on(
        "console",
        lambda message: violations.append(message.text) if "Content Security" in message.text else None,
    )
    page.goto(tobira.url + "/login")
    page.get_by_label("Your Misskey server").fill(f"{STANDIN_HOST}:{standin.port}")
    page.get_by_role("button", name="Continue to your server").click()
    page.wait_for_url(f"{standin.url}/miauth/**")
    return violations


def test_sign_in_by_clicking_allow(page: Page, tobira: TobiraProcess, standin: RunningStandin) -> None:
    violations = start_sign_in(page, tobira, standin)
    page.get_by_role("button", name="@alice").click()
    page.get_by_role("button", name="Accept").click()
    page.wait_for_url(tobira.url + "/")
    expect(page.get_by_role("heading", name="Signed in")).to_be_visible()
    expect(page.get_by_text(f"@alice@{STANDIN_HOST}:{standin.port}")).to_be_visible()
    assert violations == []
    page.get_by_role("button", name="Post").click()
    expect(page.locator("#playground-output")).to_contain_text("createdNote")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="You are signed out")).to_be_visible()


def test_deny_stays_on_the_instance(page: Page, tobira: TobiraProcess, standin: RunningStandin) -> None:
    start_sign_in(page, tobira, standin)
    page.get_by_role("button", name="@bob").click()
    page.get_by_role("button", name="Deny").click()
    expect(page.get_by_text("denied", exact=False).first).to_be_visible()
    assert page.url.startswith(standin.url)
    assert page.context.cookies(tobira.url) and not any(
        cookie["name"] == "tobira" for cookie in page.context.cookies(tobira.url)
    )

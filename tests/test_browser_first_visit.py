"""What a newcomer sees first, in real Chromium against tobira and the stand-in: an error said once, no empty
box before the API playground is used, the playground's answer readable on a phone, and the stand-in's
Settings › Apps that the signed-out page links to."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from app.standin import RunningStandin
from tests.conftest import STANDIN_HOST, TobiraProcess

PHONE = {"width": 390, "height": 844}


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context(viewport=PHONE, locale="en-US")
    yield context.new_page()
    context.close()


def sign_in(page: Page, tobira: TobiraProcess, standin: RunningStandin) -> None:
    page.goto(tobira.url + "/login")
    page.locator("#instance").fill(f"{STANDIN_HOST}:{standin.port}")
    page.get_by_role("button", name="Continue to your server").click()
    page.wait_for_url(f"{standin.url}/miauth/**")
    page.get_by_role("button", name="@alice").click()
    page.get_by_role("button", name="Accept").click()
    page.wait_for_url(tobira.url + "/")


def test_an_error_about_what_was_typed_is_shown_once(page: Page, tobira: TobiraProcess) -> None:
    message = "Type the server's name, not an IP address."
    page.goto(tobira.url + "/login")
    page.locator("#instance").fill("10.1.2.3")
    expect(page.locator("#server-preview")).to_have_text(message)  # the form's lookup, as it is typed
    page.get_by_role("button", name="Continue to your server").click()
    expect(page.get_by_role("alert")).to_have_text(message)
    page.wait_for_load_state("networkidle")  # the error page's form looks the same text up again
    expect(page.get_by_text(message)).to_have_count(1)
    expect(page.locator("#server-preview")).to_be_empty()
    # Something else typed there is looked up and explained as usual.
    page.locator("#instance").fill("10.1.2.4")
    expect(page.locator("#server-preview")).to_have_text(message)


def test_the_playground_shows_nothing_until_used_then_indented_json(
    page: Page, tobira: TobiraProcess, standin: RunningStandin
) -> None:
    sign_in(page, tobira, standin)
    output = page.locator("#playground-output")
    expect(output).to_be_empty()
    expect(output).to_be_hidden()
    page.get_by_role("button", name="Show timeline").click()
    expect(output).to_be_visible()
    expect(output).to_contain_text("200 [")
    status, _, body = output.inner_text().partition(" ")
    assert status == "200"
    assert body == json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_the_signed_out_pages_link_to_apps_works_on_the_stand_in(
    page: Page, tobira: TobiraProcess, standin: RunningStandin
) -> None:
    sign_in(page, tobira, standin)
    page.get_by_role("button", name="Sign out").click()
    link = page.get_by_role("link", name=f"{STANDIN_HOST}:{standin.port}/settings/apps")
    link.click()
    page.wait_for_url(f"{standin.url}/settings/apps")
    expect(page.get_by_role("heading", name="Apps")).to_be_visible()
    revoke = page.locator("li", has_text="tobira").get_by_role("button", name="Revoke")
    count = revoke.count()
    assert count >= 1
    revoke.first.click()
    page.wait_for_url(f"{standin.url}/settings/apps")
    expect(page.locator("li", has_text="tobira").get_by_role("button", name="Revoke")).to_have_count(
        count - 1
    )

"""Screenshots of the main pages, English and Japanese, desktop and phone, taken in real Chromium.

They land in docs/screenshots/ and the README shows them, so what the README shows is what this test saw.
Each shot is also a check: the page is in the right language and has no Content-Security-Policy violation.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from app.standin import RunningStandin
from tests.conftest import STANDIN_HOST, TobiraProcess

SHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
LOCALES = {"en": "en-US", "ja": "ja-JP"}


def shoot(page: Page, name: str, violations: list[str]) -> None:
    page.wait_for_load_state("networkidle")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / f"{name}.png", full_page=True)
    assert violations == []


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
@pytest.mark.parametrize("lang", list(LOCALES))
def test_screenshots(
    chromium: Browser, tobira: TobiraProcess, standin: RunningStandin, lang: str, viewport: str
) -> None:
    context = chromium.new_context(
        locale=LOCALES[lang], viewport=VIEWPORTS[viewport], color_scheme="light", device_scale_factor=1
    )
    try:
        page = context.new_page()
        violations: list[str] = []
        page.on("console", lambda m: violations.append(m.text) if "Content Security" in m.text else None)
        prefix = f"{lang}-{viewport}"

        page.goto(tobira.url + "/login")
        assert page.locator("html").get_attribute("lang") == lang
        page.locator("#instance").fill(f"{STANDIN_HOST}:{standin.port}")
        expect(page.locator("#server-preview")).to_contain_text("Stand-in Misskey")
        shoot(page, f"{prefix}-login", violations)

        page.locator("form[action='/login'] button[type=submit]").click()
        page.wait_for_url(f"{standin.url}/miauth/**")
        page.get_by_role("button", name="@alice").click()
        page.get_by_role("button", name="Accept").click()
        page.wait_for_url(tobira.url + "/")
        shoot(page, f"{prefix}-signed-in", violations)

        page.goto(tobira.url + "/callback?session=00000000-0000-4000-8000-000000000000")
        shoot(page, f"{prefix}-error", violations)
    finally:
        context.close()

"""Screenshots of the main pages, English and Japanese, desktop and phone, taken in real Chromium.

Each shot is also a check: the page is in the right language and has no Content-Security-Policy violation.
A test run writes them to a temporary folder (pytest's, kept for the last few runs) and leaves the committed
ones alone, so `git status` stays clean. `scripts/screenshots` takes them again into docs/screenshots/ for
the README (TOBIRA_SCREENSHOTS names the folder), with the stand-in on a fixed address so that only what
changed on the pages changes in the images.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from app.standin import RunningStandin
from tests.conftest import ROOT, STANDIN_HOST, TobiraProcess, free_port

COMMITTED = ROOT / "docs" / "screenshots"
TARGET = os.environ.get("TOBIRA_SCREENSHOTS")
STANDIN_PORT = 3000  # the address the committed screenshots show
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
LOCALES = {"en": "en-US", "ja": "ja-JP"}


def digests(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.glob("*.png"))}


@pytest.fixture(scope="module")
def committed() -> dict[str, str]:
    """The committed screenshots as they were before this module ran."""
    return digests(COMMITTED)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(TARGET).resolve() if TARGET else tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def standin() -> Iterator[RunningStandin]:
    """The stand-in on a fixed port when the screenshots are for the README, else on a free one."""
    from app.standin import StandinConfig, run_standin_in_thread

    port = STANDIN_PORT if TARGET else free_port(STANDIN_HOST)
    with run_standin_in_thread(
        StandinConfig(base_url=f"http://{STANDIN_HOST}:{port}"), host=STANDIN_HOST, port=port
    ) as running:
        yield running


def shoot(page: Page, path: Path, violations: list[str]) -> None:
    page.wait_for_load_state("networkidle")
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=path, full_page=True, animations="disabled", caret="hide")
    assert violations == []


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
@pytest.mark.parametrize("lang", list(LOCALES))
def test_screenshots(
    chromium: Browser,
    tobira: TobiraProcess,
    standin: RunningStandin,
    shots: Path,
    committed: dict[str, str],
    lang: str,
    viewport: str,
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
        shoot(page, shots / f"{prefix}-login.png", violations)

        page.locator("form[action='/login'] button[type=submit]").click()
        page.wait_for_url(f"{standin.url}/miauth/**")
        page.get_by_role("button", name="@alice").click()
        page.get_by_role("button", name="Accept").click()
        page.wait_for_url(tobira.url + "/")
        shoot(page, shots / f"{prefix}-signed-in.png", violations)

        page.goto(tobira.url + "/callback?session=00000000-0000-4000-8000-000000000000")
        shoot(page, shots / f"{prefix}-error.png", violations)
    finally:
        context.close()
    assert sorted(path.name for path in shots.glob(f"{prefix}-*.png")) == [
        f"{prefix}-error.png",
        f"{prefix}-login.png",
        f"{prefix}-signed-in.png",
    ]
    if shots != COMMITTED.resolve():
        assert digests(COMMITTED) == committed  # a test run never rewrites what git tracks

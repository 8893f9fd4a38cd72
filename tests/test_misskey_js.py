"""Misskey's own JavaScript SDK, misskey-js from npm, in Chromium against tobira: the promise of the README's
example. It is bundled here by esbuild from tests/node_modules (installed by scripts/test with `npm ci`;
nothing is fetched while the tests run) and served from tobira's own origin, as a site's front-end would be,
under tobira's real Content-Security-Policy.

The SDK is used as the README shows it: `APIClient` with tobira as its origin, no credential, and a `fetch`
that sends cookies (misskey-js's own sends none: `credentials: "omit"`), and `Stream` on tobira's origin with
no user (the browser's cookie goes with the WebSocket upgrade).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Route

from app.standin import RunningStandin
from tests.conftest import STANDIN_HOST, TobiraProcess

TESTS = Path(__file__).resolve().parent
ESBUILD = TESTS / "node_modules" / ".bin" / "esbuild"
BUNDLE_PATH = "/misskey-js.bundle.js"  # where the page finds it, on tobira's origin

# The README's example, run in the page once the bundle (global `Misskey`) is loaded.
SCRIPT = """
async () => {
  const origin = location.origin;
  const api = new Misskey.api.APIClient({
    origin,
    fetch: (url, init) => fetch(url, { ...init, credentials: "same-origin" }),
  });
  const stream = new Misskey.Stream(origin, null);
  await new Promise((resolve) => stream.once("_connected_", resolve));
  const home = stream.useChannel("homeTimeline");
  // Frames are handled in order, so once this probe is answered the channel above is joined.
  const joined = new Promise((resolve) => stream.once("connected", resolve));
  stream.send("connect", { channel: "main", id: "ready", pong: true });
  await joined;
  const streamed = new Promise((resolve) => home.once("note", resolve));

  const me = await api.request("i");
  const created = await api.request("notes/create", { text: "Hello from misskey-js" });
  const note = await streamed;
  const timeline = await api.request("notes/timeline", { limit: 10 });
  const refused = await api.request("i/revoke-token", {}).catch((error) => error);
  const withoutCookie = await new Misskey.api.APIClient({ origin }).request("i").catch((error) => error);
  stream.close();
  return {
    me: me.username,
    created: created.createdNote.id,
    streamed: [note.id, note.text],
    timeline: timeline.map((item) => item.id),
    refused: [Misskey.api.isAPIError(refused), refused.code],
    withoutCookie: [Misskey.api.isAPIError(withoutCookie), withoutCookie.code],
  };
}
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """misskey-js as one browser script defining the global `Misskey`."""
    if not ESBUILD.exists():
        pytest.fail("tests/node_modules is missing: run scripts/test, or `npm ci --prefix tests`")
    target = tmp_path_factory.mktemp("misskey-js") / "bundle.js"
    subprocess.run(
        [str(ESBUILD), "--bundle", "--format=iife", "--global-name=Misskey", f"--outfile={target}"],
        input=b'export * from "misskey-js";',
        cwd=TESTS,
        check=True,
        timeout=60,
    )
    return target.read_bytes()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context()
    yield context.new_page()
    context.close()


def sign_in(page: Page, tobira: TobiraProcess, standin: RunningStandin) -> None:
    page.goto(tobira.url + "/login")
    page.get_by_label("Your Misskey server").fill(f"{STANDIN_HOST}:{standin.port}")
    page.get_by_role("button", name="Continue to your server").click()
    page.wait_for_url(f"{standin.url}/miauth/**")
    page.get_by_role("button", name="@alice").click()
    page.get_by_role("button", name="Accept").click()
    page.wait_for_url(tobira.url + "/")


def test_misskey_js_signs_in_posts_reads_and_streams_through_tobira(
    page: Page, bundle: bytes, tobira: TobiraProcess, standin: RunningStandin
) -> None:
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security" in m.text else None)
    sign_in(page, tobira, standin)

    def serve_bundle(route: Route) -> None:
        route.fulfill(status=200, content_type="text/javascript", body=bundle)

    page.route(tobira.url + BUNDLE_PATH, serve_bundle)
    page.add_script_tag(url=BUNDLE_PATH)
    result: dict[str, Any] = page.evaluate(SCRIPT)

    created = result["created"]
    assert result["me"] == "alice"
    assert result["streamed"] == [created, "Hello from misskey-js"]
    assert result["timeline"][0] == created
    assert result["refused"] == [True, "ENDPOINT_NOT_ALLOWED"]
    assert result["withoutCookie"] == [True, "CREDENTIAL_REQUIRED"]
    assert violations == []
    upstream = [note for note in standin.state.notes if note.id == created]
    assert [(note.text, note.user.username) for note in upstream] == [("Hello from misskey-js", "alice")]

"""The real peer of tobira under a path: Debian's nginx in front, a site of its own at `/` (a static page),
and `/misskey/` proxied to tobira with the path unchanged and WebSocket upgrades passed on (the README's
configuration). Through it: a sign-in with the stand-in, a call through the proxy, a streamed note."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest
from playwright.sync_api import Browser as Chromium
from playwright.sync_api import expect
from websockets.asyncio.client import connect
from websockets.typing import Origin

from app.standin import RunningStandin
from tests.conftest import STANDIN_HOST, Browser, TobiraProcess, free_port, start_tobira
from tests.nginx_support import temp_paths, wait_listening

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
BASE = "/misskey"
SITE_PAGE = "<!doctype html><title>Our site</title><h1>Our own app</h1>\n"
TIMEOUT = 5


def nginx_config(prefix: Path, site: Path, port: int, tobira: int) -> str:
    """The README's server block (`location /misskey/`), with the test's folders and ports around it."""
    return f"""
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
{temp_paths(prefix)}
    default_type text/html;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}

    server {{
        listen 127.0.0.1:{port};

        # The site's own app.
        location / {{
            root {site};
        }}

        # tobira, with TOBIRA_PUBLIC_URL=https://example.com/misskey: no URI after the address in
        # proxy_pass, so the path goes on unchanged (/misskey/login stays /misskey/login).
        location /misskey/ {{
            proxy_pass http://127.0.0.1:{tobira};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            # /misskey/streaming: the WebSocket upgrade, and streams that stay open.
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 1h;
            proxy_buffering off;
        }}
    }}
}}
"""


@dataclass
class Site:
    url: str  # nginx: the site's origin
    tobira: TobiraProcess  # reached straight, as a health check would


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, standin: RunningStandin) -> Iterator[Site]:
    if NGINX is None:
        pytest.fail("nginx is not installed (scripts/_setup.sh installs it)")
    folder = tmp_path_factory.mktemp("nginx-under-path")
    port = free_port()
    tobira = start_tobira(
        folder,
        TOBIRA_PUBLIC_URL=f"http://127.0.0.1:{port}{BASE}",
        TOBIRA_DEV_INSTANCES=standin.url,
        TOBIRA_PERMISSIONS="read:account,write:notes",
    )
    # nginx's workers (nobody, when the tests run as root) read the site's page: a folder they can reach.
    pages = Path(tempfile.mkdtemp(prefix="tobira-site-"))
    pages.chmod(0o755)
    (pages / "index.html").write_text(SITE_PAGE)
    (pages / "index.html").chmod(0o644)
    config = folder / "nginx.conf"
    tobira_port = int(tobira.url.rsplit(":", 1)[1])
    config.write_text(nginx_config(folder, pages, port, tobira_port))
    log = folder / "nginx.log"
    command = [str(NGINX), "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(config)]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True
        )
    try:
        wait_listening(port, process, log)
        yield Site(f"http://127.0.0.1:{port}", tobira)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        tobira.stop()
        shutil.rmtree(pages, ignore_errors=True)


@pytest.fixture
def browser(site: Site, standin: RunningStandin) -> Iterator[Browser]:
    with httpx.Client(timeout=20) as client:
        yield Browser(site.url + BASE, standin, client, origin=site.url)


def api(browser: Browser, endpoint: str, body: object = None) -> httpx.Response:
    return browser.client.post(
        f"{browser.tobira}/api/{endpoint}", json=body or {}, headers={"Origin": browser.origin or ""}
    )


def test_the_site_keeps_its_own_root(site: Site, browser: Browser) -> None:
    page = browser.client.get(site.url + "/")
    assert (page.status_code, page.text) == (200, SITE_PAGE)
    assert browser.client.get(site.url + "/login").status_code == 404  # the site's, not tobira's
    home = browser.client.get(site.url + BASE + "/")
    assert home.status_code == 200
    assert f'<body data-base="{BASE}">' in home.text
    assert browser.client.get(f"{site.url}{BASE}/static/tobira.css").status_code == 200
    assert browser.client.get(f"{site.tobira.url}/healthz").status_code == 200  # the container, straight


def test_sign_in_and_the_proxy_through_nginx(browser: Browser) -> None:
    started = browser.start(return_to=f"{BASE}/button")
    assert started.status_code == 303, started.text
    assert parse_qs(urlsplit(started.headers["location"]).query)["callback"] == [browser.tobira + "/callback"]
    callback = browser.approve(started.headers["location"])
    assert callback.startswith(browser.tobira + "/callback?session=")
    finished = browser.callback(callback)
    assert (finished.status_code, finished.headers["location"]) == (303, f"{BASE}/button")
    assert f"Path={BASE}" in finished.headers["set-cookie"]
    assert browser.session().json()["user"]["username"] == "alice"
    me = api(browser, "i")
    assert (me.status_code, me.json()["username"]) == (200, "alice")
    out = browser.post_form("/logout", {})
    assert (out.status_code, out.headers["location"]) == (303, f"{BASE}/signed-out")
    assert api(browser, "i").status_code == 401


@pytest.mark.anyio
async def test_a_streamed_note_through_nginx(browser: Browser) -> None:
    await anyio.to_thread.run_sync(browser.sign_in)
    cookie = browser.client.cookies.get("tobira")
    ws = "ws" + browser.tobira.removeprefix("http") + "/streaming"
    headers = {"Cookie": f"tobira={cookie}"}
    async with connect(ws, origin=Origin(browser.origin or ""), additional_headers=headers) as stream:
        frame = {"type": "connect", "body": {"channel": "homeTimeline", "id": "home", "pong": True}}
        await stream.send(json.dumps(frame))
        with anyio.fail_after(TIMEOUT):
            assert json.loads(await stream.recv()) == {"type": "connected", "body": {"id": "home"}}
        note = await anyio.to_thread.run_sync(lambda: api(browser, "notes/create", {"text": "via nginx"}))
        assert note.status_code == 200, note.text
        with anyio.fail_after(TIMEOUT):
            event = json.loads(await stream.recv())
    assert event["body"]["id"] == "home"
    assert event["body"]["body"]["id"] == note.json()["createdNote"]["id"]
    assert event["body"]["body"]["text"] == "via nginx"


def test_chromium_signs_in_through_nginx(chromium: Chromium, site: Site, standin: RunningStandin) -> None:
    """The pages' scripts under the prefix: the lookup while typing (login.js), the playground's call
    (playground.js), and every request the browser makes stays under /misskey/ on the site's origin."""
    context = chromium.new_context(locale="en-US")
    page = context.new_page()
    asked: list[str] = []
    violations: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    page.on(
        "console",
        lambda message: violations.append(message.text) if "Content Security" in message.text else None,
    )
    try:
        page.goto(f"{site.url}{BASE}/login")
        page.get_by_label("Your Misskey server").press_sequentially(f"{STANDIN_HOST}:{standin.port}")
        expect(page.locator("#server-preview")).to_contain_text("Stand-in Misskey")
        page.get_by_role("button", name="Continue to your server").click()
        page.wait_for_url(f"{standin.url}/miauth/**")
        page.get_by_role("button", name="@alice").click()
        page.get_by_role("button", name="Accept").click()
        page.wait_for_url(f"{site.url}{BASE}/")
        expect(page.get_by_role("heading", name="Signed in")).to_be_visible()
        page.get_by_role("button", name="Post").click()
        expect(page.locator("#playground-output")).to_contain_text("createdNote")
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("heading", name="You are signed out")).to_be_visible()
        assert page.url == f"{site.url}{BASE}/signed-out"
    finally:
        context.close()
    ours = [url for url in asked if url.startswith(site.url)]
    assert any(url.startswith(f"{site.url}{BASE}/lookup?") for url in ours)
    assert f"{site.url}{BASE}/api/notes/create" in ours
    assert all(url.startswith(f"{site.url}{BASE}/") for url in ours), ours
    assert violations == []

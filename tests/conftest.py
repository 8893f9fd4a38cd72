"""The fixture ladder: a stand-in Misskey server → a real tobira process → a browser-like client."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser as Chromium

    from app.standin import RunningStandin

ROOT = Path(__file__).resolve().parent.parent
STANDIN_HOST = "127.0.0.2"  # another loopback address: cookies are per host, as for a real instance
REDIS_URL = os.environ.get("TOBIRA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Debian's Chromium, never a browser Playwright downloads; the flags keep it off the (closed) network.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    """Real Chromium, driven by Playwright, for the browser tests of one module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def standin() -> Iterator[RunningStandin]:
    from app.standin import StandinConfig, run_standin_in_thread

    port = free_port(STANDIN_HOST)
    with run_standin_in_thread(
        StandinConfig(base_url=f"http://{STANDIN_HOST}:{port}"), host=STANDIN_HOST, port=port
    ) as running:
        yield running


@dataclass
class TobiraProcess:
    """tobira run by uvicorn in its own process, as an operator would start it."""

    url: str
    log_path: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_tobira(tmp_path: Path, base_path: str = "", **env: str) -> TobiraProcess:
    """tobira on a free port; with `base_path` ("/misskey") under that path, its `url` the path's."""
    port = free_port()
    url = f"http://127.0.0.1:{port}{base_path}"
    full_env = {
        "PATH": os.environ.get("PATH", ""),
        "TOBIRA_PUBLIC_URL": url,
        "TOBIRA_DATA_DIR": str(tmp_path / "data"),
        "TOBIRA_LOGIN_RATE_LIMIT": "0",
        **env,
    }
    log_path = tmp_path / f"tobira-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "app.main:create_app",
                "--http",
                "app.lanes:LaneProtocol",  # as `tobira serve` runs it, with uvicorn's debug and access logs
                "--no-proxy-headers",
                "--ws-per-message-deflate",
                "false",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "debug",
            ],
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = TobiraProcess(url, log_path, process, full_env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tobira exited:\n{server.log()}")
        try:
            # At the root even under a path: health checks reach the container straight.
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"tobira did not start:\n{server.log()}")


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        return REDIS_URL
    return f"sqlite:///{tmp_path / 'store.sqlite3'}"


@pytest.fixture(scope="module")
def tobira(tmp_path_factory: pytest.TempPathFactory, standin: RunningStandin) -> Iterator[TobiraProcess]:
    server = start_tobira(
        tmp_path_factory.mktemp("tobira"),
        TOBIRA_DEV_INSTANCES=standin.url,
        TOBIRA_PERMISSIONS="read:account,write:notes,write:drive",
    )
    yield server
    server.stop()


@dataclass
class Browser:
    """A cookie-keeping client that behaves like a person's browser, redirects followed by hand."""

    tobira: str
    standin: RunningStandin
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=20))
    last_session: str | None = None
    origin: str | None = None  # the Origin its pages have, when tobira's public URL is not `tobira`

    def post_form(self, path: str, data: dict[str, str]) -> httpx.Response:
        return self.client.post(self.tobira + path, data=data, headers={"Origin": self.origin or self.tobira})

    def start(self, instance: str | None = None, return_to: str | None = None) -> httpx.Response:
        """Submit the sign-in form; on success the answer is a 303 to the consent page."""
        data = {"instance": f"{STANDIN_HOST}:{self.standin.port}" if instance is None else instance}
        if return_to is not None:
            data["return_to"] = return_to
        answer = self.post_form("/login", data)
        if answer.status_code == 303:
            self.last_session = urlsplit(answer.headers["location"]).path.rsplit("/", 1)[-1]
        return answer

    def approve(self, consent_url: str, user: str = "alice") -> str:
        """Click Accept on the stand-in's consent page; returns the callback URL it redirects to."""
        session = urlsplit(consent_url).path.rsplit("/", 1)[-1]
        assert self.client.get(consent_url).status_code == 200
        answer = self.client.post(f"{self.standin.url}/miauth/{session}/accept", data={"user": user})
        assert answer.status_code in (302, 303), answer.text
        return answer.headers["location"]

    def callback(self, url: str) -> httpx.Response:
        return self.client.get(url)

    def sign_in(self, user: str = "alice", return_to: str | None = None) -> httpx.Response:
        started = self.start(return_to=return_to)
        assert started.status_code == 303, started.text
        finished = self.callback(self.approve(started.headers["location"], user))
        assert finished.status_code == 303, finished.text
        return finished

    def api(self, endpoint: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        headers = {"Origin": self.tobira, **kwargs.pop("headers", {})}
        if "files" not in kwargs and "content" not in kwargs and "data" not in kwargs:
            kwargs["json"] = {} if body is None else body
        return self.client.post(f"{self.tobira}/api/{endpoint}", headers=headers, **kwargs)

    def session(self) -> httpx.Response:
        return self.client.get(self.tobira + "/session")


@pytest.fixture
def browser(tobira: TobiraProcess, standin: RunningStandin) -> Iterator[Browser]:
    with httpx.Client(timeout=20) as client:
        yield Browser(tobira.url, standin, client)


@pytest.fixture
def new_browser(tobira: TobiraProcess, standin: RunningStandin) -> Iterator[Any]:
    clients: list[httpx.Client] = []

    def make() -> Browser:
        client = httpx.Client(timeout=20)
        clients.append(client)
        return Browser(tobira.url, standin, client)

    yield make
    for client in clients:
        client.close()


def raw_request(
    base_url: str, request_line: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, bytes]:
    """Send a request exactly as written (no client normalises the path); returns (status, body)."""
    parts = urlsplit(base_url)
    head = [request_line, f"Host: {parts.netloc}", f"Content-Length: {len(body)}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def session_param(url: str) -> str:
    return parse_qs(urlsplit(url).query)["session"][0]


def random_session() -> str:
    return str(uuid.uuid4())

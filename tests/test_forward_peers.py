"""Forward authentication with the real proxies: nginx `auth_request` and Caddy `forward_auth`, each
terminating TLS for two names on one loopback port and protecting a small app with tobira, in Chromium.

The names are `auth.tobira.localhost` (tobira) and `app.tobira.localhost` (the protected app): Chromium
resolves every `*.localhost` name to loopback by itself, so nothing touches the machine's /etc/hosts, and
`tobira.localhost` is the cookie domain both share (a real deployment uses its own, e.g. `example.com`).
The certificate comes from a trustme CA; the browser context is told to accept it.

Each proxy, in turn: signed out → tobira's sign-in → back on the page asked for, which sees who signed in;
an account the rules refuse → 403; sign-out → sent to sign in again.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme
from playwright.sync_api import Browser, Page, expect

from app.standin import RunningStandin
from tests.conftest import STANDIN_HOST, TobiraProcess, free_port, start_tobira
from tests.nginx_support import temp_paths, wait_listening

DOMAIN = "tobira.localhost"
AUTH = f"auth.{DOMAIN}"
APP = f"app.{DOMAIN}"
KEY = "forward-peers-" + "k" * 32
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
CADDY = shutil.which("caddy")


class EchoApp(BaseHTTPRequestHandler):
    """The protected app: a page saying who the proxy says is signed in."""

    def do_GET(self) -> None:
        user = self.headers.get("Remote-User", "nobody")
        name = self.headers.get("Remote-Name", "").encode("latin-1").decode("utf-8", "replace")
        body = f"<!doctype html><title>app</title><h1>Hello {user}</h1><p id=name>{name}</p><p id=path>"
        body += f"{self.path}</p>"
        data = body.encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def app_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoApp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    folder.chmod(0o755)  # nginx's workers (nobody, when we are root) read nothing here, but the master does
    cert = trustme.CA().issue_cert(AUTH, APP)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return cert_path, key_path


def nginx_config(prefix: Path, port: int, tobira: int, app: int, tls: tuple[Path, Path]) -> str:
    """nginx: tobira on auth.…, the app on app.… behind `auth_request /auth/request` (the README's)."""
    cert, key = tls
    return f"""
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
{temp_paths(prefix)}
    ssl_certificate {cert};
    ssl_certificate_key {key};

    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {AUTH};
        location / {{
            proxy_pass http://127.0.0.1:{tobira};
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}

    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {APP};

        location = /tobira-auth {{
            internal;
            proxy_pass http://127.0.0.1:{tobira}/auth/request;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
        }}

        # tobira's own page for a refused account (auth_request passes on only the status).
        location = /tobira-denied {{
            internal;
            proxy_pass http://127.0.0.1:{tobira}/auth/request;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
        }}

        location / {{
            auth_request /tobira-auth;
            auth_request_set $tobira_user $upstream_http_remote_user;
            auth_request_set $tobira_name $upstream_http_remote_name;
            auth_request_set $tobira_sign_in $upstream_http_location;
            error_page 401 =302 $tobira_sign_in;
            error_page 403 /tobira-denied;

            proxy_pass http://127.0.0.1:{app};
            proxy_set_header Remote-User $tobira_user;
            proxy_set_header Remote-Name $tobira_name;
        }}
    }}
}}
"""


def caddy_config(port: int, tobira: int, app: int, tls: tuple[Path, Path]) -> str:
    """Caddy: tobira on auth.…, the app on app.… behind `forward_auth … /auth/forward` (the README's)."""
    cert, key = tls
    return f"""
{{
    admin off
    auto_https off
    skip_install_trust
}}

https://{AUTH}:{port} {{
    bind 127.0.0.1
    tls {cert} {key}
    reverse_proxy 127.0.0.1:{tobira}
}}

https://{APP}:{port} {{
    bind 127.0.0.1
    tls {cert} {key}
    forward_auth 127.0.0.1:{tobira} {{
        uri /auth/forward
        copy_headers Remote-User Remote-Name X-Tobira-Instance X-Tobira-User-Id
    }}
    reverse_proxy 127.0.0.1:{app}
}}
"""


@dataclass
class Protected:
    kind: str
    port: int
    tobira: TobiraProcess

    @property
    def app(self) -> str:
        return f"https://{APP}:{self.port}"

    @property
    def auth(self) -> str:
        return f"https://{AUTH}:{self.port}"


@pytest.fixture(scope="module", params=["nginx", "caddy"])
def protected(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    standin: RunningStandin,
    app_port: int,
    certificate: tuple[Path, Path],
) -> Iterator[Protected]:
    kind: str = request.param
    if (NGINX if kind == "nginx" else CADDY) is None:
        pytest.fail(f"{kind} is not installed (scripts/_setup.sh installs it)")
    folder = tmp_path_factory.mktemp(kind)
    folder.chmod(0o755)
    port = free_port()
    rules = folder / "rules.toml"
    rules.write_text(f'[[rules]]\nhosts = ["{APP}"]\nusers = ["alice@{STANDIN_HOST}:{standin.port}"]\n')
    tobira = start_tobira(
        folder,
        TOBIRA_PUBLIC_URL=f"https://{AUTH}:{port}",
        TOBIRA_SECRET_KEYS=KEY,
        TOBIRA_COOKIE_DOMAIN=DOMAIN,
        TOBIRA_ACCESS_RULES=str(rules),
        TOBIRA_DEV_INSTANCES=standin.url,
        TOBIRA_PERMISSIONS="",
    )
    log = folder / f"{kind}.log"
    tobira_port = int(tobira.url.rsplit(":", 1)[1])
    if kind == "nginx":
        config = folder / "nginx.conf"
        config.write_text(nginx_config(folder, port, tobira_port, app_port, certificate))
        command = [str(NGINX), "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(config)]
    else:
        config = folder / "Caddyfile"
        config.write_text(caddy_config(port, tobira_port, app_port, certificate))
        command = [str(CADDY), "run", "--config", str(config), "--adapter", "caddyfile"]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(folder), "XDG_DATA_HOME": str(folder / "data")}
    env["XDG_CONFIG_HOME"] = str(folder / "config")
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=folder, start_new_session=True
        )
    try:
        wait_listening(port, process, log)
        yield Protected(kind, port, tobira)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        tobira.stop()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context(ignore_https_errors=True)
    page = context.new_page()
    yield page
    context.close()


def sign_in_on_the_way(page: Page, protected: Protected, standin: RunningStandin, user: str) -> None:
    """From tobira's sign-in form (where the proxy sent the browser) through the stand-in's consent."""
    page.wait_for_url(f"{protected.auth}/login?**")
    page.get_by_label("Your Misskey server").fill(f"{STANDIN_HOST}:{standin.port}")
    page.get_by_role("button", name="Continue to your server").click()
    page.wait_for_url(f"{standin.url}/miauth/**")
    page.get_by_role("button", name=f"@{user}").click()
    page.get_by_role("button", name="Accept").click()


def test_sign_in_comes_back_to_the_page(page: Page, protected: Protected, standin: RunningStandin) -> None:
    page.goto(f"{protected.app}/reports/q3?tab=a&sort=b")
    sign_in_on_the_way(page, protected, standin, "alice")
    page.wait_for_url(f"{protected.app}/reports/q3?tab=a&sort=b")
    account = f"alice@{STANDIN_HOST}:{standin.port}"
    expect(page.get_by_role("heading", name=f"Hello {account}")).to_be_visible()
    expect(page.locator("#path")).to_have_text("/reports/q3?tab=a&sort=b")
    session = [cookie for cookie in page.context.cookies() if cookie["name"] == "__Secure-tobira"]
    assert len(session) == 1
    assert session[0]["domain"] in (DOMAIN, "." + DOMAIN)
    assert session[0]["secure"] and session[0]["httpOnly"]
    # Signed in: another page of the app opens at once, and tobira's own page knows the person.
    page.goto(f"{protected.app}/other")
    expect(page.get_by_role("heading", name=f"Hello {account}")).to_be_visible()
    page.goto(protected.auth + "/")
    expect(page.get_by_text(f"@{account}")).to_be_visible()
    # Sign-out on tobira: the app sends the browser to sign in again.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="You are signed out")).to_be_visible()
    page.goto(f"{protected.app}/reports/q3")
    page.wait_for_url(f"{protected.auth}/login?**")
    assert not [cookie for cookie in page.context.cookies() if cookie["name"] == "__Secure-tobira"]


def test_an_account_the_rules_refuse(page: Page, protected: Protected, standin: RunningStandin) -> None:
    page.goto(f"{protected.app}/reports")
    sign_in_on_the_way(page, protected, standin, "bob")
    page.wait_for_url(f"{protected.app}/reports")
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text))
    with page.expect_response(f"{protected.auth}/static/tobira.css") as stylesheet:
        answer = page.reload()
    assert answer is not None and answer.status == 403
    assert stylesheet.value.status == 200  # the page, on the app's origin, is styled from tobira's
    expect(page.get_by_role("heading", name="You may not open this site")).to_be_visible()
    expect(page.get_by_text("ACCESS_DENIED")).to_be_visible()
    assert not [text for text in violations if "Content Security Policy" in text]
    assert page.get_by_role("link", name="tobira").get_attribute("href") == f"{protected.auth}/"
    # The page offers another account, on tobira, coming back here afterwards.
    page.get_by_role("link", name="Use another account").click()
    page.wait_for_url(f"{protected.auth}/login?**")
    expect(page.locator("input[name=return_to]")).to_have_value(f"{protected.app}/reports")

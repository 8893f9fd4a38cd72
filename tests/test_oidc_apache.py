"""A real relying party in front of a page: Apache httpd with mod_auth_openidc, tobira as its OpenID
provider (through the stand-in Misskey), and Chromium opening the protected page. The page (server-side
includes) prints what mod_auth_openidc passes on: the claims, and the user it names."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from app.standin import RunningStandin
from tests.conftest import STANDIN_HOST, TobiraProcess, free_port, start_tobira

if TYPE_CHECKING:
    from playwright.sync_api import Browser as Chromium

APACHE = shutil.which("apache2") or "/usr/sbin/apache2"
MODULES = Path("/usr/lib/apache2/modules")
CLIENT_SECRET = "apache-secret-0123456789abcdef"

# What the README tells an operator to write, with this test's ports filled in.
HTTPD_CONF = """
ServerRoot "{root}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile "{root}/httpd.pid"
ErrorLog "{root}/error.log"
LogLevel warn auth_openidc:info
User {user}
Group {group}
DocumentRoot "{root}/site"
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authn_core_module {modules}/mod_authn_core.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule authz_user_module {modules}/mod_authz_user.so
LoadModule mime_module {modules}/mod_mime.so
TypesConfig /dev/null
LoadModule include_module {modules}/mod_include.so
LoadModule auth_openidc_module {modules}/mod_auth_openidc.so

OIDCProviderMetadataURL {tobira}/.well-known/openid-configuration
OIDCClientID apache
OIDCClientSecret {secret}
OIDCRedirectURI http://127.0.0.1:{port}/protected/redirect_uri
OIDCCryptoPassphrase a-passphrase-for-the-session-cookie
OIDCScope "openid profile"
OIDCPKCEMethod S256
OIDCRemoteUserClaim preferred_username
OIDCDefaultLoggedOutURL http://127.0.0.1:{port}/bye.html

<Directory />
    AllowOverride None
</Directory>
<Directory "{root}/site">
    Options +Includes
    AddOutputFilter INCLUDES .shtml
    AddType text/html .shtml
    Require all granted
</Directory>
<Location /protected>
    AuthType openid-connect
    Require valid-user
</Location>
"""

PAGE = """<!doctype html><title>protected</title>
<h1>Hello <span id="user"><!--#echo var="REMOTE_USER" --></span></h1>
<p id="sub"><!--#echo var="OIDC_CLAIM_sub" --></p>
<p id="host"><!--#echo var="OIDC_CLAIM_misskey_host" --></p>
<p id="name"><!--#echo var="OIDC_CLAIM_name" --></p>
<p id="iss"><!--#echo var="OIDC_CLAIM_iss" --></p>
"""


@dataclass
class Apache:
    url: str
    root: Path

    def log(self) -> str:
        path = self.root / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


def clients(folder: Path, apache_url: str) -> Path:
    path = folder / "clients.toml"
    path.write_text(
        f"""
[[clients]]
client_id = "apache"
client_name = "Team pages"
redirect_uris = ["{apache_url}/protected/redirect_uri"]
post_logout_redirect_uris = ["{apache_url}/bye.html"]
client_secret = "{CLIENT_SECRET}"
"""
    )
    return path


@pytest.fixture(scope="module")
def apache_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def tobira(
    tmp_path_factory: pytest.TempPathFactory, standin: RunningStandin, apache_port: int
) -> Iterator[TobiraProcess]:
    folder = tmp_path_factory.mktemp("tobira-apache")
    server = start_tobira(
        folder,
        TOBIRA_DEV_INSTANCES=standin.url,
        TOBIRA_OIDC_CLIENTS=str(clients(folder, f"http://127.0.0.1:{apache_port}")),
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def apache(tobira: TobiraProcess, apache_port: int) -> Iterator[Apache]:
    # Apache's children run as www-data: its folder must be readable outside pytest's private tmp folder.
    root = Path(tempfile.mkdtemp(prefix="tobira-apache-"))
    (root / "site" / "protected").mkdir(parents=True)
    (root / "site" / "protected" / "index.shtml").write_text(PAGE)
    (root / "site" / "bye.html").write_text(
        "<!doctype html><title>bye</title><h1>Signed out of the pages</h1>"
    )
    root.chmod(0o755)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    config = root / "httpd.conf"
    config.write_text(
        HTTPD_CONF.format(
            root=root,
            port=apache_port,
            modules=MODULES,
            tobira=tobira.url,
            secret=CLIENT_SECRET,
            user="www-data",
            group="www-data",
        )
    )
    process = subprocess.Popen([APACHE, "-f", str(config), "-DFOREGROUND"], stderr=subprocess.STDOUT)
    running = Apache(f"http://127.0.0.1:{apache_port}", root)
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(running.url + "/bye.html", timeout=1)
            break
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"apache did not start:\n{running.log()}") from None
            time.sleep(0.1)
    yield running
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    shutil.rmtree(root, ignore_errors=True)


def test_chromium_reaches_the_protected_page_signed_in(
    chromium: Chromium, apache: Apache, tobira: TobiraProcess, standin: RunningStandin
) -> None:
    context = chromium.new_context()
    page = context.new_page()
    try:
        page.goto(apache.url + "/protected/index.shtml")
        page.wait_for_url(tobira.url + "/oidc/authorize/page**")
        assert "Team pages" in page.content() and apache.url in page.content()
        page.get_by_label("Your Misskey server").fill(f"{STANDIN_HOST}:{standin.port}")
        page.get_by_role("button", name="Continue to your server").click()
        page.wait_for_url(f"{standin.url}/miauth/**")
        page.get_by_role("button", name="@alice").click()
        page.get_by_role("button", name="Accept").click()
        page.wait_for_url(apache.url + "/protected/index.shtml")
        host = f"{STANDIN_HOST}:{standin.port}"
        assert page.locator("#user").inner_text() == f"alice@{host}"
        assert page.locator("#host").inner_text() == host
        assert page.locator("#name").inner_text() == "Alice"
        assert page.locator("#iss").inner_text() == tobira.url
        assert len(page.locator("#sub").inner_text()) == 43

        # Signed in to tobira now: the next app's sign-in, or this one's after its session, goes straight on.
        context.clear_cookies(name="mod_auth_openidc_session")
        page.goto(apache.url + "/protected/index.shtml")
        page.wait_for_url(apache.url + "/protected/index.shtml")
        assert page.locator("#user").inner_text() == f"alice@{host}"
    finally:
        context.close()
    assert "error" not in apache.log().lower().replace("errorlog", ""), apache.log()


def test_logout_through_mod_auth_openidc_ends_the_tobira_session(
    chromium: Chromium, apache: Apache, tobira: TobiraProcess, standin: RunningStandin
) -> None:
    context = chromium.new_context()
    page = context.new_page()
    try:
        page.goto(apache.url + "/protected/index.shtml")
        page.get_by_label("Your Misskey server").fill(f"{STANDIN_HOST}:{standin.port}")
        page.get_by_role("button", name="Continue to your server").click()
        page.get_by_role("button", name="@bob").click()
        page.get_by_role("button", name="Accept").click()
        page.wait_for_url(apache.url + "/protected/index.shtml")
        assert page.locator("#user").inner_text().startswith("bob@")
        logout = f"{apache.url}/protected/redirect_uri?logout={apache.url}/bye.html"
        page.goto(logout)
        page.wait_for_url(apache.url + "/bye.html**")
        assert page.get_by_role("heading").inner_text() == "Signed out of the pages"
        session = page.request.get(tobira.url + "/session")
        assert session.status == 401
    finally:
        context.close()


def test_continue_as_and_withdrawing_consent_in_chromium(
    chromium: Chromium, apache: Apache, tobira: TobiraProcess, standin: RunningStandin
) -> None:
    """The page's "Continue as" form ends in a redirect to the app's origin: the page's own
    Content-Security-Policy must allow that form target, as Chromium enforces it on the redirect."""
    context = chromium.new_context()
    page = context.new_page()
    violations: list[str] = []
    page.on(
        "console",
        lambda message: violations.append(message.text) if "Content Security" in message.text else None,
    )
    try:
        page.goto(apache.url + "/protected/index.shtml")
        page.get_by_label("Your Misskey server").fill(f"{STANDIN_HOST}:{standin.port}")
        page.get_by_role("button", name="Continue to your server").click()
        page.get_by_role("button", name="@alice").click()
        page.get_by_role("button", name="Accept").click()
        page.wait_for_url(apache.url + "/protected/index.shtml")

        page.goto(tobira.url + "/")
        page.get_by_role("button", name="Withdraw").click()
        page.wait_for_url(tobira.url + "/")
        assert "Team pages" not in page.content()

        context.clear_cookies(name="mod_auth_openidc_session")
        page.goto(apache.url + "/protected/index.shtml")
        page.wait_for_url(tobira.url + "/oidc/authorize/page**")  # asked again: the agreement was withdrawn
        page.get_by_role("button", name="Continue as @alice@").click()
        page.wait_for_url(apache.url + "/protected/index.shtml")
        assert page.locator("#user").inner_text().startswith("alice@")
        assert violations == []
    finally:
        context.close()

"""The catalogue of attacks: tables of hostile requests sent to a real tobira process, each naming the attack
and the safe outcome it must get.

Families (the row ids name each attack):
- server input: every spelling of a local or private address, reserved names, userinfo and port tricks,
  control characters, over-long input, look-alikes, and dev-origin spellings;
- rebinding (an in-process tobira with a scripted resolver) and redirects to private addresses (a
  redirecting dev instance) at every step that calls an instance: discovery, `/check`, the proxy, logout;
- open redirect in `return_to`;
- the callback: malformed sessions, login CSRF, replay, forged or wrong-purpose sign-in cookies, tabs, and
  expiry at its exact boundary (an in-process tobira with an injected clock);
- cookies: tampering, truncation, key rotation, replay after logout, the exact `Set-Cookie` attributes;
- the proxy: cross-site requests, content types, endpoint-name tricks, the client's own `i`, sizes, the deny
  list.

Every test runs under `no_connection_reaches_the_canary`: listeners on CANARY_IP (ports 443, 80, 3000, 8080
and the stand-in's port) and a few other loopback ports count the connections they accept, and must count
none. Rows that need tobira's secret keys use this module's own `tobira` (it overrides conftest's), started
with known keys, the stand-in and the redirector as dev instances, and small body caps.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import html
import http.cookiejar
import re
import socket
import ssl
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from app.config import load_settings
from app.crypto import CookieCodec, derive_key, key_id
from app.hosts import parse_instance
from app.main import create_app
from app.notices import SignOut, SignOutNotices
from app.standin import RunningStandin
from tests.conftest import STANDIN_HOST, Browser, TobiraProcess, raw_request, session_param, start_tobira
from tests.hostile_support import (
    CANARY_PORTS,
    EXTRA_CANARIES,
    Canary,
    FakeClock,
    FakeResolver,
    Redirector,
    dev_instance,
    ipv4_spellings,
    mint_pending,
    mint_session,
    pick_canary_ip,
    send_raw,
    tripwire,
)

CANARY_IP = pick_canary_ip()
SPELLINGS = ipv4_spellings(CANARY_IP)
C = CANARY_IP
KEY_1 = "hostile-key-one-0123456789abcdef0123456789abcdef"
KEY_2 = "hostile-key-two-fedcba9876543210fedcba9876543210"
ATTACKER_KEY = "attacker-key-000000000000000000000000000000000"
PERMISSIONS = "read:account,write:notes,write:drive"
BODY_LIMIT = 64 * 1024
UPLOAD_LIMIT = 64 * 1024
SESSION_MAX_AGE = 30 * 24 * 3600
PUBLIC_V4 = "1.1.1.1"
PUBLIC_V6 = "2606:4700::1111"
REBIND_HOST = "misskey.rebind-attack.net"
EVIL = "evil.example"

# ---------------------------------------------------------------------------------------------------------
# Fixtures

# Loading the system's CAs is most of what creating an httpx.Client costs; every client here shares one.
TLS = ssl.create_default_context()
_web: list[httpx.Client] = []


def web() -> httpx.Client:
    """The module's stateless client: it never keeps a cookie, so each request says exactly what it sends."""
    return _web[0]


# tobira's own static scripts; anything else that looks like a script tag would be reflected input.
OWN_SCRIPTS = re.compile(r'<script src="/static/[a-z-]+\.js"></script>')


@pytest.fixture(scope="module", autouse=True)
def stateless_client() -> Iterator[None]:
    jar = http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    with httpx.Client(timeout=20, verify=TLS, cookies=jar) as client:
        _web.append(client)
        yield
        _web.clear()


@pytest.fixture
def new_browser(tobira: TobiraProcess, standin: RunningStandin) -> Iterator[Callable[[], Browser]]:
    """Overrides conftest's: the same browsers, sharing one TLS context (hundreds of rows start one)."""
    clients: list[httpx.Client] = []

    def make() -> Browser:
        clients.append(httpx.Client(timeout=20, verify=TLS))
        return Browser(tobira.url, standin, clients[-1])

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def browser(new_browser: Callable[[], Browser]) -> Browser:
    return new_browser()


@pytest.fixture(scope="module")
def canary(standin: RunningStandin) -> Iterator[Canary]:
    listeners = Canary([(CANARY_IP, port) for port in (*CANARY_PORTS, standin.port)], EXTRA_CANARIES)
    yield listeners
    listeners.close()


@pytest.fixture(autouse=True)
def no_connection_reaches_the_canary(canary: Canary) -> Iterator[None]:
    before = canary.hits()
    yield
    assert canary.hits() == before, "tobira connected to an address it must never reach"


def test_the_canary_counts_what_reaches_it() -> None:
    """A canary that saw nothing proves something only if it would have seen it: a fresh one, tested."""
    own = Canary([(CANARY_IP, 0)])
    try:
        assert own.hits() == []
        with socket.create_connection(own.listeners[0], timeout=5) as intruder:
            peer = intruder.getsockname()
        assert [hit.peer for hit in own.hits()] == [(peer[0], peer[1])]
        assert len(own.hits()) == 1
    finally:
        own.close()


@pytest.fixture(scope="module")
def redirector() -> Iterator[Redirector]:
    server = Redirector()
    yield server
    server.close()


@pytest.fixture(scope="module")
def tobira(
    tmp_path_factory: pytest.TempPathFactory, standin: RunningStandin, redirector: Redirector
) -> Iterator[TobiraProcess]:
    """This module's tobira (overrides conftest's): known keys, two dev instances, small body caps."""
    server = start_tobira(
        tmp_path_factory.mktemp("hostile"),
        TOBIRA_SECRET_KEYS=KEY_1,
        TOBIRA_DEV_INSTANCES=f"{standin.url},{redirector.url}",
        TOBIRA_PERMISSIONS=PERMISSIONS,
        TOBIRA_MAX_BODY_BYTES=str(BODY_LIMIT),
        TOBIRA_MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT),
    )
    yield server
    server.stop()


@dataclass(frozen=True)
class Account:
    """A signed-in session of this module's tobira: its cookie value and the token behind it."""

    cookie: str
    token: str


@pytest.fixture(scope="module")
def alice(tobira: TobiraProcess, standin: RunningStandin) -> Account:
    with httpx.Client(timeout=20, verify=TLS) as client:
        Browser(tobira.url, standin, client).sign_in("alice")
        token = standin.state.token_of("alice")
        assert token is not None
        return Account(client.cookies["tobira"], token)


@pytest.fixture(scope="module")
def bob_token(standin: RunningStandin) -> str:
    """A real, valid token of another account: if tobira ever forwarded it, the stand-in would accept it."""
    return standin.state.issue_token("bob", PERMISSIONS.split(",")).token


@pytest.fixture(scope="module")
def ended_cookie(tobira: TobiraProcess, standin: RunningStandin) -> str:
    """A session cookie that has been logged out."""
    with httpx.Client(timeout=20, verify=TLS) as client:
        browser = Browser(tobira.url, standin, client)
        browser.sign_in("alice")
        cookie = client.cookies["tobira"]
        assert browser.post_form("/logout", {}).status_code == 303
        return cookie


def store_url_of(server: TobiraProcess) -> str:
    return f"sqlite:///{Path(server.env['TOBIRA_DATA_DIR']).resolve() / 'tobira.sqlite3'}"


@pytest.fixture(scope="module")
def rotated(
    tmp_path_factory: pytest.TempPathFactory, tobira: TobiraProcess, standin: RunningStandin
) -> Iterator[dict[str, TobiraProcess]]:
    """The same deployment under three key lists, sharing one store: [K1], [K2, K1] and [K2]."""
    servers = {"k1": tobira}
    try:
        for name, keys in (("k2,k1", f"{KEY_2},{KEY_1}"), ("k2", KEY_2)):
            servers[name] = start_tobira(
                tmp_path_factory.mktemp("rotated"),
                TOBIRA_SECRET_KEYS=keys,
                TOBIRA_DEV_INSTANCES=standin.url,
                TOBIRA_PERMISSIONS=PERMISSIONS,
                TOBIRA_STORE_URL=store_url_of(tobira),
            )
        yield servers
    finally:
        for name, server in servers.items():
            if name != "k1":
                server.stop()


HTTPS_PUBLIC_URL = "https://tobira.test"


@pytest.fixture(scope="module")
def https_tobira(
    tmp_path_factory: pytest.TempPathFactory, standin: RunningStandin
) -> Iterator[TobiraProcess]:
    """A production deployment (https public URL) reached over plain http on loopback, as behind a proxy."""
    server = start_tobira(
        tmp_path_factory.mktemp("https"),
        TOBIRA_PUBLIC_URL=HTTPS_PUBLIC_URL,
        TOBIRA_SECRET_KEYS=KEY_1,
        TOBIRA_DEV_INSTANCES=standin.url,
    )
    yield server
    server.stop()


# ---------------------------------------------------------------------------------------------------------
# Helpers


def page_code(answer: httpx.Response) -> str:
    """The error code an HTML error page shows."""
    found = re.search(r"Error code: <code>([A-Z_]+)</code>", answer.text)
    assert found is not None, answer.text
    return found[1]


def json_code(body: bytes) -> str:
    code: str = orjson.loads(body)["error"]["code"]
    return code


def set_cookies(answer: httpx.Response) -> dict[str, tuple[str, dict[str, str]]]:
    """{name: (value, {attribute: value})} of every Set-Cookie, attribute names lowercased."""
    found: dict[str, tuple[str, dict[str, str]]] = {}
    for name, header in answer.headers.multi_items():
        if name != "set-cookie":
            continue
        pair, *attributes = [part.strip() for part in header.split(";")]
        cookie, _, value = pair.partition("=")
        found[cookie] = (value, {k.lower(): v for k, _, v in (a.partition("=") for a in attributes)})
    return found


def call_api(
    tobira: TobiraProcess,
    cookie: str | None,
    endpoint: str,
    content: bytes = b"{}",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST to the proxy as a same-origin page would, with `cookie` as the session cookie."""
    sent = {"Origin": tobira.url, "Content-Type": "application/json", **(headers or {})}
    if cookie is not None:
        sent["Cookie"] = f"tobira={cookie}"
    return web().post(f"{tobira.url}/api/{endpoint}", content=content, headers=sent)


def get_session(base_url: str, cookie: str, name: str = "tobira") -> httpx.Response:
    return web().get(f"{base_url}/session", headers={"Cookie": f"{name}={cookie}"})


def standin_authority(standin: RunningStandin) -> str:
    return f"{STANDIN_HOST}:{standin.port}"


def fill(text: str, standin: RunningStandin) -> str:
    return text.replace("{port}", str(standin.port)).replace("{standin}", standin.url)


# ---------------------------------------------------------------------------------------------------------
# Server input: what a stranger types as their server

REFUSED = frozenset({"INVALID_INSTANCE"})
# Names the parser cannot judge: a resolver decides. Offline they do not resolve; online they resolve to a
# loopback address. Either way the answer is a 400 page and nothing is connected to.
NEEDS_DNS = frozenset({"INSTANCE_NOT_FOUND", "INSTANCE_ADDRESS_FORBIDDEN"})


def _server_input_rows() -> list[Any]:
    rows: list[tuple[str, str, frozenset[str]]] = []
    for name, value in SPELLINGS.items():
        rows.append((f"canary-{name}", value, REFUSED))
        rows.append((f"canary-{name}-https-443", f"https://{value}:443/", REFUSED))
    rows += [
        ("canary-port-80", f"{C}:80", REFUSED),
        ("canary-port-3000", f"{C}:3000", REFUSED),
        ("canary-http-8080", f"http://{C}:8080", REFUSED),
        ("canary-http", f"http://{C}", REFUSED),
        ("canary-on-standin-port", f"{C}:{{port}}", REFUSED),
        ("canary-http-on-standin-port", f"http://{C}:{{port}}", REFUSED),
        ("canary-uppercase-scheme", f"HTTPS://{C}", REFUSED),
        ("localhost", "localhost", REFUSED),
        ("localhost-upper-case", "LOCALHOST", REFUSED),
        ("localhost-trailing-dot", "localhost.", REFUSED),
        ("localhost-443", "localhost:443", REFUSED),
        ("localhost-https", "https://localhost/", REFUSED),
        ("localhost-http-standin-port", "http://localhost:{port}", REFUSED),
        ("localhost-standin-port", "localhost:{port}", REFUSED),
        ("subdomain-of-localhost", "misskey.localhost", REFUSED),
        ("deep-subdomain-of-localhost", "a.b.localhost", REFUSED),
        ("localhost-localdomain", "localhost.localdomain", REFUSED),
        ("ip6-localhost", "ip6-localhost", REFUSED),
        ("full-width-localhost", "ｌｏｃａｌｈｏｓｔ", REFUSED),
        ("circled-letters-localhost", "ⓛⓞⓒⓐⓛⓗⓞⓢⓣ", REFUSED),
        ("roman-numeral-l-localhost", "\u217cocalhost", REFUSED),
        ("cyrillic-o-localhost", "l\u043ecalhost", REFUSED),
        ("localhost-ideographic-dot", "localhost。", REFUSED),
        ("localhost-mixed-case-dot", "LocalHost.", REFUSED),
        ("emoji-subdomain-of-localhost", "\U0001f600.localhost", REFUSED),
        ("v6-loopback-bracketed", "[::1]", REFUSED),
        ("v6-loopback-bare", "::1", REFUSED),
        ("v6-loopback-long-form", "[0:0:0:0:0:0:0:1]", REFUSED),
        ("v6-loopback-443", "[::1]:443", REFUSED),
        ("v6-loopback-https", "https://[::1]:443/", REFUSED),
        ("v6-unspecified", "[::]", REFUSED),
        ("v6-link-local-with-zone", "[fe80::1%25lo]", REFUSED),
        ("v6-mapped-127.0.0.1-hex", "[::ffff:7f00:1]", REFUSED),
        ("v6-unique-local", "[fd00::1]", REFUSED),
        ("v6-unique-local-fc00", "[fc00::1]", REFUSED),
        ("v4-unspecified", "0.0.0.0", REFUSED),
        ("v4-zero", "0", REFUSED),
        ("v4-zero-hex", "0x0", REFUSED),
        ("rfc1918-10", "10.0.0.1", REFUSED),
        ("rfc1918-192.168", "192.168.1.1", REFUSED),
        ("rfc1918-172.16", "172.16.0.1", REFUSED),
        ("cgnat-100.64", "100.64.0.1", REFUSED),
        ("cloud-metadata", "169.254.169.254", REFUSED),
        ("cloud-metadata-decimal", "2852039166", REFUSED),
        ("cloud-metadata-name", "metadata.google.internal", REFUSED),
        ("metadata-single-label", "metadata", REFUSED),
        ("instance-data-single-label", "instance-data", REFUSED),
        ("wildcard-dns-nip-io-to-canary", f"{C}.nip.io", NEEDS_DNS),
        ("wildcard-dns-sslip-io-to-canary", f"{C.replace('.', '-')}.sslip.io", NEEDS_DNS),
        ("public-name-for-loopback-localtest-me", "localtest.me", NEEDS_DNS),
        ("public-name-for-loopback-lvh-me", "lvh.me", NEEDS_DNS),
        ("reserved-local", "printer.local", REFUSED),
        ("reserved-lan", "router.lan", REFUSED),
        ("reserved-home", "nas.home", REFUSED),
        ("reserved-corp", "wiki.corp", REFUSED),
        ("reserved-internal", "misskey.internal", REFUSED),
        ("reserved-intranet", "misskey.intranet", REFUSED),
        ("reserved-private", "misskey.private", REFUSED),
        ("reserved-test", "misskey.test", REFUSED),
        ("reserved-example-tld", "misskey.example", REFUSED),
        ("reserved-invalid", "misskey.invalid", REFUSED),
        ("reserved-onion", "misskeyxxxxxxxxxxxxxxxxxxxx.onion", REFUSED),
        ("reserved-i2p", "misskey.i2p", REFUSED),
        ("reserved-alt", "misskey.alt", REFUSED),
        ("reserved-home-arpa", "nas.home.arpa", REFUSED),
        ("reserved-in-addr-arpa", "9.0.0.127.in-addr.arpa", REFUSED),
        ("reserved-example-com", "example.com", REFUSED),
        ("reserved-subdomain-of-example-org", "misskey.example.org", REFUSED),
        ("reserved-localdomain", "misskey.localdomain", REFUSED),
        ("reserved-mail", "misskey.mail", REFUSED),
        ("single-label", "misskey", REFUSED),
        ("numeric-top-level-domain", "misskey.123", REFUSED),
        ("hex-top-level-domain", "misskey.0x7f", REFUSED),
        ("userinfo-canary-after-at", f"https://misskey.io@{C}", REFUSED),
        ("userinfo-canary-before-at", f"https://{C}@misskey.io", REFUSED),
        ("userinfo-with-password", f"https://user:pass@{C}/", REFUSED),
        ("userinfo-without-scheme", f"misskey.io:443@{C}", REFUSED),
        ("userinfo-behind-backslash", f"https://misskey.io\\@{C}", REFUSED),
        ("backslash-in-host", f"https://{C}\\.misskey.io", REFUSED),
        ("fragment-then-at", f"https://misskey.io#@{C}", REFUSED),
        ("query-then-at", f"https://misskey.io?@{C}", REFUSED),
        ("percent-encoded-at", f"https://misskey.io%40{C}", REFUSED),
        ("percent-encoded-slash-then-at", f"https://misskey.io%2F@{C}", REFUSED),
        ("percent-encoded-host", "https://%6cocalhost/", REFUSED),
        ("handle-on-canary", f"@alice@{C}", REFUSED),
        ("handle-on-canary-with-port", f"alice@{C}:443", REFUSED),
        ("handle-on-localhost", "@alice@localhost", REFUSED),
        ("handle-with-two-hosts", f"@alice@misskey.io@{C}", REFUSED),
        ("profile-naming-the-canary", f"https://misskey.io/@alice@{C}", REFUSED),
        ("profile-on-the-canary", f"https://{C}/@alice", REFUSED),
        ("path-traversal-to-canary", f"misskey.io/../{C}", REFUSED),
        ("path-beyond-profile", "https://misskey.io/api/meta", REFUSED),
        ("scheme-relative", f"//{C}", REFUSED),
        ("scheme-with-one-slash", f"https:/{C}", REFUSED),
        ("scheme-without-slashes", f"https:{C}", REFUSED),
        ("file-scheme", "file:///etc/passwd", REFUSED),
        ("gopher-scheme", f"gopher://{C}:443/", REFUSED),
        ("ftp-scheme", f"ftp://{C}", REFUSED),
        ("javascript-scheme", "javascript:alert(1)", REFUSED),
        ("websocket-scheme", f"ws://{C}", REFUSED),
        ("data-scheme", "data:text/html,hi", REFUSED),
        ("port-80", "https://misskey.io:80", REFUSED),
        ("port-8443", "https://misskey.io:8443", REFUSED),
        ("port-65536", "https://misskey.io:65536", REFUSED),
        ("port-zero", "https://misskey.io:0", REFUSED),
        ("port-negative", "https://misskey.io:-1", REFUSED),
        ("port-empty", "https://misskey.io:", REFUSED),
        ("port-twice", "https://misskey.io:443:80", REFUSED),
        ("port-full-width-digits", "https://misskey.io:８０", REFUSED),
        ("port-hex", "https://misskey.io:0x1bb", REFUSED),
        ("port-with-plus", "https://misskey.io:+443", REFUSED),
        ("nul-inside-name", f"misskey.io\x00.{C}", REFUSED),
        ("nul-after-address", f"{C}\x00misskey.io", REFUSED),
        ("crlf-header-injection", f"misskey.io\r\nHost: {C}", REFUSED),
        ("tab-inside-name", "mis\tskey.io", REFUSED),
        ("zero-width-space", "miss\u200bkey.io", REFUSED),
        ("soft-hyphen", "miss\u00adkey.io", REFUSED),
        ("right-to-left-override", "\u202emisskey.io", REFUSED),
        ("delete-character", "misskey.io\x7f", REFUSED),
        ("next-line-character", "miss\u0085key.io", REFUSED),
        ("space-inside-name", "miss key.io", REFUSED),
        ("ideographic-space-inside", f"{C}\u3000misskey.io", REFUSED),
        ("bell-character", "misskey\x07.io", REFUSED),
        ("terminal-escape-sequence", "\x1b[31mmisskey.io", REFUSED),
        ("line-separator", "misskey\u2028.io", REFUSED),
        ("private-use-character", "misskey\ue000.io", REFUSED),
        ("html-injection", "<script>alert(1)</script>.io", REFUSED),
        ("attribute-injection", 'misskey.io" autofocus onfocus="alert(1)', REFUSED),
        ("over-long-1025-characters", "a" * 1022 + ".io", REFUSED),
        ("over-long-label-64", "a" * 64 + ".io", REFUSED),
        ("over-long-name-254", ".".join(["a" * 62] * 4) + ".io", REFUSED),
        ("over-long-200-labels", "a." * 200 + "io", REFUSED),
        ("lookalike-full-width-canary-url", "https://" + SPELLINGS["full-width-digits"] + "/", REFUSED),
        ("lookalike-dotless-i-is-its-own-host", "misskey.\u0131o", NEEDS_DNS),
        ("lookalike-cyrillic-i-is-its-own-host", "m\u0456sskey.io", NEEDS_DNS),
        ("idn-invalid-punycode", "xn--a.io", REFUSED),
        ("idn-bidi-mix", "\u05d0misskey.io", REFUSED),
        ("dev-origin-other-scheme", "https://127.0.0.2:{port}", REFUSED),
        ("dev-origin-trailing-dot", "127.0.0.2.:{port}", REFUSED),
        ("dev-origin-leading-zero-port", "http://127.0.0.2:0{port}", REFUSED),
        ("dev-origin-other-port", "http://127.0.0.2:{port}1", REFUSED),
        ("dev-origin-short-address", "http://127.2:{port}", REFUSED),
        ("dev-origin-decimal-address", "http://2130706434:{port}", REFUSED),
        ("dev-origin-mapped-v6", "http://[::ffff:127.0.0.2]:{port}", REFUSED),
        ("dev-origin-as-localhost", "http://localhost:{port}", REFUSED),
        ("dev-origin-userinfo-then-canary", f"http://127.0.0.2:{{port}}@{C}", REFUSED),
        ("dev-origin-fragment-trick", f"http://{C}:{{port}}#@127.0.0.2:{{port}}", REFUSED),
        ("dev-origin-backslash-trick", f"http://127.0.0.2:{{port}}\\@{C}", REFUSED),
        ("dev-origin-without-port", "127.0.0.2", REFUSED),
        ("dev-origin-full-width-digit", "http://127.0.0.２:{port}", REFUSED),
        ("dev-origin-full-width-scheme", "ｈｔｔｐ://127.0.0.2:{port}", REFUSED),
        ("dev-origin-profile-naming-canary", f"http://127.0.0.2:{{port}}/@alice@{C}", REFUSED),
        ("dev-origin-port-on-canary-handle", f"@alice@{C}:{{port}}", REFUSED),
        ("dev-origin-with-api-path", "http://127.0.0.2:{port}/api/meta", REFUSED),
    ]
    return [pytest.param(typed, codes, id=name) for name, typed, codes in rows]


SERVER_INPUT_ROWS = _server_input_rows()


def start_with(tobira: TobiraProcess, entry: str, typed: str, **extra: str) -> httpx.Response:
    """Start a sign-in the way a person would: the form, or a plain `/login?instance=` link."""
    fields = {"instance": typed, **extra}
    if entry == "form-post":
        return web().post(f"{tobira.url}/login", data=fields, headers={"Origin": tobira.url})
    return web().get(f"{tobira.url}/login", params=fields)


@pytest.mark.parametrize("entry", ["form-post", "link-get"])
@pytest.mark.parametrize(("typed", "codes"), SERVER_INPUT_ROWS)
def test_server_input_is_refused_with_a_page_and_connects_nowhere(
    tobira: TobiraProcess, standin: RunningStandin, entry: str, typed: str, codes: frozenset[str]
) -> None:
    answer = start_with(tobira, entry, fill(typed, standin))
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("text/html")
    assert page_code(answer) in codes
    assert "location" not in answer.headers
    assert "set-cookie" not in answer.headers  # no sign-in was started
    assert "<script" not in OWN_SCRIPTS.sub("", answer.text.lower())


@pytest.mark.parametrize("entry", ["form-post", "link-get"])
@pytest.mark.parametrize(
    "typed",
    [
        pytest.param("a" * 3000 + ".io", id="over-long-3000-characters"),
        pytest.param("https://" + "a" * 10_000 + ".io/", id="over-long-10000-characters"),
    ],
)
def test_over_long_server_input_is_a_400_page(tobira: TobiraProcess, entry: str, typed: str) -> None:
    answer = start_with(tobira, entry, typed)
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("text/html")


# ---------------------------------------------------------------------------------------------------------
# DNS rebinding: an in-process tobira whose resolver the attacker controls


@asynccontextmanager
async def in_process(
    tmp_path: Path,
    *,
    resolver: FakeResolver | None = None,
    clock: Callable[[], float] = time.time,
    **overrides: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """tobira built by `create_app` in this process, driven through ASGI; its outbound calls are real."""
    settings = load_settings(data_dir=tmp_path, secret_keys=[KEY_1], login_rate_limit=0, **overrides)
    app = create_app(settings, resolver=resolver, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        # As a browser on tobira's own pages: its form posts carry tobira's Origin.
        headers = {"Origin": settings.public_origin}
        async with httpx.AsyncClient(
            transport=transport, base_url=settings.public_url, headers=headers
        ) as client:
            yield client


REBINDING_ROWS = [
    pytest.param([[C]], 400, id="only-the-canary"),
    pytest.param([[f"::ffff:{C}"]], 400, id="canary-as-mapped-v6"),
    pytest.param([[f"::ffff:0:{C}"]], 400, id="canary-as-translated-v6"),
    pytest.param([[f"64:ff9b::{C}"]], 400, id="canary-as-nat64"),
    pytest.param([[f"::{C}"]], 400, id="canary-as-compatible-v6"),
    pytest.param([["::1"]], 400, id="v6-loopback"),
    pytest.param([["0.0.0.0"]], 400, id="unspecified"),
    pytest.param([["169.254.169.254"]], 400, id="cloud-metadata"),
    pytest.param([["10.0.0.1"]], 400, id="rfc1918"),
    pytest.param([["fd00::1"]], 400, id="unique-local-v6"),
    pytest.param([["not-an-address"]], 400, id="garbage-answer"),
    pytest.param([[PUBLIC_V4, C]], 400, id="public-and-canary-together"),
    pytest.param([[C, PUBLIC_V4]], 400, id="canary-and-public-together"),
    pytest.param([[PUBLIC_V6, "::1"]], 400, id="public-v6-and-loopback-together"),
    pytest.param([[PUBLIC_V4], [C]], 502, id="public-when-checked-canary-afterwards"),
    pytest.param([[PUBLIC_V6], [f"::ffff:{C}"]], 502, id="public-v6-when-checked-mapped-canary-afterwards"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("stage", ["discovery", "check", "proxy"])
@pytest.mark.parametrize(("answers", "first_status"), REBINDING_ROWS)
async def test_rebinding_never_reaches_a_private_address(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stage: str,
    answers: list[list[str]],
    first_status: int,
) -> None:
    resolver = FakeResolver({REBIND_HOST: answers})
    instance = parse_instance(REBIND_HOST)
    public = {PUBLIC_V4, PUBLIC_V6}
    statuses = []
    with tripwire(monkeypatch) as wire:
        async with in_process(tmp_path, resolver=resolver) as client:
            for _ in range(3):  # the first lookup, then whatever the name answers later
                if stage == "discovery":
                    answer = await client.post("/login", data={"instance": REBIND_HOST})
                elif stage == "check":
                    session = str(uuid.uuid4())
                    client.cookies.set("tobira-signin", mint_pending([KEY_1], instance, session))
                    answer = await client.get("/callback", params={"session": session})
                else:
                    client.cookies.set("tobira", mint_session([KEY_1], instance, "token-of-the-victim"))
                    answer = await client.post(
                        "/api/notes/create", json={"text": "x"}, headers={"Origin": "http://127.0.0.1:8000"}
                    )
                statuses.append(answer.status_code)
                assert "tobira=" not in answer.headers.get("set-cookie", "")
    assert statuses[0] == first_status
    assert set(statuses) <= {400, 502}
    assert resolver.calls and all(call == (REBIND_HOST, 443) for call in resolver.calls)
    assert {address for address, _ in wire.attempts} <= public
    assert all(port == 443 for _, port in wire.attempts)


@pytest.mark.anyio
async def test_a_failed_discovery_leaves_no_coroutine_unawaited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolver = FakeResolver({REBIND_HOST: [[PUBLIC_V4]]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with tripwire(monkeypatch):
            async with in_process(tmp_path, resolver=resolver) as client:
                # The second time the address comes from the DNS cache and the connect fails at once.
                statuses = [(await client.post("/login", data={"instance": REBIND_HOST})).status_code]
                statuses.append((await client.post("/login", data={"instance": REBIND_HOST})).status_code)
        for _ in range(5):  # let the cancelled tasks run their last step, then collect what they dropped
            await asyncio.sleep(0.01)
        gc.collect()
    assert statuses == [502, 502]
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []


# ---------------------------------------------------------------------------------------------------------
# Redirects: an instance that answers with a redirect to a private address

REDIRECT_TARGETS = [
    ("canary-http", f"http://{C}/api/meta"),
    ("canary-https", f"https://{C}/api/meta"),
    ("canary-port-3000", f"http://{C}:3000/api/meta"),
    ("canary-on-standin-port", f"http://{C}:{{port}}/api/meta"),
    ("canary-decimal", f"http://{SPELLINGS['decimal']}/api/meta"),
    ("canary-mapped-v6", f"http://[::ffff:{C}]/api/meta"),
    ("localhost", "http://localhost/api/meta"),
    ("scheme-relative-canary", f"//{C}/api/meta"),
    ("backslash-canary", f"/\\{C}/api/meta"),
    ("the-real-dev-instance", "{standin}/api/meta"),
]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("location", [pytest.param(target, id=name) for name, target in REDIRECT_TARGETS])
def test_discovery_never_follows_a_redirect(
    tobira: TobiraProcess, standin: RunningStandin, redirector: Redirector, status: int, location: str
) -> None:
    redirector.answer.status, redirector.answer.location = status, fill(location, standin)
    metas = len(standin.state.calls_to("meta"))
    answer = start_with(tobira, "form-post", f"127.0.0.3:{redirector.port}")
    assert answer.status_code == 502
    assert page_code(answer) == "NOT_MISSKEY"
    assert "set-cookie" not in answer.headers
    assert "redirector" not in answer.text  # the redirect's body is not used
    assert len(standin.state.calls_to("meta")) == metas
    redirector.settle()  # nodeinfo and the OAuth 2.0 metadata, asked beside api/meta, may still land


@pytest.mark.parametrize("status", [302, 307, 308])
@pytest.mark.parametrize("stage", ["check", "proxy", "logout"])
@pytest.mark.parametrize("location", [pytest.param(target, id=name) for name, target in REDIRECT_TARGETS])
def test_calls_for_a_session_never_follow_a_redirect(
    tobira: TobiraProcess,
    standin: RunningStandin,
    redirector: Redirector,
    stage: str,
    status: int,
    location: str,
) -> None:
    redirector.answer.status, redirector.answer.location = status, fill(location, standin)
    instance = dev_instance(redirector.url)
    calls = len(standin.state.calls)
    seen = len(redirector.requests)
    if stage == "check":
        session = str(uuid.uuid4())
        cookie = f"tobira-signin={mint_pending([KEY_1], instance, session)}"
        answer = web().get(f"{tobira.url}/callback?session={session}", headers={"Cookie": cookie})
        assert (answer.status_code, page_code(answer)) == (502, "INSTANCE_BAD_RESPONSE")
        assert "tobira" not in set_cookies(answer)  # no session came of it
        assert redirector.requests[seen:] == [("POST", f"/api/miauth/{session}/check")]
    elif stage == "proxy":
        answer = call_api(tobira, mint_session([KEY_1], instance, "victim-token"), "notes/create")
        assert (answer.status_code, json_code(answer.content)) == (502, "INSTANCE_BAD_RESPONSE")
        assert "mallory" not in answer.text
        assert redirector.requests[seen:] == [("POST", "/api/notes/create")]
    else:
        cookie = f"tobira={mint_session([KEY_1], instance, 'victim-token')}"
        answer = web().post(f"{tobira.url}/logout", headers={"Origin": tobira.url, "Cookie": cookie})
        assert answer.status_code == 303
        assert answer.headers["location"] == "/signed-out"
        notice = SignOutNotices([KEY_1], secure=False).read(set_cookies(answer)["tobira-signed-out"][0])
        assert notice == SignOut(host=f"127.0.0.3:{redirector.port}", revoked=False)
    assert len(standin.state.calls) == calls


# ---------------------------------------------------------------------------------------------------------
# return_to: an open redirect is one crafted link away

RETURN_TO_ROWS = [
    ("double-slash", "//evil.example", "/"),
    ("triple-slash", "///evil.example", "/"),
    ("quadruple-slash", "////evil.example", "/"),
    ("slash-backslash", "/\\evil.example", "/"),
    ("backslash-slash", "\\/evil.example", "/"),
    ("double-backslash", "\\\\evil.example", "/"),
    ("slash-backslash-slash", "/\\/evil.example", "/"),
    ("slash-tab-slash", "/\t/evil.example", "/"),
    ("slash-newline-slash", "/\n/evil.example", "/"),
    ("slash-carriage-return-slash", "/\r/evil.example", "/"),
    ("slash-space-slash", "/ /evil.example", "/"),
    ("slash-nul-slash", "/\x00/evil.example", "/"),
    ("slash-vertical-tab-slash", "/\x0b/evil.example", "/"),
    ("slash-form-feed-slash", "/\x0c/evil.example", "/"),
    ("leading-space", " //evil.example", "/"),
    ("leading-tab", "\t//evil.example", "/"),
    ("leading-nul", "\x00//evil.example", "/"),
    ("slash-no-break-space-slash", "/\u00a0/evil.example", "/"),
    ("slash-ideographic-space-slash", "/\u3000/evil.example", "/"),
    ("slash-zero-width-space-slash", "/\u200b/evil.example", "/"),
    ("slash-byte-order-mark-slash", "/\ufeff/evil.example", "/"),
    ("slash-line-separator-slash", "/\u2028/evil.example", "/"),
    ("encoded-second-slash", "/%2Fevil.example", "/"),
    ("encoded-second-slash-lower-case", "/%2fevil.example", "/"),
    ("encoded-both-slashes", "%2F%2Fevil.example", "/"),
    ("encoded-backslash", "/%5Cevil.example", "/"),
    ("encoded-tab-between-slashes", "/%09/evil.example", "/"),
    ("encoded-newline-between-slashes", "/%0A/evil.example", "/"),
    ("encoded-carriage-return-between-slashes", "/%0D/evil.example", "/"),
    ("encoded-nul-between-slashes", "/%00/evil.example", "/"),
    ("encoded-space-between-slashes", "/%20/evil.example", "/"),
    ("double-encoded-slash", "/%252Fevil.example", "/"),
    ("triple-encoded-slash", "/%25252Fevil.example", "/"),
    ("six-times-encoded-slash", "/%2525252525252Fevil.example", "/"),
    ("double-encoded-backslash", "/%255Cevil.example", "/"),
    ("dot-segment-then-slash", "/.//evil.example", "/"),
    ("dot-dot-segment-then-slash", "/..//evil.example", "/"),
    ("climbing-out-then-slash", "/a/../..//evil.example", "/"),
    ("encoded-dot-dot-then-slash", "/%2e%2e//evil.example", "/"),
    ("dot-segment-then-backslash", "/./\\evil.example", "/"),
    ("https-url", "https://evil.example/", "/"),
    ("http-url", "http://evil.example", "/"),
    ("scheme-without-slashes", "https:evil.example", "/"),
    ("scheme-with-one-slash", "https:/evil.example", "/"),
    ("scheme-with-backslashes", "https:\\\\evil.example", "/"),
    ("scheme-upper-case", "HTTPS://evil.example", "/"),
    ("javascript", "javascript:alert(1)", "/"),
    ("javascript-mixed-case", "JaVaScRiPt:alert(1)", "/"),
    ("javascript-with-tab", "java\tscript:alert(1)", "/"),
    ("javascript-leading-space", " javascript:alert(1)", "/"),
    ("data-url", "data:text/html,<script>alert(1)</script>", "/"),
    ("vbscript", "vbscript:msgbox(1)", "/"),
    ("encoded-scheme-letter", "%68ttps://evil.example", "/"),
    ("at-after-double-slash", "//tobira@evil.example", "/"),
    ("userinfo-url", "https://127.0.0.1@evil.example/", "/"),
    ("full-width-solidus", "/\uff0fevil.example", "/"),
    ("full-width-reverse-solidus", "/\uff3cevil.example", "/"),
    ("encoded-full-width-solidus", "/%EF%BC%8Fevil.example", "/"),
    ("division-slash", "/\u2215evil.example", "/"),
    ("full-width-dot-in-host", "//evil\uff0eexample", "/"),
    ("ideographic-dot-in-host", "//evil\u3002example", "/"),
    ("full-width-host", "//ｅｖｉｌ.example", "/"),
    ("non-ascii-path", "/caf\u00e9", "/"),
    ("empty", "", "/"),
    ("relative-path", "dashboard", "/"),
    ("dot-relative-path", "./dashboard", "/"),
    ("query-only", "?next=//evil.example", "/"),
    ("fragment-only", "#//evil.example", "/"),
    ("header-injection", "/\r\nSet-Cookie: tobira=x", "/"),
    ("over-long-3000", "/" + "a" * 2999, "/"),
    # Safe paths stay as they are: the check must not refuse everything.
    ("control-plain-path", "/dashboard", "/dashboard"),
    ("control-url-in-query", "/next?url=https://evil.example", "/next?url=https://evil.example"),
    ("control-slashes-in-fragment", "/page#//evil.example", "/page#//evil.example"),
    ("control-at-in-path", "/@alice", "/@alice"),
    ("control-scheme-like-path", "/javascript:alert(1)", "/javascript:alert(1)"),
    ("control-dot-dot-inside", "/a/b/../c", "/a/b/../c"),
    (
        "control-encoded-header-injection-stays-encoded",
        "/%0D%0ASet-Cookie:%20x=1",
        "/%0D%0ASet-Cookie:%20x=1",
    ),
]


@pytest.mark.parametrize(
    ("return_to", "expected"), [pytest.param(v, e, id=name) for name, v, e in RETURN_TO_ROWS]
)
def test_return_to_after_sign_in_stays_on_tobira(browser: Browser, return_to: str, expected: str) -> None:
    finished = browser.sign_in(return_to=return_to)
    assert finished.headers["location"] == expected
    # no cookie smuggled in: the session, the sign-ins under way, and the servers signed in with
    assert set(set_cookies(finished)) == {"tobira", "tobira-signin", "tobira-recent"}


@pytest.mark.parametrize(
    ("return_to", "expected"), [pytest.param(v, e, id=name) for name, v, e in RETURN_TO_ROWS]
)
def test_return_to_in_the_login_form_is_already_safe(
    tobira: TobiraProcess, return_to: str, expected: str
) -> None:
    page = web().get(f"{tobira.url}/login", params={"return_to": return_to})
    assert page.status_code == 200
    found = re.search(r'name="return_to" value="([^"]*)"', page.text)
    assert found is not None
    assert html.unescape(found[1]) == expected


def test_over_long_return_to_is_ignored(browser: Browser) -> None:
    started = browser.start(return_to="/" + "a" * 5000)
    assert started.status_code == 303


# ---------------------------------------------------------------------------------------------------------
# The callback


def approved(browser: Browser, user: str = "alice", **start: str) -> str:
    """Start a sign-in in `browser`, approve it on the stand-in; returns the callback URL."""
    started = browser.start(**start)
    assert started.status_code == 303, started.text
    return browser.approve(started.headers["location"], user)


MALFORMED_CALLBACKS = [
    pytest.param("", id="no-session-parameter"),
    pytest.param("?session=", id="empty-session"),
    pytest.param("?session=not-a-uuid", id="not-a-uuid"),
    pytest.param("?session={OWN_UPPER}", id="own-session-upper-case"),
    pytest.param("?session=%7B{OWN}%7D", id="own-session-in-braces"),
    pytest.param("?session={OWN}x", id="own-session-with-suffix"),
    pytest.param("?session={OWN}%00", id="own-session-with-nul"),
    pytest.param("?session={OWN}%0A", id="own-session-with-newline"),
    pytest.param("?session=%20{OWN}", id="own-session-with-leading-space"),
    pytest.param("?session=6ba7b810-9dad-11d1-80b4-00c04fd430c8", id="uuid-version-1"),
    pytest.param("?session=00000000-0000-0000-0000-000000000000", id="nil-uuid"),
    pytest.param("?session=../../api/admin/meta", id="path-traversal"),
    pytest.param("?session=..%2F..%2Fapi%2Fi", id="encoded-path-traversal"),
    pytest.param("?session=" + "a" * 5000, id="over-long"),
    pytest.param("?session[]={OWN}", id="array-syntax"),
    pytest.param("?Session={OWN}", id="other-case-parameter-name"),
]


@pytest.mark.parametrize("query", MALFORMED_CALLBACKS)
def test_malformed_callback_is_refused_and_leaves_the_sign_in_usable(browser: Browser, query: str) -> None:
    callback_url = approved(browser)
    own = session_param(callback_url)
    query = query.replace("{OWN_UPPER}", own.upper()).replace("{OWN}", own)
    answer = browser.callback(f"{browser.tobira}/callback{query}")
    assert (answer.status_code, page_code(answer)) == (400, "INVALID_CALLBACK")
    assert "tobira" not in set_cookies(answer)
    assert browser.standin.state.check_count(own) == 0
    assert browser.callback(callback_url).status_code == 303  # the real one still finishes
    assert browser.standin.state.check_count(own) == 1


def test_login_csrf_someone_elses_approved_session_is_refused_without_check(
    new_browser: Callable[[], Browser],
) -> None:
    attacker, victim = new_browser(), new_browser()
    stolen = approved(attacker, "bob")
    victim.start()  # the victim has a sign-in of their own under way
    answer = victim.callback(stolen)
    assert (answer.status_code, page_code(answer)) == (403, "SIGN_IN_MISMATCH")
    assert victim.standin.state.check_count(session_param(stolen)) == 0
    assert victim.session().status_code == 401
    assert attacker.callback(stolen).status_code == 303  # nothing was spent on the attempt


def test_login_csrf_into_a_browser_with_nothing_under_way_is_refused_without_check(
    new_browser: Callable[[], Browser],
) -> None:
    attacker, victim = new_browser(), new_browser()
    stolen = approved(attacker, "bob")
    answer = victim.callback(stolen)
    assert (answer.status_code, page_code(answer)) == (400, "NO_SIGN_IN_PENDING")
    assert victim.standin.state.check_count(session_param(stolen)) == 0
    assert victim.session().status_code == 401


def test_duplicate_session_parameters_do_not_smuggle_in_another_session(
    new_browser: Callable[[], Browser],
) -> None:
    attacker, victim = new_browser(), new_browser()
    stolen = session_param(approved(attacker, "bob"))
    own = session_param(approved(victim, "alice"))
    answer = victim.callback(f"{victim.tobira}/callback?session={own}&session={stolen}")
    assert answer.status_code in (303, 403)
    assert victim.standin.state.check_count(stolen) == 0
    if answer.status_code == 303:
        assert victim.session().json()["user"]["username"] == "alice"


@pytest.mark.parametrize("replayer", ["same-browser", "other-browser-with-the-url", "stolen-sign-in-cookie"])
def test_callback_replay_is_refused_and_check_is_called_once(
    new_browser: Callable[[], Browser], replayer: str
) -> None:
    browser = new_browser()
    callback_url = approved(browser)
    signin_cookie = browser.client.cookies["tobira-signin"]
    assert browser.callback(callback_url).status_code == 303
    if replayer == "same-browser":
        answer = browser.callback(callback_url)
    elif replayer == "other-browser-with-the-url":
        answer = new_browser().callback(callback_url)
    else:
        answer = web().get(callback_url, headers={"Cookie": f"tobira-signin={signin_cookie}"})
    assert (answer.status_code, page_code(answer)) == (400, "NO_SIGN_IN_PENDING")
    assert "tobira" not in set_cookies(answer)
    assert browser.standin.state.check_count(session_param(callback_url)) == 1


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _raw(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _flip(position: int) -> Callable[[str], str]:
    def flip(value: str) -> str:
        raw = bytearray(_raw(value))
        raw[position] ^= 0x01
        return _b64(bytes(raw))

    return flip


def _non_canonical(value: str) -> str:
    """The same bytes spelt differently: unused trailing bits set, or the padding written out."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for other in alphabet:
        candidate = value[:-1] + other
        if other != value[-1] and _raw(candidate) == _raw(value):
            return candidate
    return value + "=" * (-len(value) % 4 or 4)


TAMPERINGS: list[tuple[str, Callable[[str], str]]] = [
    ("flip-version-byte", _flip(0)),
    ("flip-key-id", _flip(2)),
    ("flip-nonce", _flip(10)),
    ("flip-first-ciphertext-byte", _flip(17)),
    ("flip-middle-byte", lambda v: _flip(len(_raw(v)) // 2)(v)),
    ("flip-last-tag-byte", _flip(-1)),
    ("truncate-last-character", lambda v: v[:-1]),
    ("truncate-last-four-characters", lambda v: v[:-4]),
    ("truncate-to-half", lambda v: v[: len(v) // 2]),
    ("truncate-to-header", lambda v: _b64(_raw(v)[:17])),
    ("drop-first-character", lambda v: v[1:]),
    ("empty", lambda v: ""),
    ("append-character", lambda v: v + "A"),
    ("append-padding", lambda v: v + "=="),
    ("non-canonical-base64", _non_canonical),
    ("standard-base64-alphabet", lambda v: v.replace("-", "+").replace("_", "/")),
    ("swap-case", lambda v: v.swapcase()),
    ("swap-halves", lambda v: v[len(v) // 2 :] + v[: len(v) // 2]),
    ("doubled", lambda v: v + v),
    ("reversed-bytes", lambda v: _b64(_raw(v)[::-1])),
    ("all-zero-bytes", lambda v: _b64(bytes(len(_raw(v))))),
    ("junk-9000-characters", lambda v: "A" * 9000),
]


@pytest.mark.parametrize("tamper", [pytest.param(tamper, id=name) for name, tamper in TAMPERINGS])
def test_tampered_sign_in_cookie_is_no_sign_in(browser: Browser, tamper: Callable[[str], str]) -> None:
    callback_url = approved(browser)
    value = browser.client.cookies["tobira-signin"]
    answer = web().get(callback_url, headers={"Cookie": f"tobira-signin={tamper(value)}"})
    assert (answer.status_code, page_code(answer)) == (400, "NO_SIGN_IN_PENDING")
    assert browser.standin.state.check_count(session_param(callback_url)) == 0


SIGN_IN_FORGERIES: list[Any] = [
    pytest.param("session-cookie-in-the-sign-in-slot", id="session-cookie-as-sign-in-cookie"),
    pytest.param("attacker-key", id="minted-with-the-attackers-key"),
    pytest.param("wrong-purpose", id="real-key-but-session-purpose"),
    pytest.param("expired", id="real-key-but-expired"),
    pytest.param("not-a-list", id="real-key-but-malformed-payload"),
    pytest.param("other-session", id="real-key-but-another-session"),
]


@pytest.mark.parametrize("forgery", SIGN_IN_FORGERIES)
def test_forged_sign_in_cookie_is_refused_without_check(
    browser: Browser, alice: Account, standin: RunningStandin, forgery: str
) -> None:
    callback_url = approved(browser)
    session = session_param(callback_url)
    instance = dev_instance(standin.url)
    if forgery == "session-cookie-in-the-sign-in-slot":
        value, expected = alice.cookie, (400, "NO_SIGN_IN_PENDING")
    elif forgery == "attacker-key":
        value, expected = mint_pending([ATTACKER_KEY], instance, session), (400, "NO_SIGN_IN_PENDING")
    elif forgery == "wrong-purpose":
        pending = {"p": [_pending_item(instance.origin, instance.host, session)]}
        value, expected = CookieCodec([KEY_1], "session").encode(pending), (400, "NO_SIGN_IN_PENDING")
    elif forgery == "expired":
        item = _pending_item(instance.origin, instance.host, session, expires_at=1.0)
        value, expected = CookieCodec([KEY_1], "signin").encode({"p": [item]}), (400, "NO_SIGN_IN_PENDING")
    elif forgery == "not-a-list":
        value, expected = CookieCodec([KEY_1], "signin").encode({"p": "x"}), (400, "NO_SIGN_IN_PENDING")
    else:
        value, expected = mint_pending([KEY_1], instance, str(uuid.uuid4())), (403, "SIGN_IN_MISMATCH")
    answer = web().get(callback_url, headers={"Cookie": f"tobira-signin={value}"})
    assert (answer.status_code, page_code(answer)) == expected
    assert browser.standin.state.check_count(session) == 0


def _pending_item(origin: str, host: str, session: str, expires_at: float = 4e9) -> dict[str, Any]:
    return {
        "session": session,
        "host": host,
        "origin": origin,
        "dev": True,
        "return_to": "/",
        "method": "miauth",
        "expires_at": expires_at,
    }


def test_two_tabs_finish_in_any_order(browser: Browser) -> None:
    first = approved(browser, "alice", return_to="/first")
    second = approved(browser, "bob", return_to="/second")
    done_second = browser.callback(second)
    assert (done_second.status_code, done_second.headers["location"]) == (303, "/second")
    bob_cookie = browser.client.cookies["tobira"]
    done_first = browser.callback(first)
    assert (done_first.status_code, done_first.headers["location"]) == (303, "/first")
    assert browser.session().json()["user"]["username"] == "alice"
    # Signing in again ended the session it replaced: its cookie is refused from now on.
    assert get_session(browser.tobira, bob_cookie).status_code == 401


def test_a_sixth_tab_forgets_the_oldest_without_checking_it(browser: Browser) -> None:
    tabs = [approved(browser, return_to=f"/tab{n}") for n in range(6)]
    oldest = browser.callback(tabs[0])
    assert (oldest.status_code, page_code(oldest)) == (403, "SIGN_IN_MISMATCH")
    assert browser.standin.state.check_count(session_param(tabs[0])) == 0
    newest = browser.callback(tabs[5])
    assert (newest.status_code, newest.headers["location"]) == (303, "/tab5")


def test_a_denied_sign_in_is_refused_and_cannot_be_retried(browser: Browser) -> None:
    started = browser.start()
    session = urlsplit(started.headers["location"]).path.rsplit("/", 1)[-1]
    assert browser.client.post(f"{browser.standin.url}/miauth/{session}/deny").status_code == 200
    answer = browser.callback(f"{browser.tobira}/callback?session={session}")
    assert (answer.status_code, page_code(answer)) == (403, "SIGN_IN_NOT_APPROVED")
    again = browser.callback(f"{browser.tobira}/callback?session={session}")
    assert again.status_code == 400
    assert browser.standin.state.check_count(session) == 1


async def in_process_approved(
    client: httpx.AsyncClient, standin: RunningStandin
) -> tuple[httpx.Response, str]:
    """Start a sign-in on an in-process tobira, approve it on the stand-in: (start answer, callback path)."""
    started = await client.post("/login", data={"instance": standin.url})
    assert started.status_code == 303, started.text
    async with httpx.AsyncClient(timeout=20, verify=TLS) as person:
        consent = started.headers["location"]
        assert (await person.get(consent)).status_code == 200
        session = urlsplit(consent).path.rsplit("/", 1)[-1]
        accepted = await person.post(f"{standin.url}/miauth/{session}/accept", data={"user": "alice"})
    callback = urlsplit(accepted.headers["location"])
    return started, f"{callback.path}?{callback.query}"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("elapsed", "status"),
    [
        pytest.param(0.0, 303, id="at-once"),
        pytest.param(599.999, 303, id="a-millisecond-before-600s"),
        pytest.param(600.0, 400, id="exactly-600s"),
        pytest.param(600.001, 400, id="a-millisecond-after-600s"),
        pytest.param(86_400.0, 400, id="a-day-later"),
    ],
)
async def test_sign_in_expires_at_exactly_ten_minutes(
    tmp_path: Path, standin: RunningStandin, elapsed: float, status: int
) -> None:
    clock = FakeClock()
    async with in_process(tmp_path, clock=clock, dev_instances=[standin.url]) as client:
        started, callback = await in_process_approved(client, standin)
        assert set_cookies(started)["tobira-signin"][1]["max-age"] == "600"
        clock.now += elapsed
        answer = await client.get(callback)
    assert answer.status_code == status
    if status == 400:
        assert page_code(answer) == "NO_SIGN_IN_PENDING"
        assert standin.state.check_count(session_param(callback)) == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("elapsed", "status"),
    [
        pytest.param(3599.999, 200, id="a-millisecond-before-max-age"),
        pytest.param(3600.0, 401, id="exactly-max-age"),
        pytest.param(3600.001, 401, id="a-millisecond-after-max-age"),
    ],
)
async def test_session_expires_at_exactly_its_max_age(
    tmp_path: Path, standin: RunningStandin, elapsed: float, status: int
) -> None:
    clock = FakeClock()
    async with in_process(tmp_path, clock=clock, dev_instances=[standin.url], session_max_age=3600) as client:
        _, callback = await in_process_approved(client, standin)
        finished = await client.get(callback)
        assert set_cookies(finished)["tobira"][1]["max-age"] == "3600"
        clock.now += elapsed
        calls = len(standin.state.calls)
        session = await client.get("/session")
        api = await client.post("/api/i", json={}, headers={"Origin": "http://127.0.0.1:8000"})
    assert (session.status_code, api.status_code) == (status, status)
    if status == 401:
        assert len(standin.state.calls) == calls


# ---------------------------------------------------------------------------------------------------------
# Cookies


@pytest.mark.parametrize("tamper", [pytest.param(tamper, id=name) for name, tamper in TAMPERINGS])
def test_tampered_session_cookie_is_signed_out(
    tobira: TobiraProcess, standin: RunningStandin, alice: Account, tamper: Callable[[str], str]
) -> None:
    forged = tamper(alice.cookie)
    assert forged != alice.cookie
    calls = len(standin.state.calls)
    assert get_session(tobira.url, forged).status_code == 401
    answer = call_api(tobira, forged, "i")
    assert (answer.status_code, json_code(answer.content)) == (401, "CREDENTIAL_REQUIRED")
    assert len(standin.state.calls) == calls


SESSION_FORGERIES = [
    pytest.param("sign-in-cookie", id="sign-in-cookie-as-session-cookie"),
    pytest.param("attacker-key", id="minted-with-the-attackers-key"),
    pytest.param("other-deployment", id="minted-by-another-deployment"),
    pytest.param("wrong-purpose", id="real-key-but-sign-in-purpose"),
    pytest.param("expired", id="real-key-but-expired"),
    pytest.param("no-token", id="real-key-but-no-token"),
    pytest.param("list-payload", id="real-key-but-a-list"),
]


@pytest.mark.parametrize("forgery", SESSION_FORGERIES)
def test_forged_session_cookie_is_signed_out(
    tobira: TobiraProcess, standin: RunningStandin, alice: Account, bob_token: str, forgery: str
) -> None:
    instance = dev_instance(standin.url)
    if forgery == "sign-in-cookie":
        value = mint_pending([KEY_1], instance, str(uuid.uuid4()))
    elif forgery == "attacker-key":
        value = mint_session([ATTACKER_KEY], instance, bob_token, username="bob")
    elif forgery == "other-deployment":
        value = mint_session([base64.urlsafe_b64encode(uuid.uuid4().bytes * 2).decode()], instance, bob_token)
    elif forgery == "wrong-purpose":
        sealed = CookieCodec([KEY_1], "session").decode(alice.cookie)
        assert sealed is not None
        value = CookieCodec([KEY_1], "signin").encode(sealed)
    elif forgery == "expired":
        value = mint_session([KEY_1], instance, bob_token, max_age=-1)
    elif forgery == "no-token":
        sealed = CookieCodec([KEY_1], "session").decode(alice.cookie)
        assert sealed is not None
        value = CookieCodec([KEY_1], "session").encode({k: v for k, v in sealed.items() if k != "t"})
    else:
        value = base64.urlsafe_b64encode(b"[]").decode()
    calls = len(standin.state.calls)
    assert get_session(tobira.url, value).status_code == 401
    assert call_api(tobira, value, "i").status_code == 401
    assert len(standin.state.calls) == calls


@pytest.mark.parametrize(
    "origin",
    [
        pytest.param(f"http://{C}:443", id="http-canary-443"),
        pytest.param(f"https://{C}", id="https-canary"),
        pytest.param(f"http://{C}:{{port}}", id="canary-on-the-dev-port"),
        pytest.param(f"http://[::ffff:{C}]:{{port}}", id="mapped-canary-on-the-dev-port"),
        pytest.param("http://localhost:{port}", id="localhost-on-the-dev-port"),
        pytest.param(f"https://{SPELLINGS['decimal']}", id="decimal-canary"),
    ],
)
def test_a_session_minted_with_a_leaked_key_cannot_point_the_proxy_elsewhere(
    tobira: TobiraProcess, standin: RunningStandin, alice: Account, origin: str
) -> None:
    """Even someone holding the key cannot turn the proxy into a way to reach private addresses."""
    origin = fill(origin, standin)
    sealed = CookieCodec([KEY_1], "session").decode(alice.cookie)
    assert sealed is not None
    value = CookieCodec([KEY_1], "session").encode({**sealed, "o": origin, "h": urlsplit(origin).netloc})
    calls = len(standin.state.calls)
    answer = call_api(tobira, value, "i")
    assert (answer.status_code, json_code(answer.content)) == (400, "INSTANCE_ADDRESS_FORBIDDEN")
    assert len(standin.state.calls) == calls


def test_the_cookie_never_holds_the_token_in_readable_form(alice: Account) -> None:
    raw = _raw(alice.cookie)
    for form in (alice.token, base64.b64encode(alice.token.encode()).decode(), _b64(alice.token.encode())):
        assert form not in alice.cookie
        assert form.encode() not in raw
    assert b"alice" not in raw


def test_a_session_is_not_bound_to_the_clients_address_or_user_agent(
    tobira: TobiraProcess, alice: Account
) -> None:
    answer = web().get(
        f"{tobira.url}/session",
        headers={
            "Cookie": f"tobira={alice.cookie}",
            "User-Agent": "a phone on another network",
            "X-Forwarded-For": "198.51.100.7",
        },
    )
    assert answer.status_code == 200


@pytest.mark.parametrize(
    "replay",
    [
        pytest.param("session", id="get-session"),
        pytest.param("api-i", id="proxy-read"),
        pytest.param("api-notes-create", id="proxy-write"),
        pytest.param("landing-page", id="landing-page"),
        pytest.param("logout-again", id="logout-again"),
    ],
)
def test_a_logged_out_cookie_replayed_is_refused(
    tobira: TobiraProcess, standin: RunningStandin, ended_cookie: str, replay: str
) -> None:
    calls = len(standin.state.calls)
    headers = {"Cookie": f"tobira={ended_cookie}", "Origin": tobira.url}
    if replay == "session":
        assert get_session(tobira.url, ended_cookie).status_code == 401
    elif replay in ("api-i", "api-notes-create"):
        endpoint = "i" if replay == "api-i" else "notes/create"
        answer = call_api(tobira, ended_cookie, endpoint, b'{"text":"replayed"}')
        assert (answer.status_code, json_code(answer.content)) == (401, "CREDENTIAL_REQUIRED")
    elif replay == "landing-page":
        page = web().get(tobira.url + "/", headers=headers)
        assert page.status_code == 200
        assert 'action="/logout"' not in page.text
    else:
        answer = web().post(tobira.url + "/logout", headers=headers)
        assert (answer.status_code, answer.headers["location"]) == (303, "/signed-out")
    assert len(standin.state.calls) == calls


ROTATION_ROWS = [
    pytest.param("k1", "k2,k1", 200, id="old-key-session-accepted-while-the-old-key-is-listed"),
    pytest.param("k1", "k2", 401, id="old-key-session-refused-once-the-old-key-is-removed"),
    pytest.param("k2", "k2,k1", 200, id="new-key-session-accepted-after-rotation"),
    pytest.param("k2", "k2", 200, id="new-key-session-accepted-after-removal"),
    pytest.param("k2", "k1", 401, id="new-key-session-refused-by-a-deployment-without-it"),
    pytest.param("ended", "k2,k1", 401, id="logged-out-session-stays-refused-after-rotation"),
    pytest.param("attacker", "k2,k1", 401, id="attacker-key-session-refused-after-rotation"),
]


@pytest.mark.parametrize(("sealed_with", "deployment", "status"), ROTATION_ROWS)
def test_key_rotation(
    rotated: dict[str, TobiraProcess],
    standin: RunningStandin,
    alice: Account,
    ended_cookie: str,
    sealed_with: str,
    deployment: str,
    status: int,
) -> None:
    instance = dev_instance(standin.url)
    cookie = {
        "k1": alice.cookie,
        "k2": mint_session([KEY_2], instance, alice.token),
        "ended": ended_cookie,
        "attacker": mint_session([ATTACKER_KEY], instance, alice.token),
    }[sealed_with]
    server = rotated[deployment]
    calls = len(standin.state.calls)
    assert get_session(server.url, cookie).status_code == status
    answer = call_api(server, cookie, "i")
    assert answer.status_code == status
    if status == 200:
        assert answer.json()["username"] == "alice"
        assert standin.state.calls[-1].token == alice.token
    else:
        assert len(standin.state.calls) == calls


@pytest.mark.parametrize(
    ("deployment", "expected"),
    [
        pytest.param("k2,k1", (403, "SIGN_IN_NOT_APPROVED"), id="old-key-sign-in-accepted-while-listed"),
        pytest.param("k2", (400, "NO_SIGN_IN_PENDING"), id="old-key-sign-in-refused-once-removed"),
    ],
)
def test_key_rotation_of_the_sign_in_cookie(
    rotated: dict[str, TobiraProcess], standin: RunningStandin, deployment: str, expected: tuple[int, str]
) -> None:
    session = str(uuid.uuid4())  # never approved: a check says ok:false, which shows the cookie was read
    cookie = mint_pending([KEY_1], dev_instance(standin.url), session)
    answer = web().get(
        f"{rotated[deployment].url}/callback?session={session}", headers={"Cookie": f"tobira-signin={cookie}"}
    )
    assert (answer.status_code, page_code(answer)) == expected
    assert standin.state.check_count(session) == (1 if expected[0] == 403 else 0)


def test_the_newest_key_seals_new_cookies(rotated: dict[str, TobiraProcess], standin: RunningStandin) -> None:
    with httpx.Client(timeout=20, verify=TLS) as client:
        Browser(rotated["k2,k1"].url, standin, client).sign_in()
        cookie = client.cookies["tobira"]
    assert _raw(cookie)[1:5] == key_id(derive_key(KEY_2, "session"))


HTTP_ATTRIBUTES = {"httponly": "", "path": "/", "samesite": "lax"}
HTTPS_ATTRIBUTES = {**HTTP_ATTRIBUTES, "secure": ""}
DELETED = {"max-age": "0", "expires": "now"}


@pytest.mark.parametrize(
    ("deployment", "event", "name", "attributes"),
    [
        pytest.param(
            "http", "start", "tobira-signin", {**HTTP_ATTRIBUTES, "max-age": "600"}, id="http-sign-in"
        ),
        pytest.param(
            "http",
            "callback",
            "tobira",
            {**HTTP_ATTRIBUTES, "max-age": str(SESSION_MAX_AGE)},
            id="http-session",
        ),
        pytest.param(
            "http", "callback", "tobira-signin", {**HTTP_ATTRIBUTES, **DELETED}, id="http-sign-in-done"
        ),
        pytest.param("http", "logout", "tobira", {**HTTP_ATTRIBUTES, **DELETED}, id="http-logout"),
        pytest.param(
            "https",
            "start",
            "__Host-tobira-signin",
            {**HTTPS_ATTRIBUTES, "max-age": "600"},
            id="https-sign-in",
        ),
        pytest.param(
            "https",
            "callback",
            "__Host-tobira",
            {**HTTPS_ATTRIBUTES, "max-age": str(SESSION_MAX_AGE)},
            id="https-session",
        ),
        pytest.param(
            "https",
            "callback",
            "__Host-tobira-signin",
            {**HTTPS_ATTRIBUTES, **DELETED},
            id="https-sign-in-done",
        ),
        pytest.param("https", "logout", "__Host-tobira", {**HTTPS_ATTRIBUTES, **DELETED}, id="https-logout"),
    ],
)
def test_set_cookie_attributes_are_exact(
    request: pytest.FixtureRequest,
    standin: RunningStandin,
    deployment: str,
    event: str,
    name: str,
    attributes: dict[str, str],
) -> None:
    server: TobiraProcess = request.getfixturevalue("tobira" if deployment == "http" else "https_tobira")
    origin = server.url if deployment == "http" else HTTPS_PUBLIC_URL
    prefix = "" if deployment == "http" else "__Host-"
    with httpx.Client(timeout=20, verify=TLS) as client:
        browser = Browser(server.url, standin, client, origin=origin)
        started = browser.start()
        answers = {"start": started}
        signin = set_cookies(started)[f"{prefix}tobira-signin"][0]
        callback = urlsplit(browser.approve(started.headers["location"]))
        assert f"{callback.scheme}://{callback.netloc}" == origin
        answers["callback"] = web().get(
            f"{server.url}/callback?{callback.query}", headers={"Cookie": f"{prefix}tobira-signin={signin}"}
        )
        session = set_cookies(answers["callback"])[f"{prefix}tobira"][0]
        answers["logout"] = web().post(
            f"{server.url}/logout", headers={"Origin": origin, "Cookie": f"{prefix}tobira={session}"}
        )
    value, found = set_cookies(answers[event])[name]
    if attributes.get("expires") == "now":  # a deletion: expired as it is sent
        expires = parsedate_to_datetime(found["expires"])
        assert expires <= datetime.now(UTC) + timedelta(seconds=1)
        found["expires"] = "now"
    assert found == attributes
    assert len(f"{name}={value}") < 4000


# ---------------------------------------------------------------------------------------------------------
# The proxy


def refused_upstream(
    standin: RunningStandin,
    answer: httpx.Response | tuple[int, bytes],
    status: int,
    code: str | None,
    calls: int,
) -> None:
    got, body = (answer.status_code, answer.content) if isinstance(answer, httpx.Response) else answer
    assert got == status, body
    if code is not None:
        assert json_code(body) == code
    assert len(standin.state.calls) == calls


CROSS_SITE_ROWS = [
    pytest.param({"Origin": "https://evil.example"}, id="origin-other-site"),
    pytest.param({"Origin": "null"}, id="origin-null"),
    pytest.param({"Origin": ""}, id="origin-empty"),
    pytest.param({"Origin": "http://127.0.0.1:1"}, id="origin-other-port"),
    pytest.param({"Origin": "https://127.0.0.1:{tport}"}, id="origin-other-scheme"),
    pytest.param({"Origin": "http://localhost:{tport}"}, id="origin-localhost-alias"),
    pytest.param({"Origin": "http://127.0.0.1:{tport}.evil.example"}, id="origin-as-prefix-of-another-host"),
    pytest.param({"Origin": "http://127.0.0.1:{tport}@evil.example"}, id="origin-with-userinfo-trick"),
    pytest.param({"Origin": "http://127.0.0.1.:{tport}"}, id="origin-trailing-dot"),
    pytest.param({"Origin": "http://evil.example/http://127.0.0.1:{tport}"}, id="origin-in-a-path"),
    pytest.param({"Sec-Fetch-Site": "cross-site", "Origin": None}, id="fetch-site-cross-site"),
    pytest.param({"Sec-Fetch-Site": "same-site", "Origin": None}, id="fetch-site-same-site"),
    pytest.param({"Sec-Fetch-Site": "none", "Origin": None}, id="fetch-site-none"),
    pytest.param({"Sec-Fetch-Site": "", "Origin": None}, id="fetch-site-empty"),
    pytest.param({"Sec-Fetch-Site": "Same-Origin", "Origin": None}, id="fetch-site-other-case"),
    pytest.param(
        {"Sec-Fetch-Site": "same-origin", "Origin": "https://evil.example"},
        id="same-origin-claim-foreign-origin",
    ),
    pytest.param({"Sec-Fetch-Site": "cross-site"}, id="own-origin-but-cross-site-fetch"),
    pytest.param(
        {"Origin": "https://evil.example", "Content-Type": "application/x-www-form-urlencoded"},
        id="cross-site-html-form",
    ),
    pytest.param(
        {"Origin": "https://evil.example", "Content-Type": "text/plain"}, id="cross-site-text-plain-json"
    ),
    pytest.param(
        {"Origin": "https://evil.example", "Content-Type": "multipart/form-data; boundary=x"},
        id="cross-site-multipart",
    ),
    pytest.param({"Origin": "null", "Content-Type": "text/plain"}, id="sandboxed-frame-text-plain"),
]


@pytest.mark.parametrize("endpoint", ["notes/create", "drive/files/create"])
@pytest.mark.parametrize("headers", CROSS_SITE_ROWS)
def test_cross_site_requests_never_reach_the_instance(
    tobira: TobiraProcess,
    standin: RunningStandin,
    alice: Account,
    endpoint: str,
    headers: dict[str, str | None],
) -> None:
    port = str(urlsplit(tobira.url).port)
    sent = {"Origin": tobira.url, "Content-Type": "application/json", "Cookie": f"tobira={alice.cookie}"}
    for name, value in headers.items():
        if value is None:
            del sent[name]
        else:
            sent[name] = value.replace("{tport}", port)
    lines = [f"POST /api/{endpoint} HTTP/1.1", *(f"{k}: {v}" for k, v in sent.items())]
    body = b'{"text":"cross-site"}'
    calls = len(standin.state.calls)
    answer = send_raw(tobira.url, [*lines, f"Content-Length: {len(body)}"], body)
    refused_upstream(standin, answer, 403, "CROSS_SITE_REQUEST", calls)


CONTENT_TYPE_ROWS = [
    pytest.param(
        "notes/create", "application/x-www-form-urlencoded", b"text=x&i=x", 415, id="form-urlencoded"
    ),
    pytest.param("notes/create", "text/plain", b'{"text":"x"}', 415, id="text-plain-with-json-body"),
    pytest.param("notes/create", "text/plain; charset=utf-8", b'{"text":"x"}', 415, id="text-plain-utf8"),
    pytest.param(
        "notes/create", "multipart/form-data; boundary=b", b"--b--\r\n", 415, id="multipart-to-json"
    ),
    pytest.param("notes/create", None, b'{"text":"x"}', 415, id="missing-content-type"),
    pytest.param("notes/create", "", b'{"text":"x"}', 415, id="empty-content-type"),
    pytest.param("notes/create", "application/merge-patch+json", b"{}", 415, id="json-suffix-type"),
    pytest.param("notes/create", "application/jsonx", b"{}", 415, id="json-prefix-type"),
    pytest.param("notes/create", "text/json", b"{}", 415, id="text-json"),
    pytest.param("notes/create", "application/json, text/plain", b"{}", 415, id="type-list"),
    pytest.param("notes/create", "text/plain; type=application/json", b"{}", 415, id="json-in-a-parameter"),
    pytest.param("notes/create", "application/octet-stream", b"{}", 415, id="octet-stream"),
    pytest.param("drive/files/create", "application/json", b"{}", 415, id="json-to-upload"),
    pytest.param("drive/files/create", "text/plain", b"x", 415, id="text-plain-to-upload"),
    pytest.param("drive/files/create", "application/x-www-form-urlencoded", b"i=x", 415, id="form-to-upload"),
    pytest.param("drive/files/create", "multipart/form-data", b"x", 400, id="multipart-without-boundary"),
    pytest.param(
        "drive/files/create", "multipart/form-data; boundary=zz", b"garbage", 400, id="multipart-garbage"
    ),
    pytest.param("notes/create", "application/json", b"[]", 400, id="json-array"),
    pytest.param("notes/create", "application/json", b'"x"', 400, id="json-string"),
    pytest.param("notes/create", "application/json", b"null", 400, id="json-null"),
    pytest.param("notes/create", "application/json", b"1", 400, id="json-number"),
    pytest.param("notes/create", "application/json", b"{nope", 400, id="invalid-json"),
    pytest.param("notes/create", "application/json", b'\xef\xbb\xbf{"text":"x"}', 400, id="json-with-bom"),
    pytest.param("notes/create", "application/json", b'{"text":NaN}', 400, id="json-nan"),
    pytest.param("notes/create", "application/json", b'{"text":"\xff"}', 400, id="json-invalid-utf8"),
    pytest.param(
        "notes/create",
        "application/json",
        b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}",
        400,
        id="json-depth-bomb",
    ),
]


@pytest.mark.parametrize(("endpoint", "content_type", "body", "status"), CONTENT_TYPE_ROWS)
def test_wrong_content_type_or_body_never_reaches_the_instance(
    tobira: TobiraProcess,
    standin: RunningStandin,
    alice: Account,
    endpoint: str,
    content_type: str | None,
    body: bytes,
    status: int,
) -> None:
    lines = [f"POST /api/{endpoint} HTTP/1.1", f"Origin: {tobira.url}", f"Cookie: tobira={alice.cookie}"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    calls = len(standin.state.calls)
    answer = send_raw(tobira.url, [*lines, f"Content-Length: {len(body)}"], body)
    code = "UNSUPPORTED_MEDIA_TYPE" if status == 415 else "INVALID_BODY"
    refused_upstream(standin, answer, status, code, calls)


@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param("application/json", id="plain"),
        pytest.param("application/json; charset=utf-8", id="with-charset"),
        pytest.param("APPLICATION/JSON", id="upper-case"),
    ],
)
def test_control_json_content_types_are_forwarded(
    tobira: TobiraProcess, standin: RunningStandin, alice: Account, content_type: str
) -> None:
    answer = call_api(tobira, alice.cookie, "i", headers={"Content-Type": content_type})
    assert answer.status_code == 200
    assert answer.json()["username"] == "alice"


# Status per row; a pair where routing decides between two refusals (neither reaches the proxy's upstream).
PATH_TRICKS = [
    pytest.param("/api/notes/../admin/meta", 400, id="dot-dot"),
    pytest.param("/api/notes/%2e%2e/admin/meta", 400, id="encoded-dot-dot"),
    pytest.param("/api/notes/%2E%2E/admin/meta", 400, id="encoded-dot-dot-upper-case"),
    pytest.param("/api/notes%2Fcreate", 400, id="encoded-slash"),
    pytest.param("/api/admin%2fmeta", 400, id="encoded-slash-to-denied"),
    pytest.param("/api/..%2Fadmin%2Fmeta", 400, id="encoded-dot-dot-slash"),
    pytest.param("/api/notes%252Fcreate", 400, id="double-encoded-slash"),
    pytest.param("/api/notes//create", 400, id="double-slash"),
    pytest.param("/api//notes/create", 400, id="leading-double-slash"),
    pytest.param("/api/notes/create/", 400, id="trailing-slash"),
    pytest.param("/api/./notes/create", 400, id="leading-dot-segment"),
    pytest.param("/api/notes/./create", 400, id="inner-dot-segment"),
    pytest.param("/api/.", 400, id="dot-name"),
    pytest.param("/api/..", 400, id="dot-dot-name"),
    pytest.param("/api/notes\\create", 400, id="backslash"),
    pytest.param("/api/notes%5Ccreate", 400, id="encoded-backslash"),
    pytest.param("/api/..\\admin\\meta", 400, id="backslash-dot-dot"),
    pytest.param("/api/i\x00", 400, id="raw-nul"),
    pytest.param("/api/i%00", 400, id="encoded-nul"),
    pytest.param("/api/i%00/../admin/meta", 400, id="encoded-nul-then-dot-dot"),
    pytest.param("/api/https://evil.example/api/i", 400, id="absolute-url-as-name"),
    pytest.param(f"/api/http://{C}/api/i", 400, id="absolute-canary-url-as-name"),
    pytest.param(f"/api/http:%2F%2F{C}%2Fapi%2Fi", 400, id="encoded-absolute-canary-url"),
    pytest.param(f"/api//{C}/api/i", 400, id="scheme-relative-canary-as-name"),
    pytest.param(f"/api/@{C}/i", 400, id="userinfo-trick-as-name"),
    pytest.param(f"/api/i@{C}", 400, id="at-canary-suffix"),
    pytest.param(f"/api/i:{C}", 400, id="colon-in-name"),
    pytest.param("/api/I", 400, id="upper-case"),
    pytest.param("/api/Notes/Create", 400, id="mixed-case"),
    pytest.param("/api/ADMIN/meta", 400, id="upper-case-denied"),
    pytest.param("/api/notes/cr\u00c3\u00a9ate", 400, id="raw-utf8"),
    pytest.param("/api/notes/cr%C3%A9ate", 400, id="encoded-utf8"),
    pytest.param("/api/n%D0%BEtes/create", 400, id="cyrillic-o-lookalike"),
    pytest.param("/api/%EF%BD%8Eotes/create", 400, id="full-width-n"),
    pytest.param("/api/notes%E2%88%95create", 400, id="division-slash"),
    pytest.param("/api/notes%EF%BC%8Fcreate", 400, id="full-width-solidus"),
    pytest.param("/api/i;i=x", 400, id="matrix-parameter"),
    pytest.param("/api/i%3Fi=x", 400, id="encoded-question-mark"),
    pytest.param("/api/i%23x", 400, id="encoded-hash"),
    pytest.param("/api/i%20", 400, id="encoded-trailing-space"),
    pytest.param("/api/%20i", 400, id="encoded-leading-space"),
    pytest.param("/api/i%09", 400, id="encoded-tab"),
    pytest.param("/api/i%0D%0AX-Injected:%201", (400, 404), id="encoded-crlf"),
    pytest.param("/api/" + "a" * 129, 400, id="over-long-name"),
    pytest.param("/api/" + "a/" * 100 + "b", 400, id="over-long-deep-name"),
    pytest.param("/api/", 400, id="empty-name"),
    pytest.param("/%61pi/i", 400, id="encoded-api-prefix"),
    pytest.param("/api/admin/meta/", 400, id="denied-with-trailing-slash"),
    pytest.param("/api/./admin/meta", 400, id="denied-behind-dot-segment"),
    pytest.param("/api/notes/../i/regenerate-token", 400, id="denied-behind-dot-dot"),
    pytest.param("/api", (404, 307), id="api-without-slash"),
    pytest.param("//api/i", 404, id="double-slash-prefix"),
    pytest.param("/API/i", 404, id="upper-case-prefix"),
]


@pytest.mark.parametrize(("target", "status"), PATH_TRICKS)
def test_endpoint_name_tricks_never_reach_the_instance(
    tobira: TobiraProcess,
    standin: RunningStandin,
    alice: Account,
    target: str,
    status: int | tuple[int, ...],
) -> None:
    headers = {"Origin": tobira.url, "Content-Type": "application/json", "Cookie": f"tobira={alice.cookie}"}
    calls = len(standin.state.calls)
    got, body = raw_request(tobira.url, f"POST {target} HTTP/1.1", headers, b"{}")
    assert got in (status if isinstance(status, tuple) else (status,)), body
    if body.startswith(b"{"):
        assert json_code(body) in ("INVALID_ENDPOINT", "NOT_FOUND")
    assert len(standin.state.calls) == calls


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(f"http://{C}/api/i", id="canary-http"),
        pytest.param(f"https://{C}:443/api/i", id="canary-https"),
        pytest.param("http://evil.example/api/i", id="other-host"),
    ],
)
def test_an_absolute_form_request_target_goes_only_to_the_sessions_instance(
    tobira: TobiraProcess, standin: RunningStandin, alice: Account, target: str
) -> None:
    headers = {"Origin": tobira.url, "Content-Type": "application/json", "Cookie": f"tobira={alice.cookie}"}
    calls = len(standin.state.calls)
    got, body = raw_request(tobira.url, f"POST {target} HTTP/1.1", headers, b"{}")
    assert got in (200, 400), body
    if got == 200:
        assert orjson.loads(body)["username"] == "alice"
        assert standin.state.calls[-1].token == alice.token
    else:
        assert len(standin.state.calls) == calls


DENIED_ENDPOINTS = [
    "admin/meta",
    "admin/accounts/create",
    "admin/reset-password",
    "admin/system-webhook/create",
    "admin/emoji/import-zip",
    "miauth/gen-token",
    "auth/accept",
    "auth/session/generate",
    "auth/session/userkey",
    "app/create",
    "app/show",
    "i/webhooks/create",
    "i/webhooks/test",
    "i/2fa/register",
    "i/2fa/unregister",
    "i/2fa/password-less",
    "i/import-following",
    "i/import-blocking",
    "i/export-notes",
    "i/export-following",
    "i/delete-account",
    "i/change-password",
    "i/update-email",
    "i/regenerate-token",
    "i/revoke-token",
    "i/move",
    "i/apps",
    "i/authorized-apps",
    "i/signin-history",
    "i/registry/scopes-with-domain",
    "export-custom-emojis",
    "fetch-external-resources",
    "page-push",
    "sw/register",
]


@pytest.mark.parametrize("endpoint", DENIED_ENDPOINTS)
def test_denied_endpoints_never_reach_the_instance(
    tobira: TobiraProcess, standin: RunningStandin, alice: Account, endpoint: str
) -> None:
    calls = len(standin.state.calls)
    answer = call_api(tobira, alice.cookie, endpoint, b'{"i":"x"}')
    refused_upstream(standin, answer, 403, "ENDPOINT_NOT_ALLOWED", calls)


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_other_methods_never_reach_the_instance(
    tobira: TobiraProcess, standin: RunningStandin, alice: Account, method: str
) -> None:
    calls = len(standin.state.calls)
    answer = web().request(
        method, f"{tobira.url}/api/i", headers={"Origin": tobira.url, "Cookie": f"tobira={alice.cookie}"}
    )
    refused_upstream(standin, answer, 405, "METHOD_NOT_ALLOWED", calls)


@pytest.mark.parametrize("endpoint", ["i", "notes/create", "drive/files/create", "admin/meta"])
def test_signed_out_proxy_calls_never_reach_the_instance(
    tobira: TobiraProcess, standin: RunningStandin, endpoint: str
) -> None:
    calls = len(standin.state.calls)
    answer = call_api(tobira, None, endpoint)
    expected = (403, "ENDPOINT_NOT_ALLOWED") if endpoint == "admin/meta" else (401, "CREDENTIAL_REQUIRED")
    refused_upstream(standin, answer, *expected, calls)


JSON_CLIENT_I = [
    pytest.param({"body": {"i": "{BOB}"}}, id="body-i-another-accounts-token"),
    pytest.param({"body": {"i": None}}, id="body-i-null"),
    pytest.param({"body": {"i": 12345}}, id="body-i-number"),
    pytest.param({"body": {"i": ["{BOB}"]}}, id="body-i-array"),
    pytest.param({"body": {"i": {"$ne": ""}}}, id="body-i-object"),
    pytest.param({"body": {"i": ""}}, id="body-i-empty"),
    pytest.param({"body": {"i": True}}, id="body-i-boolean"),
    pytest.param({"raw": b'{"i":"{BOB}","i":"{BOB}"}'}, id="body-i-twice"),
    pytest.param({"raw": b'{"\\u0069":"{BOB}"}'}, id="body-i-unicode-escaped-key"),
    pytest.param({"raw": b'{"i":"{BOB}","text":"x","i":"{BOB}"}'}, id="body-i-around-other-keys"),
    pytest.param({"query": "i={BOB}"}, id="query-i"),
    pytest.param({"query": "%69={BOB}"}, id="query-i-encoded-name"),
    pytest.param({"query": "i={BOB}&i={BOB}"}, id="query-i-twice"),
    pytest.param({"headers": {"Authorization": "Bearer {BOB}"}}, id="authorization-bearer"),
    pytest.param({"headers": {"Authorization": "bearer {BOB}"}}, id="authorization-lower-case-bearer"),
    pytest.param({"headers": {"Authorization": "{BOB}"}}, id="authorization-bare-token"),
    pytest.param({"headers": {"i": "{BOB}"}}, id="header-named-i"),
    pytest.param({"headers": {"X-Misskey-Token": "{BOB}"}}, id="custom-token-header"),
    pytest.param({"cookie": "i={BOB}"}, id="cookie-named-i"),
    pytest.param({"cookie": "token={BOB}"}, id="cookie-named-token"),
    pytest.param(
        {
            "body": {"i": "{BOB}"},
            "query": "i={BOB}",
            "headers": {"Authorization": "Bearer {BOB}", "i": "{BOB}"},
            "cookie": "i={BOB}",
        },
        id="everywhere-at-once",
    ),
]


def _with_bob(value: Any, bob: str) -> Any:
    if isinstance(value, str):
        return value.replace("{BOB}", bob)
    if isinstance(value, bytes):
        return value.replace(b"{BOB}", bob.encode())
    if isinstance(value, list):
        return [_with_bob(item, bob) for item in value]
    if isinstance(value, dict):
        return {key: _with_bob(item, bob) for key, item in value.items()}
    return value


@pytest.mark.parametrize("supplied", JSON_CLIENT_I)
def test_a_client_supplied_i_is_never_used(
    tobira: TobiraProcess, standin: RunningStandin, alice: Account, bob_token: str, supplied: dict[str, Any]
) -> None:
    supplied = _with_bob(supplied, bob_token)
    content = supplied.get("raw") or orjson.dumps(supplied.get("body", {}))
    cookie = f"tobira={alice.cookie}" + (f"; {supplied['cookie']}" if "cookie" in supplied else "")
    headers = {"Origin": tobira.url, "Content-Type": "application/json", "Cookie": cookie}
    headers.update(supplied.get("headers", {}))
    query = f"?{supplied['query']}" if "query" in supplied else ""
    answer = web().post(f"{tobira.url}/api/i{query}", content=content, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["username"] == "alice"
    call = standin.state.calls[-1]
    assert (call.endpoint, call.token) == ("i", alice.token)
    assert bob_token not in repr(call)


UPLOAD_CLIENT_I = [
    pytest.param([("i", "{BOB}")], id="field-i"),
    pytest.param([("i", "{BOB}"), ("i", "{BOB}")], id="field-i-twice"),
    pytest.param([("I", "{BOB}")], id="field-capital-i"),
    pytest.param([("name", "x.bin"), ("i", "{BOB}")], id="field-i-after-another"),
    pytest.param([("i", "")], id="field-i-empty"),
]


@pytest.mark.parametrize("fields", UPLOAD_CLIENT_I)
def test_a_client_supplied_i_in_an_upload_is_never_used(
    tobira: TobiraProcess,
    standin: RunningStandin,
    alice: Account,
    bob_token: str,
    fields: list[tuple[str, str]],
) -> None:
    data = [(name, value.replace("{BOB}", bob_token)) for name, value in fields]
    answer = web().post(
        f"{tobira.url}/api/drive/files/create",
        files=[*((n, (None, v.encode())) for n, v in data), ("file", ("x.bin", b"hello", "text/plain"))],
        headers={
            "Origin": tobira.url,
            "Cookie": f"tobira={alice.cookie}",
            "Authorization": f"Bearer {bob_token}",
        },
    )
    assert answer.status_code == 200, answer.text
    call = standin.state.calls[-1]
    assert (call.endpoint, call.token) == ("drive/files/create", alice.token)
    assert bob_token not in repr(call)


def _multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "hostileboundary") -> bytes:
    """A multipart/form-data body: (name, filename or None, content) per part."""
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def _json_of_size(size: int) -> bytes:
    frame = b'{"text":"","pad":""}'
    return b'{"text":"x","pad":"' + b"p" * (size - len(frame) - 1) + b'"}'


SIZE_ROWS = [
    pytest.param("json-one-byte-over", 413, id="json-one-byte-over-the-cap"),
    pytest.param("json-far-over", 413, id="json-far-over-the-cap"),
    pytest.param("declared-over", 413, id="declared-length-over-the-cap"),
    pytest.param("declared-huge", 413, id="declared-length-a-terabyte"),
    pytest.param("chunked-over", 413, id="chunked-body-over-the-cap"),
    pytest.param("upload-over", 413, id="upload-over-the-cap"),
    pytest.param("upload-declared-over", 413, id="upload-declared-over-the-cap"),
    pytest.param("upload-chunked-over", 413, id="upload-chunked-over-the-cap"),
    pytest.param("upload-17-fields", 413, id="upload-too-many-fields"),
    pytest.param("upload-2-files", 413, id="upload-too-many-files"),
    pytest.param("upload-1000-empty-parts", 413, id="upload-a-thousand-empty-parts"),
    pytest.param("length-not-a-number", 400, id="content-length-not-a-number"),
    pytest.param("length-negative", 400, id="content-length-negative"),
    pytest.param("length-and-chunked", 400, id="content-length-and-chunked-smuggling"),
]


@pytest.mark.parametrize(("attack", "status"), SIZE_ROWS)
def test_oversized_requests_never_reach_the_instance(
    tobira: TobiraProcess, standin: RunningStandin, alice: Account, attack: str, status: int
) -> None:
    json_endpoint = "POST /api/notes/create HTTP/1.1"
    upload_endpoint = "POST /api/drive/files/create HTTP/1.1"
    common = [f"Origin: {tobira.url}", f"Cookie: tobira={alice.cookie}"]
    as_json = [*common, "Content-Type: application/json"]
    as_upload = [*common, "Content-Type: multipart/form-data; boundary=hostileboundary"]
    big_file = _multipart([("file", "big.bin", b"x" * (UPLOAD_LIMIT + 1))])

    def chunked(body: bytes) -> bytes:
        return (
            b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:1000], body[1000:]))
            + b"0\r\n\r\n"
        )

    body = b""
    if attack == "json-one-byte-over":
        body = _json_of_size(BODY_LIMIT + 1)
        head = [json_endpoint, *as_json, f"Content-Length: {len(body)}"]
    elif attack == "json-far-over":
        body = _json_of_size(BODY_LIMIT * 8)
        head = [json_endpoint, *as_json, f"Content-Length: {len(body)}"]
    elif attack == "declared-over":
        head = [json_endpoint, *as_json, f"Content-Length: {BODY_LIMIT + 1}"]
    elif attack == "declared-huge":
        head = [json_endpoint, *as_json, f"Content-Length: {10**12}"]
    elif attack == "chunked-over":
        body = chunked(_json_of_size(BODY_LIMIT + 1))
        head = [json_endpoint, *as_json, "Transfer-Encoding: chunked"]
    elif attack == "upload-over":
        body = big_file
        head = [upload_endpoint, *as_upload, f"Content-Length: {len(body)}"]
    elif attack == "upload-declared-over":
        head = [upload_endpoint, *as_upload, f"Content-Length: {UPLOAD_LIMIT + 1}"]
    elif attack == "upload-chunked-over":
        body = chunked(big_file)
        head = [upload_endpoint, *as_upload, "Transfer-Encoding: chunked"]
    elif attack.startswith("upload-"):
        parts: dict[str, list[tuple[str, str | None, bytes]]] = {
            "upload-17-fields": [(f"f{n}", None, b"v") for n in range(17)] + [("file", "a.bin", b"a")],
            "upload-2-files": [("file", "a.bin", b"a"), ("file2", "b.bin", b"b")],
            "upload-1000-empty-parts": [(f"f{n}", None, b"") for n in range(1000)],
        }
        body = _multipart(parts[attack])
        head = [upload_endpoint, *as_upload, f"Content-Length: {len(body)}"]
    else:
        body = b"{}"
        length = {
            "length-not-a-number": ["Content-Length: two"],
            "length-negative": ["Content-Length: -2"],
            "length-and-chunked": ["Content-Length: 2", "Transfer-Encoding: chunked"],
        }[attack]
        head = [json_endpoint, *as_json, *length]
    calls = len(standin.state.calls)
    got, answer = send_raw(tobira.url, head, body)
    refused_upstream(standin, (got, answer), status, "PAYLOAD_TOO_LARGE" if status == 413 else None, calls)


def test_control_a_body_exactly_at_the_cap_is_forwarded(
    tobira: TobiraProcess, standin: RunningStandin, alice: Account
) -> None:
    body = _json_of_size(BODY_LIMIT)
    assert len(body) == BODY_LIMIT
    calls = len(standin.state.calls)
    answer = call_api(tobira, alice.cookie, "notes/create", body)
    assert answer.status_code != 413
    assert len(standin.state.calls) == calls + 1


# ---------------------------------------------------------------------------------------------------------
# Forward authentication: return URLs toward other domains, forwarded headers from untrusted addresses

DOMAIN_PUBLIC_URL = "https://auth.example.com"
TRUSTED_PROXY = "127.0.0.77"  # the only address whose X-Forwarded-* headers the domain deployment believes
SIGN_IN = DOMAIN_PUBLIC_URL + "/login"


@pytest.fixture(scope="module")
def domain_tobira(
    tmp_path_factory: pytest.TempPathFactory, standin: RunningStandin
) -> Iterator[TobiraProcess]:
    """A deployment with a cookie domain and access rules, reached over plain http on loopback."""
    folder = tmp_path_factory.mktemp("domain")
    rules = folder / "rules.toml"
    rules.write_text(
        f'[[rules]]\nhosts = ["app.example.com"]\nusers = ["alice@{STANDIN_HOST}:{standin.port}"]\n'
    )
    server = start_tobira(
        folder,
        TOBIRA_PUBLIC_URL=DOMAIN_PUBLIC_URL,
        TOBIRA_SECRET_KEYS=KEY_2,  # another deployment than the module's `tobira`
        TOBIRA_DEV_INSTANCES=standin.url,
        TOBIRA_COOKIE_DOMAIN="example.com",
        TOBIRA_ACCESS_RULES=str(rules),
        TOBIRA_PERMISSIONS="",
        FORWARDED_ALLOW_IPS=TRUSTED_PROXY,
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy_client() -> Iterator[httpx.Client]:
    """Requests from the trusted proxy's address."""
    transport = httpx.HTTPTransport(local_address=TRUSTED_PROXY)
    with httpx.Client(timeout=20, transport=transport) as client:
        yield client


@pytest.fixture(scope="module")
def domain_alice(domain_tobira: TobiraProcess, standin: RunningStandin) -> str:
    """alice's `__Secure-tobira` cookie on the domain deployment (signed in as a browser would)."""
    with httpx.Client(timeout=20, verify=TLS) as client:
        browser = Browser(domain_tobira.url, standin, client, origin=DOMAIN_PUBLIC_URL)
        started = browser.start()
        signin = set_cookies(started)["__Host-tobira-signin"][0]
        callback = urlsplit(browser.approve(started.headers["location"]))
        finished = web().get(
            f"{domain_tobira.url}/callback?{callback.query}",
            headers={"Cookie": f"__Host-tobira-signin={signin}"},
        )
        value, attributes = set_cookies(finished)["__Secure-tobira"]
        assert attributes["domain"] == "example.com" and "secure" in attributes
        return value


RETURN_URL_ROWS = [
    ("other-domain", "https://evil.example/", "/"),
    ("cookie-domain-as-a-prefix", "https://example.com.evil.example/", "/"),
    ("cookie-domain-as-a-suffix-of-a-label", "https://evilexample.com/", "/"),
    ("userinfo-names-the-domain", "https://app.example.com@evil.example/", "/"),
    ("userinfo-with-port", "https://app.example.com:443@evil.example/", "/"),
    ("backslash-before-at", "https://evil.example\\@app.example.com/", "/"),
    ("backslash-authority", "https:\\\\app.example.com/", "/"),
    ("domain-in-fragment", "https://evil.example#.example.com", "/"),
    ("domain-in-query", "https://evil.example?.example.com", "/"),
    ("domain-in-path", "https://evil.example/.example.com", "/"),
    ("encoded-at", "https://app.example.com%40evil.example/", "/"),
    ("encoded-slash-in-host", "https://evil.example%2F.example.com/", "/"),
    ("encoded-letter-in-host", "https://app.exam%70le.com/", "/"),
    ("plain-http", "http://app.example.com/", "/"),
    ("protocol-relative", "//app.example.com/", "/"),
    ("upper-case-scheme", "HTTPS://app.example.com/", "/"),
    ("upper-case-host", "https://APP.example.com/", "/"),
    ("trailing-dot", "https://app.example.com./", "/"),
    ("ip-address", "https://127.0.0.1/", "/"),
    ("ideographic-full-stop", "https://app.example\u3002com/", "/"),
    ("full-width-host", "https://\uff41pp.example.com/", "/"),
    ("punycode-look-alike", "https://app.xn--exmple-cua.com/", "/"),
    ("tab-in-host", "https://app.exa\tmple.com/", "/"),
    ("space-after-host", "https://app.example.com /", "/"),
    ("double-slash-path", "https://app.example.com//evil.example", "/"),
    ("encoded-double-slash-path", "https://app.example.com/%2F%2Fevil.example", "/"),
    ("backslash-path", "https://app.example.com/\\evil.example", "/"),
    ("port-zero", "https://app.example.com:0/", "/"),
    ("port-too-large", "https://app.example.com:70000/", "/"),
    ("javascript", "javascript://app.example.com/%0Aalert(1)", "/"),
    ("header-injection", "https://app.example.com/\r\nSet-Cookie: x=1", "/"),
    ("over-long", "https://app.example.com/" + "a" * 3000, "/"),
    # What the domain is for: kept as it is.
    ("control-subdomain", "https://app.example.com/page?x=1#top", "https://app.example.com/page?x=1#top"),
    ("control-the-domain-itself", "https://example.com", "https://example.com"),
    ("control-deeper-with-port", "https://a.b.example.com:8443/x", "https://a.b.example.com:8443/x"),
    ("control-path-on-tobira", "/dashboard", "/dashboard"),
]
RETURN_URL_PARAMS = [pytest.param(v, e, id=name) for name, v, e in RETURN_URL_ROWS]


@pytest.mark.parametrize("parameter", ["return_to", "rd"])
@pytest.mark.parametrize(("value", "expected"), RETURN_URL_PARAMS)
def test_return_url_in_the_login_form_stays_on_the_cookie_domain(
    domain_tobira: TobiraProcess, parameter: str, value: str, expected: str
) -> None:
    page = web().get(f"{domain_tobira.url}/login", params={parameter: value})
    assert page.status_code == 200
    found = re.search(r'name="return_to" value="([^"]*)"', page.text)
    assert found is not None
    assert html.unescape(found[1]) == expected


@pytest.mark.parametrize(("value", "expected"), RETURN_URL_PARAMS)
def test_return_url_after_sign_in_stays_on_the_cookie_domain(
    domain_tobira: TobiraProcess, standin: RunningStandin, value: str, expected: str
) -> None:
    with httpx.Client(timeout=20, verify=TLS) as client:
        browser = Browser(domain_tobira.url, standin, client, origin=DOMAIN_PUBLIC_URL)
        started = browser.start(return_to=value)
        signin = set_cookies(started)["__Host-tobira-signin"][0]
        callback = urlsplit(browser.approve(started.headers["location"]))
        finished = web().get(
            f"{domain_tobira.url}/callback?{callback.query}",
            headers={"Cookie": f"__Host-tobira-signin={signin}"},
        )
    assert finished.status_code == 303
    assert finished.headers["location"] == expected


APP_VISIT = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.example.com", "X-Forwarded-Uri": "/p"}
FORWARDED_ROWS = [
    ("host-on-another-domain", {**APP_VISIT, "X-Forwarded-Host": "evil.example"}, SIGN_IN),
    (
        "host-with-domain-as-prefix",
        {**APP_VISIT, "X-Forwarded-Host": "app.example.com.evil.example"},
        SIGN_IN,
    ),
    ("host-with-userinfo", {**APP_VISIT, "X-Forwarded-Host": "app.example.com@evil.example"}, SIGN_IN),
    ("host-with-path", {**APP_VISIT, "X-Forwarded-Host": "evil.example/app.example.com"}, SIGN_IN),
    (
        "first-of-a-list-elsewhere",
        {**APP_VISIT, "X-Forwarded-Host": "evil.example, app.example.com"},
        SIGN_IN,
    ),
    ("plain-http", {**APP_VISIT, "X-Forwarded-Proto": "http"}, SIGN_IN),
    ("other-scheme", {**APP_VISIT, "X-Forwarded-Proto": "javascript"}, SIGN_IN),
    ("uri-protocol-relative", {**APP_VISIT, "X-Forwarded-Uri": "//evil.example/"}, SIGN_IN),
    ("uri-backslash", {**APP_VISIT, "X-Forwarded-Uri": "/\\evil.example"}, SIGN_IN),
    ("uri-without-slash", {**APP_VISIT, "X-Forwarded-Uri": "@evil.example"}, SIGN_IN),
    ("uri-encoded-slashes", {**APP_VISIT, "X-Forwarded-Uri": "/%2F%2Fevil.example"}, SIGN_IN),
    ("original-url-elsewhere", {"X-Original-URL": "https://evil.example/"}, SIGN_IN),
    ("original-url-userinfo", {"X-Original-URL": "https://app.example.com@evil.example/"}, SIGN_IN),
    (
        "control-on-the-domain",
        APP_VISIT,
        SIGN_IN + "?return_to=https%3A%2F%2Fapp.example.com%2Fp",
    ),
    (
        "control-original-url",
        {"X-Original-URL": "https://app.example.com/q?a=1"},
        SIGN_IN + "?return_to=https%3A%2F%2Fapp.example.com%2Fq%3Fa%3D1",
    ),
]


@pytest.mark.parametrize(
    ("headers", "location"), [pytest.param(h, loc, id=name) for name, h, loc in FORWARDED_ROWS]
)
def test_forward_auth_sends_the_signed_out_back_only_to_the_cookie_domain(
    domain_tobira: TobiraProcess, proxy_client: httpx.Client, headers: dict[str, str], location: str
) -> None:
    answer = proxy_client.get(domain_tobira.url + "/auth/forward", headers=headers)
    assert answer.status_code == 302
    assert answer.headers["location"] == location
    nginx = proxy_client.get(domain_tobira.url + "/auth/request", headers=headers)
    assert nginx.status_code == 401
    assert nginx.headers["location"] == location


UNTRUSTED_ROWS = [
    ("forwarded-host", APP_VISIT),
    ("original-url", {"X-Original-URL": "https://app.example.com/"}),
    ("claims-to-be-the-proxy", {**APP_VISIT, "X-Forwarded-For": TRUSTED_PROXY}),
    ("claims-forwarded-header", {**APP_VISIT, "Forwarded": f"for={TRUSTED_PROXY};host=app.example.com"}),
    ("claims-real-ip", {**APP_VISIT, "X-Real-IP": TRUSTED_PROXY}),
]


@pytest.mark.parametrize(("headers"), [pytest.param(h, id=name) for name, h in UNTRUSTED_ROWS])
def test_forwarded_headers_from_an_untrusted_address_name_no_host(
    domain_tobira: TobiraProcess,
    standin: RunningStandin,
    proxy_client: httpx.Client,
    domain_alice: str,
    headers: dict[str, str],
) -> None:
    cookie = {"Cookie": f"__Secure-tobira={domain_alice}"}
    # From the trusted proxy, alice may visit app.example.com…
    for path in ("/auth/request", "/auth/forward"):
        trusted = proxy_client.get(domain_tobira.url + path, headers={**headers, **cookie})
        assert trusted.status_code == 200
        assert trusted.headers["remote-user"] == f"alice@{STANDIN_HOST}:{standin.port}"
        # …from anywhere else the same headers name no host, and the rules let nobody through.
        untrusted = web().get(domain_tobira.url + path, headers={**headers, **cookie})
        assert untrusted.status_code == 403
        assert "remote-user" not in untrusted.headers
    # Signed out, the sign-in does not come back to a URL an untrusted client named.
    signed_out = web().get(domain_tobira.url + "/auth/forward", headers=headers)
    assert signed_out.status_code == 302
    assert signed_out.headers["location"] == SIGN_IN


def test_a_session_cookie_of_another_deployment_passes_nowhere(
    domain_tobira: TobiraProcess, proxy_client: httpx.Client, alice: Account
) -> None:
    """The module's other tobira (other keys) sealed this cookie: here it is no session, by either name."""
    for name in ("__Secure-tobira", "tobira"):
        answer = proxy_client.get(
            domain_tobira.url + "/auth/request", headers={**APP_VISIT, "Cookie": f"{name}={alice.cookie}"}
        )
        assert answer.status_code == 401


def test_a_signed_out_domain_cookie_passes_nowhere(
    domain_tobira: TobiraProcess, standin: RunningStandin, proxy_client: httpx.Client
) -> None:
    with httpx.Client(timeout=20, verify=TLS) as client:
        browser = Browser(domain_tobira.url, standin, client, origin=DOMAIN_PUBLIC_URL)
        started = browser.start()
        signin = set_cookies(started)["__Host-tobira-signin"][0]
        callback = urlsplit(browser.approve(started.headers["location"]))
        finished = web().get(
            f"{domain_tobira.url}/callback?{callback.query}",
            headers={"Cookie": f"__Host-tobira-signin={signin}"},
        )
    cookie = {"Cookie": f"__Secure-tobira={set_cookies(finished)['__Secure-tobira'][0]}"}
    assert (
        proxy_client.get(domain_tobira.url + "/auth/request", headers={**APP_VISIT, **cookie}).status_code
        == 200
    )
    logout = web().post(domain_tobira.url + "/logout", headers={"Origin": DOMAIN_PUBLIC_URL, **cookie})
    assert logout.status_code == 303
    value, attributes = set_cookies(logout)["__Secure-tobira"]
    assert value in ("", '""') and attributes["domain"] == "example.com"
    assert (
        proxy_client.get(domain_tobira.url + "/auth/request", headers={**APP_VISIT, **cookie}).status_code
        == 401
    )

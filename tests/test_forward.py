"""Forward authentication: the rules file, the visited host, the verdicts, and tobira answering as a process.

The real proxies (nginx, Caddy) in front of it are in tests/test_forward_peers.py; hostile requests to these
endpoints in tests/test_hostile.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from app.access import AccessRules, load_rules
from app.config import ConfigError, load_settings
from app.forward import Verdict, decide, identity_headers, sign_in_url, visit
from app.session import Session
from tests.conftest import STANDIN_HOST, Browser, TobiraProcess, start_tobira

KEY = "k" * 32
RULES = """
[[rules]]
hosts = ["wiki.example.com", "*.team.example.com"]

[[rules]]
hosts = ["grafana.example.com"]
instances = ["misskey.example.com", "*.social.example"]

[[rules]]
hosts = ["admin.example.com"]
users = ["@alice@misskey.io", "Bob@Misskey.IO"]

[[rules]]
hosts = ["ops.example.com"]
instances = ["misskey.io"]
users = ["carol@misskey.io", "carol@elsewhere.example"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def rules(tmp_path: Path) -> AccessRules:
    loaded, problems = load_rules(write(tmp_path, RULES))
    assert problems == []
    return loaded


@pytest.mark.parametrize(
    ("host", "account", "allowed"),
    [
        ("wiki.example.com", "anyone@any.example", True),
        ("WIKI.example.com", "anyone@any.example", True),
        ("a.team.example.com", "anyone@any.example", True),
        ("team.example.com", "anyone@any.example", False),  # *.domain is below the domain, not itself
        ("grafana.example.com", "dave@misskey.example.com", True),
        ("grafana.example.com", "dave@a.social.example", True),
        ("grafana.example.com", "dave@misskey.io", False),
        ("admin.example.com", "alice@misskey.io", True),
        ("admin.example.com", "bob@misskey.io", True),
        ("admin.example.com", "alice@evil.example", False),
        ("admin.example.com", "mallory@misskey.io", False),
        ("ops.example.com", "carol@misskey.io", True),
        ("ops.example.com", "carol@elsewhere.example", False),  # in users, but not on a listed server
        ("unnamed.example.com", "alice@misskey.io", False),  # a host no rule names: nobody
        (None, "alice@misskey.io", False),  # no trusted visited host: nobody
    ],
)
def test_rules(rules: AccessRules, host: str | None, account: str, allowed: bool) -> None:
    username, _, instance = account.partition("@")
    assert rules.allows(host, username, instance) is allowed


def test_without_a_file_everyone_signed_in_passes() -> None:
    rules, problems = load_rules(None)
    assert problems == []
    assert rules.allows(None, "anyone", "any.example")
    assert rules.allows("whatever.example.com", "anyone", "any.example")


def test_every_problem_in_the_rules_file_is_listed(tmp_path: Path) -> None:
    text = """
    colour = "blue"
    [[rules]]
    hosts = ["ok.example.com", "bad host", "*.also bad"]
    instances = "misskey.io"
    user = ["x"]
    [[rules]]
    instances = ["misskey.io"]
    [[rules]]
    hosts = []
    users = ["alice", "@misskey.io", "alice@bad host"]
    """
    _, problems = load_rules(write(tmp_path, text))
    assert problems == [
        "TOBIRA_ACCESS_RULES: unknown top-level keys colour (only [[rules]])",
        "TOBIRA_ACCESS_RULES: rule 1: unknown key 'user'",
        "TOBIRA_ACCESS_RULES: rule 1: hosts: 'bad host' is not a host name or *.domain",
        "TOBIRA_ACCESS_RULES: rule 1: hosts: '*.also bad' is not a host name or *.domain",
        "TOBIRA_ACCESS_RULES: rule 1: instances must be a list of strings",
        "TOBIRA_ACCESS_RULES: rule 2: hosts is required (a list of hosts or *.domain)",
        "TOBIRA_ACCESS_RULES: rule 3: hosts must name at least one host",
        "TOBIRA_ACCESS_RULES: rule 3: users: 'alice' is not an account such as alice@misskey.io",
        "TOBIRA_ACCESS_RULES: rule 3: users: '@misskey.io' is not an account such as alice@misskey.io",
        "TOBIRA_ACCESS_RULES: rule 3: users: 'alice@bad host' is not an account such as alice@misskey.io",
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[[rules]\n", "is not valid TOML"),
        ("rules = 3\n", "rules must be a list of [[rules]] tables"),
        (None, "cannot read"),
    ],
)
def test_unreadable_rules_files(tmp_path: Path, text: str | None, problem: str) -> None:
    path = tmp_path / "absent.toml" if text is None else write(tmp_path, text)
    rules, problems = load_rules(path)
    assert len(problems) == 1 and problem in problems[0]
    assert not rules.allows("any.example.com", "alice", "misskey.io")


def test_configuration_problems_come_together(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TOBIRA_PUBLIC_URL", "http://login.example.com")
    monkeypatch.setenv("TOBIRA_COOKIE_DOMAIN", "other.example")
    monkeypatch.setenv("TOBIRA_ACCESS_RULES", str(write(tmp_path, "[[rules]]\nhosts = ['a b']\n")))
    with pytest.raises(ConfigError) as caught:
        load_settings(data_dir=tmp_path)
    assert caught.value.problems == [
        "TOBIRA_COOKIE_DOMAIN: tobira's own host 'login.example.com' must be 'other.example' or below it",
        "TOBIRA_COOKIE_DOMAIN needs an https TOBIRA_PUBLIC_URL (its cookie is Secure)",
        "TOBIRA_ACCESS_RULES: rule 1: hosts: 'a b' is not a host name or *.domain",
    ]


@pytest.mark.parametrize("domain", ["localhost", "Example.com", ".example.com", "exa mple.com", "-x.com"])
def test_cookie_domain_must_be_a_domain(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, domain: str) -> None:
    monkeypatch.setenv("TOBIRA_PUBLIC_URL", "https://login.example.com")
    monkeypatch.setenv("TOBIRA_SECRET_KEYS", KEY)
    monkeypatch.setenv("TOBIRA_COOKIE_DOMAIN", domain)
    with pytest.raises(ConfigError) as caught:
        load_settings(data_dir=tmp_path)
    assert caught.value.problems == [
        f"TOBIRA_COOKIE_DOMAIN: {domain!r} is not a domain such as example.com (lowercase)"
    ]


def test_cookie_domain_and_trusted_proxies(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TOBIRA_PUBLIC_URL", "https://login.example.com")
    monkeypatch.setenv("TOBIRA_SECRET_KEYS", KEY)
    monkeypatch.setenv("TOBIRA_COOKIE_DOMAIN", "example.com")
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.2,10.1.0.0/16")
    settings = load_settings(data_dir=tmp_path)
    assert settings.cookie_domain == "example.com"
    assert settings.forwarded_allow_ips == "10.0.0.2,10.1.0.0/16"
    monkeypatch.delenv("FORWARDED_ALLOW_IPS")
    assert load_settings(data_dir=tmp_path).forwarded_allow_ips == "127.0.0.1"  # as uvicorn's default


@pytest.mark.parametrize(
    ("headers", "host", "url"),
    [
        (
            {"x-forwarded-proto": "https", "x-forwarded-host": "App.Example.com", "x-forwarded-uri": "/a?b"},
            "app.example.com",
            "https://app.example.com/a?b",
        ),
        ({"x-forwarded-host": "app.example.com:8443"}, "app.example.com", "https://app.example.com:8443/"),
        ({"x-forwarded-host": "a.example.com, b.example.com"}, "a.example.com", "https://a.example.com/"),
        ({"x-original-url": "https://app.example.com/x#y"}, "app.example.com", "https://app.example.com/x#y"),
        ({"x-original-url": "https://app.example.com"}, "app.example.com", "https://app.example.com/"),
        (
            {"x-forwarded-host": "wins.example.com", "x-original-url": "https://loses.example.com/"},
            "wins.example.com",
            "https://wins.example.com/",
        ),
        ({"x-forwarded-host": "app.example.com", "x-forwarded-uri": "x"}, "app.example.com", None),
        ({"x-forwarded-host": "evil.example@app.example.com"}, None, None),
        ({"x-forwarded-host": "app.example.com/x"}, None, None),
        ({"x-forwarded-host": "app.example.com", "x-forwarded-proto": "javascript"}, None, None),
        ({"x-original-url": "ftp://app.example.com/"}, None, None),
        ({"x-original-url": "/just/a/path"}, None, None),
        ({}, None, None),
    ],
)
def test_visit_from_trusted_headers(headers: dict[str, str], host: str | None, url: str | None) -> None:
    seen = visit(headers, trusted=True)
    assert (seen.host, seen.url) == (host, url)
    assert visit(headers, trusted=False).host is None


def test_each_endpoint_prefers_the_header_its_proxy_sets() -> None:
    both = {"x-forwarded-host": "caddy.example.com", "x-original-url": "https://nginx.example.com/"}
    assert visit(both, trusted=True).host == "caddy.example.com"
    assert visit(both, trusted=True, original_first=True).host == "nginx.example.com"
    only_forwarded = {"x-forwarded-host": "caddy.example.com"}
    assert visit(only_forwarded, trusted=True, original_first=True).host == "caddy.example.com"


def test_return_url_only_on_the_cookie_domain() -> None:
    home = visit({"x-forwarded-host": "app.example.com", "x-forwarded-uri": "/p?q=1"}, trusted=True)
    assert home.return_to("example.com") == "https://app.example.com/p?q=1"
    assert home.return_to(None) is None
    assert home.return_to("other.example") is None
    plain = visit({"x-forwarded-host": "app.example.com", "x-forwarded-proto": "http"}, trusted=True)
    assert plain.return_to("example.com") is None
    assert sign_in_url("https://login.example.com", "https://app.example.com/p?q=1") == (
        "https://login.example.com/login?return_to=https%3A%2F%2Fapp.example.com%2Fp%3Fq%3D1"
    )
    assert sign_in_url("https://login.example.com", None) == "https://login.example.com/login"


def a_session(user: dict[str, object]) -> Session:
    return Session("sid", "misskey.io", "https://misskey.io", False, "token", user, "miauth", 0.0, 1.0)


def test_verdicts_and_identity_headers() -> None:
    alice = a_session({"id": "9x", "username": "alice", "name": "アリス\r\nX-Injected: 1"})
    assert decide(None, AccessRules(None), "a.example.com") is Verdict.SIGNED_OUT
    assert decide(alice, AccessRules(None), None) is Verdict.PASS
    assert decide(alice, AccessRules(()), "a.example.com") is Verdict.REFUSED
    assert decide(a_session({"username": None}), AccessRules(None), None) is Verdict.REFUSED
    headers = identity_headers(alice)
    assert headers["Remote-User"] == "alice@misskey.io"
    assert headers["Remote-Name"].encode("latin-1").decode("utf-8") == "アリスX-Injected: 1"
    assert headers["X-Tobira-Instance"] == "misskey.io"
    assert headers["X-Tobira-User-Id"] == "9x"
    assert identity_headers(a_session({"username": "bob", "name": None}))["Remote-Name"] == "bob"


# tobira as a process: the endpoints as a proxy would call them.

RULES_FOR_STANDIN = """
[[rules]]
hosts = ["app.example.com"]
users = ["alice@{standin}"]
"""


@pytest.fixture(scope="module")
def forward_tobira(tmp_path_factory: pytest.TempPathFactory, standin: object) -> Iterator[TobiraProcess]:
    tmp = tmp_path_factory.mktemp("forward")
    standin_host = f"{STANDIN_HOST}:{standin.port}"  # type: ignore[attr-defined]
    rules = tmp / "rules.toml"
    rules.write_text(RULES_FOR_STANDIN.format(standin=standin_host))
    server = start_tobira(
        tmp,
        TOBIRA_DEV_INSTANCES=standin.url,  # type: ignore[attr-defined]
        TOBIRA_PERMISSIONS="",
        TOBIRA_ACCESS_RULES=str(rules),
    )
    yield server
    server.stop()


@pytest.fixture
def person(forward_tobira: TobiraProcess, standin: object) -> Iterator[Browser]:
    with httpx.Client(timeout=20) as client:
        yield Browser(forward_tobira.url, standin, client)  # type: ignore[arg-type]


APP = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.example.com", "X-Forwarded-Uri": "/page"}


def test_signed_in_and_allowed(person: Browser, standin: object) -> None:
    person.sign_in("alice")
    for path in ("/auth/request", "/auth/forward"):
        answer = person.client.get(person.tobira + path, headers=APP)
        assert answer.status_code == 200, answer.text
        assert answer.headers["remote-user"] == f"alice@{STANDIN_HOST}:{standin.port}"  # type: ignore[attr-defined]
        assert answer.headers["x-tobira-instance"] == f"{STANDIN_HOST}:{standin.port}"  # type: ignore[attr-defined]
        assert answer.headers["remote-name"] and answer.headers["x-tobira-user-id"]
        assert answer.headers["cache-control"] == "no-store"
        assert answer.content == b""


def test_signed_in_but_refused(person: Browser) -> None:
    person.sign_in("bob")
    for path in ("/auth/request", "/auth/forward"):
        answer = person.client.get(person.tobira + path, headers=APP)
        assert answer.status_code == 403
        assert "ACCESS_DENIED" in answer.text
        assert "remote-user" not in answer.headers
    other = {**APP, "X-Forwarded-Host": "elsewhere.example.com"}
    assert person.client.get(person.tobira + "/auth/request", headers=other).status_code == 403


def test_a_host_no_rule_names_lets_nobody_through(person: Browser) -> None:
    person.sign_in("alice")
    for headers in ({**APP, "X-Forwarded-Host": "elsewhere.example.com"}, {}):
        assert person.client.get(person.tobira + "/auth/request", headers=headers).status_code == 403


def test_signed_out(person: Browser) -> None:
    answer = person.client.get(person.tobira + "/auth/request", headers=APP)
    assert answer.status_code == 401
    # No cookie domain here: the sign-in does not come back to the app (an https URL on that domain only).
    assert answer.headers["location"] == person.tobira + "/login"
    assert "CREDENTIAL_REQUIRED" in answer.text
    forward = person.client.get(person.tobira + "/auth/forward", headers=APP)
    assert forward.status_code == 302
    assert forward.headers["location"] == person.tobira + "/login"


def test_sign_out_is_honoured_at_once(person: Browser) -> None:
    person.sign_in("alice")
    cookie = dict(person.client.cookies)
    assert person.client.get(person.tobira + "/auth/request", headers=APP).status_code == 200
    assert person.post_form("/logout", {}).status_code == 303
    replayed = httpx.get(person.tobira + "/auth/request", headers=APP, cookies=cookie)
    assert replayed.status_code == 401


@pytest.fixture(scope="module")
def domain_tobira(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TobiraProcess]:
    """tobira with a cookie domain: its public URL https (a proxy would terminate TLS), served over http."""
    server = start_tobira(
        tmp_path_factory.mktemp("domain"),
        TOBIRA_PUBLIC_URL="https://auth.example.com",
        TOBIRA_SECRET_KEYS=KEY,
        TOBIRA_COOKIE_DOMAIN="example.com",
    )
    yield server
    server.stop()


def test_forward_comes_back_to_the_url_asked_for(domain_tobira: TobiraProcess) -> None:
    served = domain_tobira.url  # plain http on loopback; its public URL is https://auth.example.com
    headers = {**APP, "X-Forwarded-Uri": "/page?x=1&y=2"}
    answer = httpx.get(served + "/auth/forward", headers=headers)
    assert answer.status_code == 302
    location = urlsplit(answer.headers["location"])
    assert (location.scheme, location.netloc, location.path) == ("https", "auth.example.com", "/login")
    assert parse_qs(location.query) == {"return_to": ["https://app.example.com/page?x=1&y=2"]}
    form = httpx.get(served + "/login?" + location.query)
    assert 'value="https://app.example.com/page?x=1&amp;y=2"' in form.text


# In-process: what one answer costs the store.


class CountingStore:
    """Wraps the real store and counts every call by name."""

    def __init__(self, store: object) -> None:
        self.store = store
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> object:
        attribute = getattr(self.store, name)
        if name.startswith("_") or not callable(attribute):
            return attribute

        def counted(*args: object, **kwargs: object) -> object:
            self.calls.append(name)
            return attribute(*args, **kwargs)

        return counted


@pytest.mark.anyio
async def test_answers_cost_one_ended_session_look_up_until_a_sign_out(tmp_path: Path) -> None:
    from app.hosts import Instance
    from app.main import create_app

    settings = load_settings(public_url="http://127.0.0.1:8000", secret_keys=[KEY], data_dir=tmp_path)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        services = app.state.services
        store = CountingStore(services.ledger.store)
        services.ledger.store = store
        instance = Instance("misskey.example", "https://misskey.example", False)
        session, value = services.cookies.issue(
            instance, token="t", user={"username": "alice"}, method="miauth"
        )
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
            for path in ("/auth/request", "/auth/forward") * 5:
                answer = await client.get(path, headers={**APP, "Cookie": f"tobira={value}"})
                assert answer.status_code == 200
            # On SQLite the host's count of sign-outs (app.endings) stands for the look-up until it moves.
            assert store.calls == ["exists"]
            someone_else, _ = services.cookies.issue(
                instance, token="u", user={"username": "bob"}, method="miauth"
            )
            await services.ledger.end_session(someone_else.sid, 60)
            answer = await client.get("/auth/request", headers={**APP, "Cookie": f"tobira={value}"})
            assert answer.status_code == 200
            assert store.calls == ["exists", "claim", "exists"]
            # nginx asks with the protected request's own method; the answer is the same.
            for method in ("POST", "PUT", "DELETE", "HEAD"):
                answer = await client.request(
                    method, "/auth/request", headers={**APP, "Cookie": f"tobira={value}"}
                )
                assert answer.status_code == 200
                assert answer.headers["remote-user"] == "alice@misskey.example"
            del store.calls[:]
            # Nobody signed in: no look-up at all.
            assert (await client.get("/auth/request", headers=APP)).status_code == 401
            assert store.calls == []
            # A sign-out is seen by the very next answer.
            await services.ledger.end_session(session.sid, 60)
            answer = await client.get("/auth/request", headers={**APP, "Cookie": f"tobira={value}"})
            assert answer.status_code == 401


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("peer", "trusted", "client", "scheme"),
    [
        ("10.0.0.2", True, "203.0.113.7", "https"),  # the proxy: its X-Forwarded-For/-Proto are believed
        ("10.1.2.3", True, "203.0.113.7", "https"),  # a network in the list
        ("198.51.100.9", False, "198.51.100.9", "http"),  # anyone else: ignored
    ],
)
async def test_forwarded_headers_are_believed_from_trusted_peers_only(
    peer: str, trusted: bool, client: str, scheme: str
) -> None:
    from app.forwarded import ForwardedHeaders, trusted_peer

    seen: dict[str, object] = {}

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        seen.update(scope)

    middleware = ForwardedHeaders(app, trusted="10.0.0.2,10.1.0.0/16")  # type: ignore[arg-type]
    headers = [(b"x-forwarded-for", b"203.0.113.7"), (b"x-forwarded-proto", b"https")]
    scope = {"type": "http", "scheme": "http", "client": (peer, 4321), "headers": headers}
    await middleware(scope, None, None)  # type: ignore[arg-type]
    assert trusted_peer(seen) is trusted
    assert seen["client"][0] == client  # type: ignore[index]
    assert seen["scheme"] == scheme

"""The OpenID provider's parts on their own: the clients file, `tobira hash-secret`, the signing keys and
their rotation, and the expiry of codes, with the clock frozen and moved by hand."""

from __future__ import annotations

import asyncio
import io
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.cli import main
from app.config import ConfigError, load_settings
from app.errors import InvalidClient, InvalidGrant
from app.ledger import CODE_SECONDS, Ledger, digest
from app.oidc import clients as clients_module
from app.oidc.claims import account_claims, subject
from app.oidc.clients import Client, ClientsFileError, hash_secret, parse_clients
from app.oidc.keys import ANNOUNCE, CACHE_SECONDS, KEEP_AFTER, SIGNING_PERIOD, KeyRing
from app.oidc.provider import Account, Provider
from app.store import open_store
from tests.conftest import REDIS_URL
from tests.hostile_support import FakeClock

KEY = "k" * 40
VALID = """
[[clients]]
client_id = "wiki"
client_name = "Team wiki"
logo_uri = "https://wiki.example/logo.png"
redirect_uris = ["https://wiki.example/oidc/callback"]
post_logout_redirect_uris = ["https://wiki.example/"]
client_secret = "0123456789abcdef0123"
instances = ["misskey.io", "*.example.social"]
permissions = ["write:notes"]

[[clients]]
client_id = "cli"
client_name = "A command-line tool"
redirect_uris = ["http://127.0.0.1:8765/cb", "http://[::1]:8765/cb", "http://localhost/cb"]
"""

# --- the clients file ------------------------------------------------------------------------------------


def test_the_specs_example_is_valid() -> None:
    clients = parse_clients(VALID)
    wiki, cli = clients["wiki"], clients["cli"]
    assert wiki.confidential and not cli.confidential
    assert wiki.permissions == ("write:notes",)
    assert wiki.allows_instance("misskey.io") and wiki.allows_instance("a.example.social")
    assert not wiki.allows_instance("misskey.io.evil.example") and cli.allows_instance("anything.example")
    assert "0123456789" not in repr(wiki)


BAD_FILES = {
    "unknown key": (
        'client_id = "a"\nclient_name = "A"\nredirect_uris = ["https://a.example/cb"]\ncolour = 1',
        "client 'a': unknown key 'colour'",
    ),
    "relative redirect": (
        'client_id = "a"\nclient_name = "A"\nredirect_uris = ["/cb"]',
        "client 'a': redirect_uris: '/cb' is not an absolute http(s) URL",
    ),
    "plain http elsewhere": (
        'client_id = "a"\nclient_name = "A"\nredirect_uris = ["http://a.example/cb"]',
        "is plain http on a host that is not loopback",
    ),
    "fragment": (
        'client_id = "a"\nclient_name = "A"\nredirect_uris = ["https://a.example/cb#x"]',
        "has a fragment",
    ),
    "permissions on a public client": (
        'client_id = "a"\nclient_name = "A"\nredirect_uris = ["https://a.example/cb"]\n'
        'permissions = ["read:account"]',
        "permissions are only for confidential clients",
    ),
    "unknown permission": (
        'client_id = "a"\nclient_name = "A"\nredirect_uris = ["https://a.example/cb"]\nclient_secret = "'
        + "s" * 20
        + '"\npermissions = ["write:everything"]',
        "unknown permission 'write:everything'",
    ),
    "short secret": (
        'client_id = "a"\nclient_name = "A"\nredirect_uris = ["https://a.example/cb"]\n'
        'client_secret = "short"',
        "client_secret must be a string of at least 16",
    ),
    "unknown algorithm": (
        'client_id = "a"\nclient_name = "A"\nredirect_uris = ["https://a.example/cb"]\n'
        'id_token_signed_response_alg = "HS256"',
        "id_token_signed_response_alg must be",
    ),
    "no redirect": ('client_id = "a"\nclient_name = "A"', "redirect_uris must be a list of URLs"),
    "bad instance": (
        'client_id = "a"\nclient_name = "A"\nredirect_uris = ["https://a.example/cb"]\n'
        'instances = ["not a host"]',
        "instances: 'not a host' is not a host name",
    ),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_each_problem_is_named(name: str) -> None:
    body, expected = BAD_FILES[name]
    with pytest.raises(ClientsFileError) as caught:
        parse_clients("[[clients]]\n" + body)
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


def test_every_problem_is_listed_at_once_and_stops_start_up(tmp_path: Path) -> None:
    path = tmp_path / "clients.toml"
    path.write_text(
        VALID
        + '\n[[clients]]\nclient_id = "wiki"\nclient_name = "Again"\nredirect_uris = ["https://b.example/cb"]\n'
        + '\n[[clients]]\nclient_id = "c"\nclient_name = "C"\nredirect_uris = ["ftp://c.example/cb"]\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(oidc_clients=path, data_dir=tmp_path)
    assert caught.value.problems == [
        "TOBIRA_OIDC_CLIENTS: client 'wiki': duplicate client_id",
        "TOBIRA_OIDC_CLIENTS: client 'c': redirect_uris: 'ftp://c.example/cb' is not an absolute http(s) URL",
    ]
    with pytest.raises(ConfigError) as missing:
        load_settings(oidc_clients=tmp_path / "nowhere.toml", data_dir=tmp_path)
    assert missing.value.problems[0].startswith("TOBIRA_OIDC_CLIENTS: cannot read")


def test_hash_secret_makes_a_hash_the_clients_file_accepts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("a-client-secret-of-some-length\n"))
    main(["hash-secret"])
    hashed = capsys.readouterr().out.strip()
    assert hashed.startswith("$argon2id$")
    client = parse_clients(
        f'[[clients]]\nclient_id = "a"\nclient_name = "A"\nredirect_uris = ["https://a.example/cb"]\n'
        f'client_secret_hash = "{hashed}"'
    )["a"]
    assert client.confidential
    assert client.secret_matches("a-client-secret-of-some-length")
    assert not client.secret_matches("a-client-secret-of-some-lengtH")
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    with pytest.raises(SystemExit):
        main(["hash-secret"])


# --- claims ----------------------------------------------------------------------------------------------


def test_sub_depends_on_the_account_only() -> None:
    alice = account_claims("misskey.io", "https://misskey.io", {"id": "9x1", "username": "alice"})
    assert alice["sub"] == subject("misskey.io", "9x1")
    assert alice["sub"] != subject("misskey.io", "9x2") != subject("other.example", "9x1")
    assert alice["preferred_username"] == "alice@misskey.io"
    assert alice["profile"] == "https://misskey.io/@alice"
    assert "picture" not in alice


# --- keys and codes over a store, the clock frozen -------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def ledger(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Ledger]:
    ledger = Ledger(open_store(f"sqlite:///{tmp_path / 'store.sqlite3'}", clock=clock))
    yield ledger
    await ledger.close()


def kids(jwks: dict[str, list[dict[str, str]]], alg: str) -> list[str]:
    return [key["kid"] for key in jwks["keys"] if key["alg"] == alg]


@pytest.mark.anyio
async def test_keys_are_shared_sealed_and_rotated(ledger: Ledger, clock: FakeClock) -> None:
    ring = KeyRing(ledger, [KEY], clock)
    first = await ring.public_jwks()
    assert len(kids(first, "RS256")) == 1 and len(kids(first, "ES256")) == 1
    sealed = await ledger.signing_keys()
    assert sealed is not None and b'"d"' not in sealed and b"RS256" not in sealed  # encrypted at rest
    replica = KeyRing(ledger, [KEY], clock)
    assert await replica.public_jwks() == first  # every replica signs with the same keys
    old = kids(first, "RS256")[0]
    assert (await ring.signing_key("RS256")).kid == old

    clock.now += SIGNING_PERIOD - ANNOUNCE + CACHE_SECONDS  # the successor is announced, not yet signing
    announced = await ring.public_jwks()
    assert len(kids(announced, "RS256")) == 2
    assert (await ring.signing_key("RS256")).kid == old
    assert kids(await replica.public_jwks(), "RS256") == kids(announced, "RS256")

    clock.now += ANNOUNCE + CACHE_SECONDS  # the successor signs; the old key stays published
    new = (await ring.signing_key("RS256")).kid
    assert new != old and old in kids(await ring.public_jwks(), "RS256")
    token = await ring.sign({"sub": "x"}, "RS256")
    clock.now += KEEP_AFTER + CACHE_SECONDS  # tokens the old key signed are all long expired
    assert kids(await ring.public_jwks(), "RS256") == [new]
    assert await ring.verify(token) == {"sub": "x"}


@pytest.mark.anyio
async def test_other_secret_keys_cannot_use_the_stored_keys(ledger: Ledger, clock: FakeClock) -> None:
    mine = await KeyRing(ledger, [KEY], clock).public_jwks()
    # A tobira with other secrets opens nothing; it would make (and publish) keys of its own instead.
    clock.now += 31  # past the making claim
    theirs = KeyRing(ledger, ["z" * 40], clock)
    assert kids(await theirs.public_jwks(), "RS256") != kids(mine, "RS256")


def provider(ledger: Ledger, clock: FakeClock) -> Provider:
    clients = parse_clients(VALID)
    keys = KeyRing(ledger, [KEY], clock)
    return Provider(
        "https://tobira.example", clients, ledger=ledger, keys=keys, secret_keys=[KEY], clock=clock
    )


async def issue(oidc: Provider, clock: FakeClock) -> str:
    client, redirect = oidc.client_and_redirect(
        {"client_id": "wiki", "redirect_uri": "https://wiki.example/oidc/callback"}
    )
    request = oidc.check_request(client, redirect, {"response_type": "code", "scope": "openid"}, [])
    await oidc.keep_request(request)
    claims = account_claims("misskey.io", "https://misskey.io", {"id": "9x1", "username": "alice"})
    location = await oidc.issue_code(request, Account(claims, clock(), "misskey-token"))
    return location.split("code=")[1].split("&")[0]


FORM = {"grant_type": "authorization_code", "redirect_uri": "https://wiki.example/oidc/callback"}
AUTH = "Basic " + __import__("base64").b64encode(b"wiki:0123456789abcdef0123").decode()


@pytest.mark.anyio
async def test_a_code_expires_within_a_minute(ledger: Ledger, clock: FakeClock) -> None:
    oidc = provider(ledger, clock)
    code = await issue(oidc, clock)
    clock.now += CODE_SECONDS + 1
    with pytest.raises(InvalidGrant, match="unknown or expired"):
        await oidc.exchange({**FORM, "code": code}, AUTH)


@pytest.mark.anyio
async def test_a_fresh_code_works_once_and_its_replay_revokes_the_token(
    ledger: Ledger, clock: FakeClock
) -> None:
    oidc = provider(ledger, clock)
    code = await issue(oidc, clock)
    clock.now += CODE_SECONDS - 1
    answer = await oidc.exchange({**FORM, "code": code}, AUTH)
    assert answer["misskey_access_token"] == "misskey-token" and answer["misskey_host"] == "misskey.io"
    bearer = "Bearer " + answer["access_token"]
    assert (await oidc.userinfo(bearer))["sub"] == subject("misskey.io", "9x1")
    with pytest.raises(InvalidGrant, match="already used"):
        await oidc.exchange({**FORM, "code": code}, AUTH)
    with pytest.raises(Exception, match="invalid_token"):
        await oidc.userinfo(bearer)


def test_a_client_is_never_shown_with_its_secret() -> None:
    client = Client("a", "A", ("https://a.example/cb",), client_secret="s" * 20)
    assert "s" * 20 not in repr(client) and "s" * 20 not in str(client)


@pytest.mark.anyio
async def test_replicas_share_keys_and_codes_over_redis(clock: FakeClock) -> None:
    namespace = f"tobira-oidc-test-{secrets.token_hex(4)}"
    stores = [open_store(REDIS_URL, clock=clock, namespace=namespace) for _ in range(2)]
    one, two = (provider(Ledger(store), clock) for store in stores)
    try:
        assert await one.keys.public_jwks() == await two.keys.public_jwks()
        code = await issue(one, clock)
        first, second = await asyncio.gather(
            one.exchange({**FORM, "code": code}, AUTH),
            two.exchange({**FORM, "code": code}, AUTH),
            return_exceptions=True,
        )
        outcomes = sorted(type(outcome).__name__ for outcome in (first, second))
        assert outcomes == ["InvalidGrant", "dict"]
    finally:
        for store in stores:
            await store.close()


@pytest.mark.anyio
async def test_a_made_up_code_leaves_nothing_in_the_store(ledger: Ledger, clock: FakeClock) -> None:
    oidc = provider(ledger, clock)
    made_up = secrets.token_urlsafe(32)
    with pytest.raises(InvalidGrant, match="unknown or expired"):
        await oidc.exchange({**FORM, "code": made_up}, AUTH)
    assert not await ledger.store.exists(f"oidc-code:{digest(made_up)}:used")


@pytest.mark.anyio
async def test_a_wrong_hashed_secret_makes_that_client_wait_a_second(
    ledger: Ledger, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "a-client-secret-of-some-length"
    entry = (
        f'[[clients]]\nclient_id = "h"\nclient_name = "H"\nredirect_uris = ["https://h.example/cb"]\n'
        f'client_secret_hash = "{hash_secret(secret)}"'
    )
    keys = KeyRing(ledger, [KEY], clock)
    oidc = Provider(
        "https://t.example", parse_clients(entry), ledger=ledger, keys=keys, secret_keys=[KEY], clock=clock
    )
    form = {"client_id": "h"}
    with pytest.raises(InvalidClient, match="authentication failed"):
        await oidc.authenticate({**form, "client_secret": secret + "x"}, None, "192.0.2.1")
    with pytest.raises(InvalidClient, match="just now"):  # not even the right one, for a second
        await oidc.authenticate({**form, "client_secret": secret}, None, "192.0.2.1")
    assert (await oidc.authenticate({**form, "client_secret": secret}, None, "192.0.2.2")).client_id == "h"
    clock.now += 1.5
    calls: list[tuple[str, str]] = []
    real = clients_module._hasher

    class Counting:
        def verify(self, secret_hash: str, given: str) -> bool:
            calls.append((secret_hash, given))
            return real.verify(secret_hash, given)

    monkeypatch.setattr(clients_module, "_hasher", Counting())
    for _ in range(3):
        client = await oidc.authenticate({**form, "client_secret": secret}, None, "192.0.2.1")
        assert client.client_id == "h"
    assert calls == []  # argon2 ran once for this secret, on its first success
    with pytest.raises(InvalidClient):
        await oidc.authenticate({**form, "client_secret": "another-secret-of-some-length"}, None, "192.0.2.1")
    assert len(calls) == 1  # a secret never seen is checked by argon2


def test_a_wrong_secret_stays_wrong_when_asked_again() -> None:
    hashed = hash_secret("the-right-secret-0123")
    client = Client("a", "A", ("https://a.example/cb",), client_secret_hash=hashed)
    for _ in range(3):
        assert not client.secret_matches("the-wrong-secret-0123")
    assert client.secret_matches("the-right-secret-0123") and client.secret_matches("the-right-secret-0123")
    assert not client.secret_matches("the-wrong-secret-0123")

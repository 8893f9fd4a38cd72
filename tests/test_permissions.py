"""Permissions: a server that knows fewer of them than tobira asks for, and identity-only sign-in.

The stand-in restricted with `known_permissions` publishes just those in its OAuth 2.0 metadata and drops
the others silently at consent, as PROTOCOL.md says; `/lookup` names what it does not offer. With
`TOBIRA_PERMISSIONS=` tobira only learns who the person is: the proxy and streaming refuse everything and
the token is revoked right after sign-in where the server allows it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from app.discovery import OAUTH2_METADATA_PATH as METADATA_PATH
from app.discovery import Discovery, ServerInfo, fetch_authorization_server
from app.errors import ErrorCode
from app.hosts import parse_instance
from app.standin import RunningStandin, StandinConfig, run_standin_in_thread
from tests.conftest import STANDIN_HOST, Browser, TobiraProcess, free_port, start_tobira

INSTANCE = parse_instance("misskey.io")
KNOWN = ["read:account", "write:drive"]  # the restricted server's whole list: no write:notes


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def standin_server(**switches: object) -> Iterator[RunningStandin]:
    port = free_port(STANDIN_HOST)
    config = StandinConfig(base_url=f"http://{STANDIN_HOST}:{port}", **switches)  # type: ignore[arg-type]
    with run_standin_in_thread(config, host=STANDIN_HOST, port=port) as running:
        yield running


@pytest.fixture(scope="module")
def narrow() -> Iterator[RunningStandin]:
    yield from standin_server(oauth2=True, known_permissions=KNOWN)


@pytest.fixture(scope="module")
def wide() -> Iterator[RunningStandin]:
    yield from standin_server(oauth2=True)


@pytest.fixture(scope="module")
def plain() -> Iterator[RunningStandin]:
    yield from standin_server()


@pytest.fixture(scope="module")
def revoking() -> Iterator[RunningStandin]:
    yield from standin_server(revoke_token_self=True)


@pytest.fixture(scope="module")
def asking(
    tmp_path_factory: pytest.TempPathFactory,
    narrow: RunningStandin,
    wide: RunningStandin,
    plain: RunningStandin,
) -> Iterator[TobiraProcess]:
    server = start_tobira(
        tmp_path_factory.mktemp("asking"),
        TOBIRA_DEV_INSTANCES=",".join(s.url for s in (narrow, wide, plain)),
        TOBIRA_PERMISSIONS="read:account,write:notes,write:drive",
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def identity_only(
    tmp_path_factory: pytest.TempPathFactory, revoking: RunningStandin, plain: RunningStandin
) -> Iterator[TobiraProcess]:
    server = start_tobira(
        tmp_path_factory.mktemp("identity"),
        TOBIRA_DEV_INSTANCES=f"{revoking.url},{plain.url}",
        TOBIRA_PERMISSIONS="",
    )
    yield server
    server.stop()


def lookup(tobira: TobiraProcess, standin: RunningStandin) -> httpx.Response:
    return httpx.get(
        tobira.url + "/lookup",
        params={"instance": f"{STANDIN_HOST}:{standin.port}"},
        headers={"Origin": tobira.url},
        timeout=20,
    )


# --- a server that knows fewer permissions ------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "missing"),
    [
        pytest.param("narrow", ["write:notes"], id="publishes-fewer"),
        pytest.param("wide", [], id="publishes-all"),
        pytest.param("plain", [], id="publishes-none"),
    ],
)
def test_lookup_names_the_permissions_the_server_does_not_offer(
    request: pytest.FixtureRequest, asking: TobiraProcess, server: str, missing: list[str]
) -> None:
    answer = lookup(asking, request.getfixturevalue(server))
    assert answer.status_code == 200
    assert answer.json()["missingPermissions"] == missing


def test_the_token_lacks_what_the_server_does_not_know(asking: TobiraProcess, narrow: RunningStandin) -> None:
    with httpx.Client(timeout=20) as client:
        browser = Browser(asking.url, narrow, client)
        browser.sign_in()
        token = narrow.state.token_of("alice")
        assert token is not None
        assert narrow.state.tokens[token].permissions == ("read:account", "write:drive")
        assert browser.api("i").status_code == 200
        refused = browser.api("notes/create", {"text": "hello"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "PERMISSION_DENIED"
    assert narrow.state.notes == []


def test_the_form_lists_the_permissions_by_name_for_its_script(asking: TobiraProcess) -> None:
    page = httpx.get(asking.url + "/login", timeout=20).text
    assert '<li data-permission="write:notes">' in page
    assert 'data-missing-permissions="This server does not offer:"' in page


# --- identity-only sign-in ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "revoked"),
    [pytest.param("revoking", True, id="revoke-allowed"), pytest.param("plain", False, id="revoke-refused")],
)
def test_identity_only_sign_in(
    request: pytest.FixtureRequest, identity_only: TobiraProcess, server: str, revoked: bool
) -> None:
    standin: RunningStandin = request.getfixturevalue(server)
    with httpx.Client(timeout=20) as client:
        browser = Browser(identity_only.url, standin, client)
        browser.sign_in()
        token = standin.state.token_of("alice")
        assert token is not None
        assert standin.state.tokens[token].permissions == ()
        assert standin.state.is_revoked(token) is revoked
        session = browser.session()
        assert session.status_code == 200
        assert session.json()["user"]["username"] == "alice"
        for endpoint in ("i", "notes/timeline", "drive/files/create"):
            refused = browser.api(endpoint)
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == ErrorCode.ENDPOINT_NOT_ALLOWED


@pytest.mark.anyio
async def test_identity_only_refuses_streaming(
    identity_only: TobiraProcess, revoking: RunningStandin
) -> None:
    with httpx.Client(timeout=20) as client:
        browser = Browser(identity_only.url, revoking, client)
        browser.sign_in()
        cookie = client.cookies.get("tobira")
    url = "ws" + identity_only.url.removeprefix("http") + "/streaming"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            url,
            origin=Origin(identity_only.url),
            additional_headers={"Cookie": f"tobira={cookie}"},
            open_timeout=5,
        ):
            pass
    assert refused.value.response.status_code == 403


# --- the published list, as a unit ----------------------------------------------------------------------


class Metadata:
    """A fake server answering only the OAuth 2.0 metadata (and api/meta); counts the requests."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status, self.body = status, body
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if request.url.path == "/api/meta":
            return httpx.Response(200, json={"version": "2026.5.4", "features": {"miauth": True}})
        if request.url.path == METADATA_PATH:
            return httpx.Response(self.status, content=self.body)
        return httpx.Response(404)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        pytest.param(200, {"scopes_supported": ["read:account"]}, ("read:account",), id="a-list"),
        pytest.param(200, {"scopes_supported": []}, (), id="an-empty-list"),
        pytest.param(200, {"issuer": "x"}, None, id="no-list"),
        pytest.param(200, {"scopes_supported": "read:account"}, None, id="a-string"),
        pytest.param(200, {"scopes_supported": ["read:account", 1]}, None, id="not-all-strings"),
        pytest.param(200, ["read:account"], None, id="an-array"),
        pytest.param(200, "not json", None, id="not-json"),
        pytest.param(404, {"scopes_supported": ["read:account"]}, None, id="not-found"),
    ],
)
async def test_scopes_supported(status: int, body: object, expected: tuple[str, ...] | None) -> None:
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    async with httpx.AsyncClient(transport=httpx.MockTransport(Metadata(status, raw))) as client:
        assert (await fetch_authorization_server(client, INSTANCE))[0] == expected


@pytest.mark.anyio
async def test_discovery_asks_for_the_metadata_once_per_lookup() -> None:
    upstream = Metadata(200, json.dumps({"scopes_supported": KNOWN}).encode())
    async with httpx.AsyncClient(transport=httpx.MockTransport(upstream)) as client:
        found = Discovery(client)
        info = await found.lookup(INSTANCE)
        assert await found.lookup(INSTANCE) is info  # cached: nothing more is asked
    assert info.scopes == tuple(KNOWN)
    assert upstream.paths.count(METADATA_PATH) == 1
    assert upstream.paths.count("/api/meta") == 1


@pytest.mark.parametrize(
    ("scopes", "missing"),
    [
        pytest.param(None, [], id="no-list"),
        pytest.param((), ["read:account", "write:notes"], id="empty-list"),
        pytest.param(("read:account",), ["write:notes"], id="fewer"),
        pytest.param(("write:notes", "read:account", "read:drive"), [], id="all"),
    ],
)
def test_missing_keeps_the_requested_order(scopes: tuple[str, ...] | None, missing: list[str]) -> None:
    info = ServerInfo(host="misskey.io", name=None, icon_url=None, version="1", miauth=True, scopes=scopes)
    assert info.missing(["read:account", "write:notes"]) == missing

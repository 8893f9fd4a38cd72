"""`GET /streaming` against a real tobira process and the stand-in's streaming API."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from app.errors import AddressForbidden
from app.guard import GuardSettings, build_guard
from app.standin import Fault, FaultKind, RunningStandin
from tests.conftest import Browser, TobiraProcess

pytestmark = pytest.mark.anyio
TIMEOUT = 5


def ws_url(http_url: str) -> str:
    return "ws" + http_url.removeprefix("http") + "/streaming"


def signed_in(new_browser: Callable[[], Browser]) -> Browser:
    browser = new_browser()
    browser.sign_in()
    return browser


def open_stream(tobira: TobiraProcess, browser: Browser | None, origin: str | None = None) -> Any:
    cookie = browser.client.cookies.get("tobira") if browser else None
    return connect(
        ws_url(tobira.url),
        origin=Origin(origin or tobira.url),
        additional_headers={"Cookie": f"tobira={cookie}"} if cookie else None,
        open_timeout=TIMEOUT,
    )


async def receive_json(stream: ClientConnection) -> Any:
    with anyio.fail_after(TIMEOUT):
        return json.loads(await stream.recv())


async def join(stream: ClientConnection, channel: str, connection_id: str = "1") -> None:
    connect_frame = {"type": "connect", "body": {"channel": channel, "id": connection_id, "pong": True}}
    await stream.send(json.dumps(connect_frame))
    assert await receive_json(stream) == {"type": "connected", "body": {"id": connection_id}}


async def closed_code(stream: ClientConnection) -> int | None:
    with anyio.fail_after(TIMEOUT), pytest.raises(ConnectionClosed):
        while True:
            await stream.recv()
    return stream.close_code


async def test_a_streamed_note_reaches_the_browser(
    tobira: TobiraProcess, new_browser: Callable[[], Browser]
) -> None:
    browser = signed_in(new_browser)
    async with open_stream(tobira, browser) as stream:
        await join(stream, "homeTimeline", "home")
        answer = await anyio.to_thread.run_sync(lambda: browser.api("notes/create", {"text": "hello stream"}))
        assert answer.status_code == 200, answer.text
        event = await receive_json(stream)
    assert event["type"] == "channel"
    assert event["body"]["id"] == "home"
    assert event["body"]["type"] == "note"
    assert event["body"]["body"]["id"] == answer.json()["createdNote"]["id"]
    assert event["body"]["body"]["text"] == "hello stream"


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "http://127.0.0.1:1", "null"],
    ids=["other-site", "other-port", "null"],
)
async def test_a_cross_site_upgrade_is_refused(
    tobira: TobiraProcess, new_browser: Callable[[], Browser], origin: str
) -> None:
    browser = signed_in(new_browser)
    with pytest.raises(InvalidStatus) as refused:
        async with open_stream(tobira, browser, origin):
            pass
    assert refused.value.response.status_code == 403


async def test_an_upgrade_without_origin_is_refused(
    tobira: TobiraProcess, new_browser: Callable[[], Browser]
) -> None:
    cookie = signed_in(new_browser).client.cookies.get("tobira")
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(tobira.url), additional_headers={"Cookie": f"tobira={cookie}"}):
            pass
    assert refused.value.response.status_code == 403


async def test_an_upgrade_without_a_session_is_refused(tobira: TobiraProcess) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with open_stream(tobira, None):
            pass
    assert refused.value.response.status_code == 401


async def test_signing_out_closes_the_open_stream(
    tobira: TobiraProcess, new_browser: Callable[[], Browser]
) -> None:
    browser = signed_in(new_browser)
    async with open_stream(tobira, browser) as stream:
        await join(stream, "main")
        answer = await anyio.to_thread.run_sync(lambda: browser.post_form("/logout", {}))
        assert answer.status_code == 303
        assert await closed_code(stream) == 4001


async def test_an_oversized_frame_closes_the_stream(
    tobira: TobiraProcess, new_browser: Callable[[], Browser]
) -> None:
    async with open_stream(tobira, signed_in(new_browser)) as stream:
        await join(stream, "main")
        await stream.send("x" * (64 * 1024 + 1))
        assert await closed_code(stream) == 1009


async def test_a_revoked_token_is_refused_upstream(
    tobira: TobiraProcess, standin: RunningStandin, new_browser: Callable[[], Browser]
) -> None:
    browser = signed_in(new_browser)
    token = standin.state.token_of("alice")
    assert token is not None
    standin.state.revoke(token)
    with pytest.raises(InvalidStatus) as refused:
        async with open_stream(tobira, browser):
            pass
    assert refused.value.response.status_code == 502


async def test_the_token_never_reaches_the_log(
    tobira: TobiraProcess, standin: RunningStandin, new_browser: Callable[[], Browser]
) -> None:
    async with open_stream(tobira, signed_in(new_browser)) as stream:
        await join(stream, "main")
    tokens = [token.token for token in standin.state.tokens.values()]
    log = tobira.log()
    assert "stream opened to 127.0.0.2" in log
    assert tokens
    assert [token for token in tokens if token in log] == []


@pytest.mark.parametrize("location", [None, "https://127.0.0.2/elsewhere", "wss://127.0.0.2/streaming"])
async def test_an_upstream_redirect_is_a_502_and_its_token_reaches_no_log(
    tobira: TobiraProcess, standin: RunningStandin, new_browser: Callable[[], Browser], location: str | None
) -> None:
    """The instance answers the upgrade with a redirect repeating `?i=TOKEN`: websockets refuses to follow
    it (the socket came from the guard) with an exception quoting the URL; tobira answers 502 and logs the
    exception's type only."""
    browser = signed_in(new_browser)
    token = standin.state.token_of("alice")
    assert token is not None
    standin.state.faults["streaming"] = Fault(FaultKind.REDIRECT, location=location)
    try:
        with pytest.raises(InvalidStatus) as refused:
            async with open_stream(tobira, browser):
                pass
    finally:
        standin.state.faults.clear()
    assert refused.value.response.status_code == 502
    log = tobira.log()
    assert f"streaming connection to 127.0.0.2:{standin.port} refused" in log
    assert token not in log
    assert "Traceback" not in log


async def test_the_standin_refuses_a_bad_token(standin: RunningStandin) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(standin.url) + "?i=not-a-token"):
            pass
    assert refused.value.response.status_code == 401


async def test_an_anonymous_standin_stream_sees_public_notes(
    standin: RunningStandin, new_browser: Callable[[], Browser]
) -> None:
    browser = signed_in(new_browser)
    async with connect(ws_url(standin.url)) as stream:
        # homeTimeline needs a credential: ignored, so neither acknowledged nor fed
        await stream.send(json.dumps({"type": "connect", "body": {"channel": "homeTimeline", "id": "h"}}))
        await join(stream, "globalTimeline", "g")
        answer = await anyio.to_thread.run_sync(lambda: browser.api("notes/create", {"text": "for all"}))
        event = await receive_json(stream)
    assert event["body"]["id"] == "g"
    assert event["body"]["body"]["id"] == answer.json()["createdNote"]["id"]


@pytest.mark.parametrize(
    "url",
    ["https://127.0.0.1/streaming", "http://example.com/streaming", "https://10.0.0.1:443/streaming"],
    ids=["loopback", "plain-http", "private"],
)
async def test_the_guard_refuses_to_open_a_socket_to_a_forbidden_address(url: str) -> None:
    guard = build_guard(GuardSettings(), ssl_context=ssl.create_default_context())
    with pytest.raises(AddressForbidden):
        await guard.open_socket(url)

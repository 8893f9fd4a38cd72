"""Request ids: kept from trusted proxies, made otherwise, echoed in every answer and on JSON log lines."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.typing import Origin

from app.config import load_settings
from app.main import create_app
from app.standin import RunningStandin
from tests.conftest import Browser, start_tobira

ORIGIN = "http://127.0.0.1:8000"
MADE = re.compile(r"[0-9a-f]{32}")
PROXY = "10.0.0.2"


def made_here(answer: httpx.Response) -> bool:
    return MADE.fullmatch(answer.headers["x-request-id"]) is not None


@pytest.mark.anyio
async def test_ids_from_trusted_proxies_are_kept_and_others_made(tmp_path: Path) -> None:
    app = create_app(
        load_settings(
            data_dir=tmp_path, secret_keys=["k" * 32], FORWARDED_ALLOW_IPS=PROXY, login_rate_limit=1
        )
    )

    def client(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app, client=(address, 4000))
        return httpx.AsyncClient(transport=transport, base_url=ORIGIN, headers={"Origin": ORIGIN})

    async with app.router.lifespan_context(app), client(PROXY) as proxy, client("203.0.113.5") as stranger:
        kept = await proxy.get("/healthz", headers={"X-Request-Id": "nginx-7f3a"})
        assert kept.headers["x-request-id"] == "nginx-7f3a"
        for bad in ("a b", "x" * 129, "ünï".encode(), b"x\x00", ""):
            assert made_here(await proxy.get("/healthz", headers={"X-Request-Id": bad}))
        ignored = await stranger.get("/healthz", headers={"X-Request-Id": "forged"})
        assert made_here(ignored)
        # Every path: pages, the proxy (plain ASGI before FastAPI), errors.
        api = await stranger.post("/api/i", json={})
        assert api.status_code == 401
        page = await stranger.get("/no-such-page")
        assert page.status_code == 404
        assert made_here(api)
        assert made_here(page)
        assert api.headers["x-request-id"] != page.headers["x-request-id"]
        # The proxy headers still apply: two clients behind the proxy have a sign-in limit each.
        starts = [
            await proxy.post("/login", data={"instance": "127.0.0.1"}, headers={"X-Forwarded-For": who})
            for who in ("198.51.100.1", "198.51.100.2", "198.51.100.1")
        ]
        assert [answer.status_code for answer in starts] == [400, 400, 429]


@pytest.mark.anyio
async def test_json_log_lines_carry_the_request_id(tmp_path: Path, standin: RunningStandin) -> None:
    tobira = start_tobira(
        tmp_path,
        TOBIRA_DEV_INSTANCES=standin.url,
        TOBIRA_PERMISSIONS="read:account",
        TOBIRA_LOG_FORMAT="json",
    )
    try:
        with httpx.Client(timeout=20) as client:
            browser = Browser(tobira.url, standin, client)
            browser.sign_in()
            api = browser.api("i", headers={"X-Request-Id": "from-nginx-1"})
            assert api.status_code == 200
            assert api.headers["x-request-id"] == "from-nginx-1"
            cookie = client.cookies["tobira"]
        async with connect(
            "ws" + tobira.url.removeprefix("http") + "/streaming",
            origin=Origin(tobira.url),
            additional_headers={"Cookie": f"tobira={cookie}", "X-Request-Id": "stream-2"},
            open_timeout=5,
        ) as stream:
            assert stream.response is not None
            assert stream.response.headers["x-request-id"] == "stream-2"
    finally:
        tobira.stop()
    lines = [json.loads(line) for line in tobira.log().splitlines()]
    assert {"time", "level", "logger", "message", "request_id"} <= set(lines[0])

    def said(request_id: str, found: Callable[[str], bool]) -> bool:
        return any(line["request_id"] == request_id and found(line["message"]) for line in lines)

    assert said("from-nginx-1", lambda message: '"POST /api/i HTTP/1.1" 200' in message)
    assert said("stream-2", lambda message: message.startswith("stream opened to"))
    assert said("stream-2", lambda message: message.startswith("stream to") and message.endswith("closed"))
    # Lines outside requests (start-up, shutdown) have none; every line inside one has its id.
    assert any(line["request_id"] is None for line in lines)
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert access
    assert all(line["request_id"] for line in access)

"""app.paths: the path without tobira's prefix, and `UnderPath` in front of a tiny app."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from app.notices import SignOutNotices
from app.paths import UnderPath, raw_route_path, route_path

pytestmark = pytest.mark.anyio


M = "/misskey"


@pytest.mark.parametrize(
    ("scope", "path", "raw"),
    [
        ({"path": M + "/login", "root_path": M, "raw_path": b"/misskey/login"}, "/login", b"/login"),
        ({"path": M, "root_path": M, "raw_path": b"/misskey"}, "/", b"/"),
        (
            {"path": M + "/api/a%2Fb", "root_path": M, "raw_path": b"/misskey/api/a%2Fb"},
            "/api/a%2Fb",
            b"/api/a%2Fb",
        ),
        ({"path": M + "x/i", "root_path": M, "raw_path": b"/misskeyx/i"}, "/misskeyx/i", b"/misskeyx/i"),
        ({"path": "/login", "root_path": "", "raw_path": b"/login"}, "/login", b"/login"),
        ({"path": "/login"}, "/login", b""),
        # Inside a mount Starlette extends root_path; the application's own stays in app_root_path.
        ({"path": M + "/static/a.css", "root_path": M + "/static", "app_root_path": M}, "/static/a.css", b""),
    ],
)
def test_route_path(scope: dict[str, Any], path: str, raw: bytes) -> None:
    assert route_path(scope) == path
    assert raw_route_path(scope) == raw


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    body = f"{scope.get('root_path')!r} {scope['path']} {route_path(scope)}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def get(base_path: str, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(UnderPath(echo, base_path=base_path))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.get(path)


@pytest.mark.parametrize(
    ("path", "status", "text"),
    [
        ("/misskey/login", 200, "'/misskey' /misskey/login /login"),
        ("/misskey/", 200, "'/misskey' /misskey/ /"),
        ("/healthz", 200, "'' /healthz /healthz"),
        ("/readyz", 200, "'' /readyz /readyz"),
        ("/login", 404, '"NOT_FOUND"'),
        ("/misskeyx/login", 404, '"NOT_FOUND"'),
        ("/", 404, '"NOT_FOUND"'),
    ],
)
async def test_under_path(path: str, status: int, text: str) -> None:
    answer = await get("/misskey", path)
    assert answer.status_code == status
    assert text in answer.text


async def test_the_prefix_itself_goes_to_its_home() -> None:
    answer = await get("/misskey", "/misskey?lang=fr")
    assert (answer.status_code, answer.headers["location"]) == (308, "/misskey/?lang=fr")
    assert (await get("/misskey", "/misskey")).headers["location"] == "/misskey/"


async def test_at_the_root_nothing_changes() -> None:
    answer = await get("", "/login")
    assert answer.text == "'' /login /login"  # httpx's transport sends root_path ""


def test_the_sign_out_notice_cookie_is_named_for_its_path() -> None:
    keys = ["k" * 32]
    assert SignOutNotices(keys, secure=True).name == "__Host-tobira-signed-out"
    assert SignOutNotices(keys, secure=True, path="/misskey").name == "__Secure-tobira-signed-out"
    assert SignOutNotices(keys, secure=False, path="/misskey").name == "tobira-signed-out"

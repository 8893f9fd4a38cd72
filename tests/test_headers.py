"""Security headers on every answer, checked in-process (the same middleware serves the real process)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.config import load_settings
from app.main import create_app

PAGES = ["/", "/login", "/button", "/signed-out", "/callback?session=x", "/nowhere", "/healthz"]
KEY = "k" * 32


async def client_for(tmp_path: Path, public_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        load_settings(
            public_url=public_url,
            secret_keys=[KEY],
            data_dir=tmp_path,
            dev_instances=["http://127.0.0.1:3000"],
        )
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
            yield client


@pytest.fixture
async def plain(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for client in client_for(tmp_path, "http://127.0.0.1:8000"):
        yield client


@pytest.fixture
async def production(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for client in client_for(tmp_path, "https://login.example.com"):
        yield client


@pytest.mark.anyio
@pytest.mark.parametrize("path", PAGES)
async def test_every_page_has_a_strict_policy(plain: httpx.AsyncClient, path: str) -> None:
    answer = await plain.get(path)
    policy = dict(part.strip().split(" ", 1) for part in answer.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["base-uri"] == "'none'"
    assert policy["object-src"] == "'none'"
    # The sign-in form's 303 goes to the instance: browsers apply form-action to that redirect.
    assert policy["form-action"] == "'self' https: http://127.0.0.1:3000"
    assert "unsafe-inline" not in answer.headers["content-security-policy"]
    assert answer.headers["x-content-type-options"] == "nosniff"
    expected = "no-referrer" if path.startswith("/callback") else "same-origin"
    assert answer.headers.get_list("referrer-policy") == [expected]
    assert answer.headers["x-frame-options"] == "DENY"
    assert "strict-transport-security" not in answer.headers


@pytest.mark.anyio
async def test_the_proxy_answers_carry_them_too(plain: httpx.AsyncClient) -> None:
    answer = await plain.post("/api/i", json={}, headers={"Origin": "http://127.0.0.1:8000"})
    assert answer.status_code == 401
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["content-type"] == "application/json"


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/", "/login", "/healthz", "/api/i"])
async def test_hsts_when_the_public_url_is_https(production: httpx.AsyncClient, path: str) -> None:
    answer = await production.request("GET" if not path.startswith("/api") else "POST", path)
    assert answer.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"


@pytest.mark.anyio
async def test_healthz_answers_over_plain_http_whatever_the_public_url(production: httpx.AsyncClient) -> None:
    answer = await production.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}

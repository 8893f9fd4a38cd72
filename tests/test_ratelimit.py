"""Sign-ins (and server look-ups) started per client address are limited, in the shared store."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from app.config import load_settings
from app.main import create_app

ORIGIN = "http://127.0.0.1:8000"
FORM = {"Origin": ORIGIN}  # a form post from tobira's own page


@pytest.mark.anyio
async def test_sign_ins_past_the_limit_are_429_with_retry_after(tmp_path: Path) -> None:
    app = create_app(load_settings(data_dir=tmp_path, secret_keys=["k" * 32], login_rate_limit=2))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app, client=("203.0.113.7", 4000))
        async with httpx.AsyncClient(transport=transport, base_url=ORIGIN, headers=FORM) as client:
            answers = [await client.post("/login", data={"instance": "127.0.0.1"}) for _ in range(3)]
            other = httpx.ASGITransport(app, client=("203.0.113.8", 4000))
            async with httpx.AsyncClient(transport=other, base_url=ORIGIN, headers=FORM) as neighbour:
                elsewhere = await neighbour.post("/login", data={"instance": "127.0.0.1"})
    assert [a.status_code for a in answers] == [400, 400, 429]
    assert "RATE_LIMITED" in answers[2].text
    assert 1 <= int(answers[2].headers["retry-after"]) <= 60
    assert elsewhere.status_code == 400  # another address has its own count


@pytest.mark.anyio
async def test_ipv6_clients_are_counted_by_their_64(tmp_path: Path) -> None:
    app = create_app(load_settings(data_dir=tmp_path, secret_keys=["k" * 32], login_rate_limit=2))

    async def start(address: str) -> int:
        transport = httpx.ASGITransport(app, client=(address, 4000))
        async with httpx.AsyncClient(transport=transport, base_url=ORIGIN, headers=FORM) as client:
            return (await client.post("/login", data={"instance": "127.0.0.1"})).status_code

    async with app.router.lifespan_context(app):
        same_64 = [await start(f"2001:db8:1:2::{n}") for n in range(1, 4)]
        next_64 = await start("2001:db8:1:3::1")
    assert same_64 == [400, 400, 429]
    assert next_64 == 400

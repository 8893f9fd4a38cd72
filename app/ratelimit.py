"""Fixed-window rate limits per client (an IPv4 address or an IPv6 network, see `app.clients`), counted in the
shared store (so every replica agrees)."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from app.clients import client_key
from app.errors import RateLimited
from app.services import Services

WINDOW = 60


async def limit(services: Services, connection: HTTPConnection, action: str, per_minute: int) -> None:
    """Count one `action` for the client's address; RateLimited past `per_minute` (0: no limit)."""
    if not per_minute:
        return
    now = services.clock()
    address = connection.client.host if connection.client else None
    client = client_key(address, services.settings.rate_limit_ipv6_prefix)
    count = await services.ledger.count(action, client, int(now // WINDOW), WINDOW)
    if count > per_minute:
        raise RateLimited(retry_after=WINDOW - int(now % WINDOW))

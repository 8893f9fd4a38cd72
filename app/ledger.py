"""The ledger: every key tobira keeps in its store, and how long each one lives.

No other module writes a store key. Everything here expires, so nothing a stranger can cause grows the store
without bound:

    ended:{sid}                     a signed-out session, until it would have expired anyway
    check:{origin}:{session}        the one claim to call a sign-in's one-shot check (10 minutes)
    oauth2:{state}                  an OAuth 2.0 sign-in under way: its PKCE verifier and issuer (10 minutes)
    rate:{action}:{client}:{window} a fixed-window counter (one window)
    legacy-app:{app}                a legacy app's secret, until 30 days after its last use
    legacy-app:{app}:registering    the right to register that app, for one sign-in at a time (10 seconds)

A store that fails (`sqlite3.Error`, `redis.RedisError`: the store's own `errors`) becomes `StoreUnavailable`
here, the one place every read and write passes: its type alone is logged (a Redis error may quote the URL
and its password) and counted. Each operation is one statement, so a failure leaves nothing half written.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from app.errors import StoreUnavailable
from app.metrics import METRICS
from app.session import PENDING_TTL as SIGN_IN_SECONDS  # a sign-in under way: its cookie, claim, record
from app.store import Store

# Anyone can name a new server (wildcard DNS makes names endless), and each first legacy sign-in registers an
# app there: its secret is kept this long after its last use, not for ever. Expiry at worst costs a new app.
APP_SECRET_SECONDS = 30 * 24 * 3600
REGISTERING_SECONDS = 10.0  # how long one sign-in may hold the right to register a legacy app

log = logging.getLogger("tobira")


class Ledger:
    """tobira's state, by meaning, over one store (SQLite or Redis: see `app.store`)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @contextmanager
    def _answering(self) -> Iterator[None]:
        """Turn the store's own failures into `StoreUnavailable`."""
        try:
            yield
        except self.store.errors as exc:
            log.warning("the store does not answer: %s", type(exc).__name__)
            METRICS.store_errors.inc()
            raise StoreUnavailable() from None

    async def end_session(self, sid: str, ttl: float) -> None:
        """Remember session `sid` as ended for `ttl` seconds (until it would have expired)."""
        with self._answering():
            await self.store.claim(f"ended:{sid}", max(1.0, ttl))

    async def session_ended(self, sid: str) -> bool:
        with self._answering():
            return await self.store.exists(f"ended:{sid}")

    async def claim_check(self, origin: str, session: str) -> bool:
        """True for the one caller that may call this sign-in's one-shot check, False for any other."""
        with self._answering():
            return await self.store.claim(f"check:{origin}:{session}", SIGN_IN_SECONDS)

    async def count(self, action: str, client: str, window: int, window_seconds: int) -> int:
        """One more `action` by `client` in fixed window number `window`; the count so far."""
        with self._answering():
            return await self.store.incr(f"rate:{action}:{client}:{window}", window_seconds)

    async def keep_oauth2_sign_in(self, state: str, record: bytes) -> None:
        with self._answering():
            await self.store.put(f"oauth2:{state}", record, SIGN_IN_SECONDS)

    async def take_oauth2_sign_in(self, state: str) -> bytes | None:
        """The record kept under `state`, removed as it is read: a state is used once."""
        key = f"oauth2:{state}"
        with self._answering():
            record = await self.store.get(key)
            await self.store.delete(key)
        return record

    async def app_secret(self, app: str) -> str | None:
        """The secret of legacy app `app`, its lifetime renewed: only apps nobody uses expire."""
        key = f"legacy-app:{app}"
        with self._answering():
            stored = await self.store.get(key)
            if stored is not None:
                await self.store.put(key, stored, APP_SECRET_SECONDS)
        return None if stored is None else stored.decode()

    async def keep_app_secret(self, app: str, secret: str) -> None:
        with self._answering():
            await self.store.put(f"legacy-app:{app}", secret.encode(), APP_SECRET_SECONDS)

    async def claim_app_registration(self, app: str) -> bool:
        """True for the one sign-in that may register legacy app `app` now."""
        with self._answering():
            return await self.store.claim(f"legacy-app:{app}:registering", REGISTERING_SECONDS)

    async def ping(self) -> None:
        """Return if the store answers and can write; `StoreUnavailable` if not."""
        with self._answering():
            await self.store.ping()

    async def close(self) -> None:
        await self.store.close()

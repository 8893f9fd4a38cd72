"""The ledger: every key tobira keeps in its store, and how long each one lives.

No other module writes a store key. Everything here expires, so nothing a stranger can cause grows the store
without bound:

    ended:{sid}                     a signed-out session, until it would have expired anyway
    check:{origin}:{session}        the one claim to call a sign-in's one-shot check (10 minutes)
    oauth2:{state}                  an OAuth 2.0 sign-in under way: its PKCE verifier and issuer (10 minutes)
    rate:{action}:{client}:{window} a fixed-window counter (one window)
    legacy-app:{app}                a legacy app's secret, until 30 days after its last use
    legacy-app:{app}:registering    the right to register that app, for one sign-in at a time (10 seconds)
    oidc-keys                       the OpenID provider's signing keys, sealed (renewed at each rotation;
                                    gone 67 days after the last one, when no token they signed is valid)
    oidc-keys:making                the right to make or rotate them, for one replica at a time (30 seconds)
    oidc-request:{id}               an OpenID authorization request waiting for the person (10 minutes)
    oidc-code:{sha256(code)}        an authorization code's grant, sealed (60 seconds; taken once)
    oidc-code:{sha256(code)}:used   the one redemption of that code (10 minutes: a replay is recognised)
    oidc-grant:{sha256(code)}       the access token issued for that code, to revoke on a replay (1 hour)
    oidc-token:{sha256(token)}      an access token's userinfo claims, sealed (1 hour)
    oidc-consent:{sub}              the apps an account agreed to sign in to (a year after the last one)
    oidc-client-failed:{address}:{client_id}  a failed client authentication (1 second)

A store that fails (`sqlite3.Error`, `redis.RedisError`: the store's own `errors`) becomes `StoreUnavailable`
here, the one place every read and write passes: its type alone is logged (a Redis error may quote the URL
and its password) and counted. Nothing is retried: the person's next request tries again.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import orjson

from app.endings import EndingsCount
from app.errors import StoreUnavailable
from app.metrics import METRICS
from app.session import PENDING_TTL as SIGN_IN_SECONDS  # a sign-in under way: its cookie, claim, record
from app.store import Store

# Anyone can name a new server (wildcard DNS makes names endless), and each first legacy sign-in registers an
# app there: its secret is kept this long after its last use, not for ever. Expiry at worst costs a new app.
APP_SECRET_SECONDS = 30 * 24 * 3600
REGISTERING_SECONDS = 10.0  # how long one sign-in may hold the right to register a legacy app
SIGNING_KEYS_SECONDS = 67 * 24 * 3600  # two signing periods and the week an old key stays published
MAKING_KEYS_SECONDS = 30.0
CODE_SECONDS = 60.0  # OpenID Connect: an authorization code lives at most this long
CODE_USED_SECONDS = 600.0
ACCESS_TOKEN_SECONDS = 3600
CONSENT_SECONDS = 365 * 24 * 3600
CLIENT_FAILURE_SECONDS = 1.0
NOT_ENDED_ENTRIES = 65536  # sessions a process remembers as not ended (about 8 MiB at most)


def digest(secret: str) -> str:
    """The name a secret (a code, a token) is kept under: a copy of the store alone redeems nothing."""
    return hashlib.sha256(secret.encode()).hexdigest()


log = logging.getLogger("tobira")


class Ledger:
    """tobira's state, by meaning, over one store (SQLite or Redis: see `app.store`)."""

    def __init__(self, store: Store, endings: EndingsCount | None = None) -> None:
        """`endings`: the host's count of ended sessions (app.endings), for a store only this host uses."""
        self.store = store
        self.endings = endings
        self._not_ended: dict[str, int] = {}  # session id: the count of endings when it was found not ended

    @contextmanager
    def _answering(self) -> Iterator[None]:
        """Turn the store's own failures into `StoreUnavailable`."""
        try:
            yield
        except getattr(self.store, "errors", ()) as exc:
            self._unavailable(exc)

    async def end_session(self, sid: str, ttl: float) -> None:
        """Remember session `sid` as ended for `ttl` seconds (until it would have expired)."""
        with self._answering():
            await self.store.claim(f"ended:{sid}", max(1.0, ttl))
        if self.endings is not None:
            self.endings.add_one()  # after the store has it: see app.endings

    async def session_ended(self, sid: str) -> bool:
        """Asked on every proxied call and forward-auth question: the store is asked only when no session
        has ended on this host since this one was last found not ended (see app.endings)."""
        count = None if self.endings is None else self.endings.value()
        if count is not None and self._not_ended.get(sid) == count:
            return False
        try:
            ended = await self.store.exists(f"ended:{sid}")
        except getattr(self.store, "errors", ()) as exc:
            self._unavailable(exc)
        if count is not None and not ended:
            if len(self._not_ended) >= NOT_ENDED_ENTRIES:
                self._not_ended.clear()
            self._not_ended[sid] = count
        return ended

    def _unavailable(self, exc: Exception) -> NoReturn:
        log.warning("the store does not answer: %s", type(exc).__name__)
        METRICS.store_errors.inc()
        raise StoreUnavailable() from None

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

    async def signing_keys(self) -> bytes | None:
        with self._answering():
            return await self.store.get("oidc-keys")

    async def keep_signing_keys(self, sealed: str) -> None:
        with self._answering():
            await self.store.put("oidc-keys", sealed.encode(), SIGNING_KEYS_SECONDS)

    async def claim_signing_keys_making(self) -> bool:
        """True for the one replica that may make or rotate the signing keys now."""
        with self._answering():
            return await self.store.claim("oidc-keys:making", MAKING_KEYS_SECONDS)

    async def keep_authorization_request(self, request_id: str, record: bytes) -> None:
        with self._answering():
            await self.store.put(f"oidc-request:{request_id}", record, SIGN_IN_SECONDS)

    async def authorization_request(self, request_id: str) -> bytes | None:
        with self._answering():
            return await self.store.get(f"oidc-request:{request_id}")

    async def drop_authorization_request(self, request_id: str) -> None:
        with self._answering():
            await self.store.delete(f"oidc-request:{request_id}")

    async def keep_code(self, code: str, sealed: str) -> None:
        with self._answering():
            await self.store.put(f"oidc-code:{digest(code)}", sealed.encode(), CODE_SECONDS)

    async def redeem_code(self, code: str) -> tuple[bytes | None, bool]:
        """(the grant kept under `code`, whether this is its first redemption): the grant is removed as it
        is read, and a second redemption, on any replica, is recognised as one."""
        with self._answering():
            name = f"oidc-code:{digest(code)}"
            record = await self.store.get(name)
            if (
                record is None
            ):  # unknown, expired or redeemed: only a redemption is remembered (no writes here)
                return None, not await self.store.exists(name + ":used")
            if not await self.store.claim(name + ":used", CODE_USED_SECONDS):
                return None, False  # another request, on any replica, redeemed it just now
            await self.store.delete(name)
            return record, True

    async def keep_access_token(self, token: str, sealed: str, code: str) -> None:
        with self._answering():
            await self.store.put(f"oidc-token:{digest(token)}", sealed.encode(), ACCESS_TOKEN_SECONDS)
            await self.store.put(f"oidc-grant:{digest(code)}", digest(token).encode(), ACCESS_TOKEN_SECONDS)

    async def access_token(self, token: str) -> bytes | None:
        with self._answering():
            return await self.store.get(f"oidc-token:{digest(token)}")

    async def revoke_code_grant(self, code: str) -> None:
        """A code was replayed: the access token issued for it is revoked (RFC 6749 section 4.1.2)."""
        with self._answering():
            issued = await self.store.get(f"oidc-grant:{digest(code)}")
            if issued is not None:
                await self.store.delete(f"oidc-token:{issued.decode()}")

    async def consents(self, sub: str) -> list[str]:
        with self._answering():
            stored = await self.store.get(f"oidc-consent:{sub}")
            items = orjson.loads(stored) if stored else []
            return [item for item in items if isinstance(item, str)] if isinstance(items, list) else []

    async def keep_consents(self, sub: str, client_ids: list[str]) -> None:
        with self._answering():
            if client_ids:
                await self.store.put(
                    f"oidc-consent:{sub}", orjson.dumps(sorted(set(client_ids))), CONSENT_SECONDS
                )
            else:
                await self.store.delete(f"oidc-consent:{sub}")

    async def note_client_failure(self, client: str) -> None:
        with self._answering():
            await self.store.claim(f"oidc-client-failed:{client}", CLIENT_FAILURE_SECONDS)

    async def client_failed_recently(self, client: str) -> bool:
        with self._answering():
            return await self.store.exists(f"oidc-client-failed:{client}")

    async def ping(self) -> None:
        """Return if the store answers and can write; `StoreUnavailable` if not."""
        with self._answering():
            await self.store.ping()

    async def close(self) -> None:
        await self.store.close()
        if self.endings is not None:
            self.endings.close()

"""The provider's signing keys: made by tobira, kept encrypted in the store, rotated, published as a JWK Set.

One RSA key (RS256) and one P-256 key (ES256) sign at any time. Every replica reads the same keys from the
store (sealed with `TOBIRA_SECRET_KEYS`, so a copy of the store alone signs nothing) and keeps them in memory
for `CACHE_SECONDS`. A key signs for `SIGNING_PERIOD`; its successor is published `ANNOUNCE` before it starts
signing, so that every replica and every app has seen it by then, and a key that stopped signing stays
published for `KEEP_AFTER` (longer than any ID token it signed lives, and long enough for `id_token_hint`).

    key:   created ── signs_from ────────── next.signs_from ─────────── + KEEP_AFTER ── dropped
                        (signs)                  (published only)

JOSE itself (JWK, JWS, JWT) is joserfc's: no hand-written crypto or parsing here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeyParameters, KeySet, RSAKey, import_key

from app.crypto import CookieCodec
from app.ledger import Ledger

SIGNING_PERIOD = 30 * 24 * 3600
ANNOUNCE = 15 * 60
KEEP_AFTER = 7 * 24 * 3600
CACHE_SECONDS = 60
RSA_BITS = 2048
WAIT_FOR_MAKER = 10.0  # how long a replica waits for another one making the very first keys


class SigningKeysUnavailable(Exception):
    """No signing key could be read or made in time (the store is down, or another replica is stuck)."""


@dataclass(frozen=True, slots=True)
class StoredKey:
    alg: str
    signs_from: float
    jwk: dict[str, Any]  # private

    def as_json(self) -> dict[str, Any]:
        return {"alg": self.alg, "signs_from": self.signs_from, "jwk": self.jwk}


def make_key(alg: str, signs_from: float) -> StoredKey:
    parameters: KeyParameters = {"alg": alg, "use": "sig"}
    key: RSAKey | ECKey
    if alg == "RS256":
        key = RSAKey.generate_key(RSA_BITS, parameters=parameters, private=True)
    elif alg == "ES256":
        key = ECKey.generate_key("P-256", parameters=parameters, private=True)
    else:
        raise ValueError(f"no such signing algorithm: {alg}")
    key.ensure_kid()  # the RFC 7638 thumbprint
    return StoredKey(alg, signs_from, key.as_dict(private=True))


class KeyRing:
    """The signing keys of one tobira (all replicas share them through the store)."""

    algorithms = ("RS256", "ES256")

    def __init__(self, ledger: Ledger, secret_keys: list[str], clock: Callable[[], float]) -> None:
        self._ledger = ledger
        self._codec = CookieCodec(secret_keys, "oidc-signing-keys")
        self._clock = clock
        self._keys: list[StoredKey] = []
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    async def _current(self) -> list[StoredKey]:
        now = self._clock()
        if self._read_at is not None and now - self._read_at < CACHE_SECONDS:
            return self._keys
        async with self._lock:
            if self._read_at is None or self._clock() - self._read_at >= CACHE_SECONDS:
                self._keys = await self._load_or_make()
                self._read_at = self._clock()
        return self._keys

    async def _read(self) -> list[StoredKey]:
        sealed = await self._ledger.signing_keys()
        data = self._codec.decode(sealed.decode()) if sealed else None
        keys = data.get("keys") if data else None
        if not isinstance(keys, list):
            return []
        return [StoredKey(item["alg"], float(item["signs_from"]), item["jwk"]) for item in keys]

    async def _load_or_make(self) -> list[StoredKey]:
        deadline = self._clock() + WAIT_FOR_MAKER
        while True:
            keys = self._live(await self._read())
            wanted = self._wanted(keys)
            if not wanted:
                return keys
            if await self._ledger.claim_signing_keys_making():
                keys = [*keys, *wanted]
                await self._ledger.keep_signing_keys(
                    self._codec.encode({"keys": [k.as_json() for k in keys]})
                )
                return keys
            missing = {key.alg for key in wanted} - {key.alg for key in keys}
            if not missing:
                return keys  # another replica is rotating: the current keys still sign meanwhile
            if self._clock() > deadline:
                raise SigningKeysUnavailable()
            await asyncio.sleep(0.1)

    def _wanted(self, keys: list[StoredKey]) -> list[StoredKey]:
        """New keys to make: a first key for an algorithm that has none, a successor for one due."""
        now, wanted = self._clock(), []
        for alg in self.algorithms:
            own = [key for key in keys if key.alg == alg]
            if not own:
                wanted.append(make_key(alg, now))
            elif now >= max(key.signs_from for key in own) + SIGNING_PERIOD - ANNOUNCE:
                wanted.append(make_key(alg, now + ANNOUNCE))
        return wanted

    def _live(self, keys: list[StoredKey]) -> list[StoredKey]:
        """The keys still published: each until KEEP_AFTER past the moment its successor began signing."""
        now, live = self._clock(), []
        for key in keys:
            later = [
                other.signs_from
                for other in keys
                if other.alg == key.alg and other.signs_from > key.signs_from
            ]
            if not later or now < min(later) + KEEP_AFTER:
                live.append(key)
        return live

    async def signing_key(self, alg: str) -> RSAKey | ECKey:
        """The key that signs with `alg` now. Raises SigningKeysUnavailable."""
        keys = await self._current()
        now = self._clock()  # after: the very first keys sign from the moment they were made
        ready = [key for key in keys if key.alg == alg and key.signs_from <= now]
        if not ready:
            raise SigningKeysUnavailable()
        chosen = max(ready, key=lambda key: key.signs_from)
        imported = import_key(chosen.jwk)
        assert isinstance(imported, RSAKey | ECKey)
        return imported

    async def public_jwks(self) -> dict[str, Any]:
        """The JWK Set apps verify ID tokens with: every live key, public parts only."""
        keys = [import_key(key.jwk) for key in await self._current()]
        return {"keys": [key.as_dict(private=False) for key in keys]}

    async def sign(self, claims: dict[str, Any], alg: str) -> str:
        key = await self.signing_key(alg)
        return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=[alg])

    async def verify(self, token: str) -> dict[str, Any] | None:
        """The claims of a JWT tobira signed with one of its live keys (any age), or None for anything else:
        `alg: none`, HMAC algorithms (a public key is no secret), unknown keys, bad signatures."""
        keys = KeySet([import_key(key.jwk) for key in await self._current()])
        try:
            decoded = jwt.decode(token, keys, algorithms=list(self.algorithms))
        except (JoseError, ValueError, TypeError):
            return None
        return dict(decoded.claims)

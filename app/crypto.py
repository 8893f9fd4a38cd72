"""Authenticated encryption of small JSON payloads, for tobira's cookies.

A cookie value is URL-safe base64 (no padding) of

    version (1 byte) | key id (4 bytes) | nonce (12 bytes) | AES-256-GCM ciphertext and tag

The AES key is derived per (secret, purpose) with HKDF-SHA256, so a session cookie can never be replayed as a
sign-in cookie or the other way round, and the purpose is bound again as associated data together with the
header. The key id is a hash of the derived key: decoding tries only the key that made the value, which keeps
the per-request cost at one AES-GCM decryption. Secrets are listed newest first; the newest encrypts and all
decrypt, so an operator rotates by putting a new secret in front and dropping the old one a session lifetime
later.

The payload holds the instance token, so it must be encrypted, not just signed: itsdangerous only signs, and
Fernet has neither purpose binding nor key ids and makes longer cookies. Hence this small wrapper around
`cryptography`'s AES-GCM.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

FORMAT_VERSION = 1
# A fixed salt is fine for HKDF when the input is already a high-entropy secret (RFC 5869 §3.1); it only
# separates tobira's keys from any other use of the same secret.
KDF_SALT = b"tobira cookie codec / HKDF salt / 2024"
KEY_ID_LENGTH = 4
NONCE_LENGTH = 12
TAG_LENGTH = 16
# Browsers cap a cookie near 4 KiB; anything much longer is not ours and is refused before any work.
MAX_TOKEN_LENGTH = 8192

_HEADER_LENGTH = 1 + KEY_ID_LENGTH + NONCE_LENGTH
_VERSION_BYTE = bytes([FORMAT_VERSION])


def derive_key(secret: str, purpose: str) -> bytes:
    """The 256-bit AES key for one secret and one purpose."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=KDF_SALT, info=_info(purpose))
    return hkdf.derive(secret.encode("utf-8"))


def key_id(key: bytes) -> bytes:
    """A short public name for a derived key; reveals nothing useful about the key itself."""
    return hashlib.sha256(b"tobira key id\x00" + key).digest()[:KEY_ID_LENGTH]


def _info(purpose: str) -> bytes:
    return b"tobira/" + purpose.encode("utf-8") + b"/v1"


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class CookieCodec:
    """Authenticated encryption of small JSON payloads for cookies."""

    def __init__(self, secrets: Sequence[str], purpose: str) -> None:
        """`secrets` newest first (their strength is checked by configuration); `purpose` e.g. "session".

        Raises ValueError when there is no secret or no purpose.
        """
        if not secrets:
            raise ValueError("CookieCodec needs at least one secret")
        if not purpose:
            raise ValueError("CookieCodec needs a purpose")
        self._associated_prefix = _info(purpose)
        keys = [derive_key(secret, purpose) for secret in secrets]
        self._encrypt_id = key_id(keys[0])
        self._encryptor = AESGCM(keys[0])
        # A list per id: two different keys sharing a 4-byte id is unlikely, but must not lock anyone out.
        self._decryptors: dict[bytes, list[AESGCM]] = {}
        seen: set[bytes] = set()
        for key in keys:
            if key not in seen:
                seen.add(key)
                self._decryptors.setdefault(key_id(key), []).append(AESGCM(key))

    def encode(self, payload: Mapping[str, Any]) -> str:
        """Encrypt `payload` into a cookie-safe string ([A-Za-z0-9_-] only).

        Raises TypeError if the payload is not JSON-serialisable, ValueError if the result would be longer
        than `decode` accepts.
        """
        plaintext = orjson.dumps(dict(payload))
        header = _VERSION_BYTE + self._encrypt_id + os.urandom(NONCE_LENGTH)
        ciphertext = self._encryptor.encrypt(header[-NONCE_LENGTH:], plaintext, self._associated(header))
        token = _b64encode(header + ciphertext)
        if len(token) > MAX_TOKEN_LENGTH:
            raise ValueError(f"encoded payload is {len(token)} characters, over {MAX_TOKEN_LENGTH}")
        return token

    def decode(self, value: str) -> dict[str, Any] | None:
        """The payload `encode` put in `value`, or None for anything else. Never raises."""
        raw = self._unwrap(value)
        if raw is None or len(raw) < _HEADER_LENGTH + TAG_LENGTH or raw[:1] != _VERSION_BYTE:
            return None
        header, ciphertext = raw[:_HEADER_LENGTH], raw[_HEADER_LENGTH:]
        nonce = header[-NONCE_LENGTH:]
        for aesgcm in self._decryptors.get(header[1 : 1 + KEY_ID_LENGTH], ()):
            try:
                plaintext = aesgcm.decrypt(nonce, ciphertext, self._associated(header))
            except InvalidTag:
                continue
            try:
                payload = orjson.loads(plaintext)
            except orjson.JSONDecodeError:
                return None
            return payload if isinstance(payload, dict) else None
        return None

    def _associated(self, header: bytes) -> bytes:
        return self._associated_prefix + b"\x00" + header

    @staticmethod
    def _unwrap(value: object) -> bytes | None:
        """The bytes behind a canonical unpadded URL-safe base64 string, or None."""
        if not isinstance(value, str) or len(value) > MAX_TOKEN_LENGTH or not value.isascii():
            return None
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            return None
        # The decoder skips stray characters and ignores unused trailing bits; only the one canonical
        # spelling of a value is accepted, so a cookie cannot be altered at all and still pass.
        return raw if _b64encode(raw) == value else None

"""The cookie codec: round trip, purpose and key separation, rotation, and refusal of every alteration."""

from __future__ import annotations

import base64
import hmac
import os
import re
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from app import crypto
from app.crypto import CookieCodec

KEY_A = "A" * 16 + "secret-key-number-one-0123456789"
KEY_B = "B" * 16 + "secret-key-number-two-0123456789"
KEY_C = "C" * 16 + "secret-key-number-three-01234567"
TOKEN = "Zq8vXk3pLmN0rT7wYb2dHs9eFj4gKc6a"
PAYLOAD = {"instance": "misskey.example", "token": TOKEN, "user": {"id": "9abc", "name": "アリス"}, "n": 1}

CODEC = CookieCodec([KEY_A], "session")
VALUE = CODEC.encode(PAYLOAD)
RAW = base64.urlsafe_b64decode(VALUE + "=" * (-len(VALUE) % 4))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _seal(key_secret: str, purpose: str, plaintext: bytes) -> str:
    """Build a value by hand from the documented format, to reach the checks after decryption."""
    key = crypto.derive_key(key_secret, purpose)
    header = bytes([crypto.FORMAT_VERSION]) + crypto.key_id(key) + os.urandom(crypto.NONCE_LENGTH)
    associated = b"tobira/" + purpose.encode() + b"/v1\x00" + header
    return _b64(header + AESGCM(key).encrypt(header[-12:], plaintext, associated))


def test_round_trip() -> None:
    assert CODEC.decode(VALUE) == PAYLOAD


def test_value_is_cookie_safe_base64_without_padding() -> None:
    assert re.fullmatch(r"[A-Za-z0-9_-]+", VALUE)
    assert RAW[0] == crypto.FORMAT_VERSION
    assert len(RAW) == 1 + 4 + 12 + len(orjson.dumps(PAYLOAD)) + 16


def test_each_encoding_is_different() -> None:
    assert CODEC.encode(PAYLOAD) != CODEC.encode(PAYLOAD)


def test_compact_json_keeps_small_payloads_small() -> None:
    assert len(CODEC.encode({})) == len(_b64(bytes(1 + 4 + 12 + 2 + 16)))


def test_accepts_any_mapping() -> None:
    from types import MappingProxyType

    assert CODEC.decode(CODEC.encode(MappingProxyType({"a": 1}))) == {"a": 1}


def test_wrong_purpose_refused() -> None:
    assert CookieCodec([KEY_A], "signin").decode(VALUE) is None


def test_purpose_is_bound_as_associated_data_too() -> None:
    # Same key, other purpose in the associated data only: still refused.
    key = crypto.derive_key(KEY_A, "session")
    header = RAW[:17]
    forged = AESGCM(key).encrypt(header[-12:], orjson.dumps(PAYLOAD), b"tobira/signin/v1\x00" + header)
    assert CODEC.decode(_b64(header + forged)) is None


def test_the_token_is_not_readable_in_the_value() -> None:
    assert TOKEN not in VALUE
    assert TOKEN.encode() not in RAW
    assert orjson.dumps(PAYLOAD) not in RAW
    for shift in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            # The middle of the base64 of the token, whatever its alignment in a larger string.
            middle = encode(b"x" * shift + TOKEN.encode()).decode()[4:-4]
            assert middle not in VALUE
    assert _b64(orjson.dumps(PAYLOAD))[:16] not in VALUE


@given(position=st.integers(min_value=0, max_value=len(RAW) - 1), xor=st.integers(min_value=1, max_value=255))
def test_any_flipped_byte_refused(position: int, xor: int) -> None:
    flipped = bytearray(RAW)
    flipped[position] ^= xor
    assert CODEC.decode(_b64(bytes(flipped))) is None


@given(
    position=st.integers(min_value=0, max_value=len(VALUE) - 1), xor=st.integers(min_value=1, max_value=255)
)
def test_any_flipped_character_refused(position: int, xor: int) -> None:
    # Includes flips of the unused low bits of the last base64 character, which decode to the same bytes.
    altered = VALUE[:position] + chr(ord(VALUE[position]) ^ xor) + VALUE[position + 1 :]
    assert CODEC.decode(altered) is None


def test_truncation_at_every_length_refused() -> None:
    for length in range(len(VALUE)):
        assert CODEC.decode(VALUE[:length]) is None, length
    for length in range(len(RAW)):
        assert CODEC.decode(_b64(RAW[:length])) is None, length


def test_extension_refused() -> None:
    assert CODEC.decode(VALUE + "A") is None
    assert CODEC.decode(VALUE + "AAAA") is None
    assert CODEC.decode(_b64(RAW + b"\x00")) is None


def test_padding_and_whitespace_refused() -> None:
    padded = base64.urlsafe_b64encode(RAW).decode()
    if padded != VALUE:
        assert CODEC.decode(padded) is None
    assert CODEC.decode(" " + VALUE) is None
    assert CODEC.decode(VALUE + "\n") is None
    assert CODEC.decode(VALUE[:10] + "." + VALUE[10:]) is None


def test_standard_base64_alphabet_refused() -> None:
    value = next(v for v in (CODEC.encode(PAYLOAD) for _ in range(1000)) if "-" in v or "_" in v)
    assert CODEC.decode(value.replace("-", "+").replace("_", "/")) is None


def test_key_rotation() -> None:
    old = CookieCodec([KEY_A], "session")
    rotated = CookieCodec([KEY_B, KEY_A], "session")
    old_value = old.encode(PAYLOAD)

    assert rotated.decode(old_value) == PAYLOAD, "an old value is accepted while its key is listed"
    new_value = rotated.encode(PAYLOAD)
    assert CookieCodec([KEY_B], "session").decode(new_value) == PAYLOAD, "the newest key encrypts"
    assert old.decode(new_value) is None
    assert CookieCodec([KEY_B], "session").decode(old_value) is None, "refused once its key is removed"
    assert CookieCodec([KEY_C, KEY_B], "session").decode(old_value) is None


def test_key_a_value_unreadable_with_key_b() -> None:
    assert CookieCodec([KEY_B], "session").decode(VALUE) is None


def test_unknown_key_id_and_wrong_key_under_a_known_id_refused() -> None:
    # A value claiming key A's id but sealed with key B fails authentication.
    key_b = crypto.derive_key(KEY_B, "session")
    header = RAW[:17]
    forged = AESGCM(key_b).encrypt(header[-12:], b"{}", b"tobira/session/v1\x00" + header)
    assert CODEC.decode(_b64(header + forged)) is None


def test_duplicate_secrets_are_harmless() -> None:
    codec = CookieCodec([KEY_A, KEY_A, KEY_B], "session")
    assert codec.decode(VALUE) == PAYLOAD
    assert CODEC.decode(codec.encode(PAYLOAD)) == PAYLOAD


def test_unknown_version_refused() -> None:
    assert CODEC.decode(_b64(bytes([2]) + RAW[1:])) is None


@pytest.mark.parametrize(
    ("plaintext", "expected"),
    [
        pytest.param(b'{"a":1}', {"a": 1}, id="dict"),
        pytest.param(b"[1,2]", None, id="list"),
        pytest.param(b'"text"', None, id="string"),
        pytest.param(b"null", None, id="null"),
        pytest.param(b"{not json", None, id="bad-json"),
        pytest.param(b"", None, id="empty"),
        pytest.param(b"\xff\xfe", None, id="not-utf8"),
    ],
)
def test_payload_must_be_a_json_object(plaintext: bytes, expected: dict[str, Any] | None) -> None:
    assert CODEC.decode(_seal(KEY_A, "session", plaintext)) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("A", id="one-char"),
        pytest.param("AAAAA", id="impossible-length"),
        pytest.param("=" * 8, id="padding-only"),
        pytest.param("tobira", id="word"),
        pytest.param("é" + VALUE[1:], id="non-ascii"),
        pytest.param("\x00" * 40, id="nul"),
        pytest.param(VALUE.replace(VALUE[5], "\u3000", 1), id="unicode-space"),
        pytest.param("A" * (crypto.MAX_TOKEN_LENGTH + 1), id="too-long"),
        pytest.param(_b64(b"\x01" + b"\x00" * 40), id="zero-key-id"),
    ],
)
def test_garbage_refused(value: str) -> None:
    assert CODEC.decode(value) is None


def test_non_string_refused() -> None:
    assert CODEC.decode(None) is None  # type: ignore[arg-type]
    assert CODEC.decode(b"abc") is None  # type: ignore[arg-type]


@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(value: str) -> None:
    assert CODEC.decode(value) is None


@given(st.from_regex(r"[A-Za-z0-9_-]{0,120}", fullmatch=True))
def test_arbitrary_base64_never_raises(value: str) -> None:
    assert CODEC.decode(value) is None


@given(st.binary(max_size=120))
def test_arbitrary_bytes_after_a_valid_header_never_raise(tail: bytes) -> None:
    assert CODEC.decode(_b64(RAW[:17] + tail)) is None


def test_too_large_payload_refused_by_encode() -> None:
    with pytest.raises(ValueError, match="over 8192"):
        CODEC.encode({"blob": "x" * 7000})


def test_unserialisable_payload_refused_by_encode() -> None:
    with pytest.raises(TypeError):
        CODEC.encode({"when": object()})


def test_needs_a_secret_and_a_purpose() -> None:
    with pytest.raises(ValueError, match=r"^CookieCodec needs at least one secret$"):
        CookieCodec([], "session")
    with pytest.raises(ValueError, match=r"^CookieCodec needs a purpose$"):
        CookieCodec([KEY_A], "")


def test_repr_reveals_no_key() -> None:
    assert KEY_A not in repr(CODEC)
    assert KEY_A not in str(vars(CODEC))


# Known answers. Every live cookie depends on these: a change to the salt, the info string, the key id's
# hash or the format (version byte, header layout, associated data) must fail here, not in production.
KNOWN_SECRET = "tobira known-answer secret, 32+ characters long"
KNOWN_SESSION_KEY = "af234da962b7b5cecccb571377706990b470c229e3c4ef9631d9a68c7bd28abd"
KNOWN_SIGNIN_KEY = "719ffc85dd7c05cb724e8aec56526a79c352bc920bb2ac2940ececad21abf3d4"
# CookieCodec([KNOWN_SECRET], "session").encode({"s": "sid", "t": "token"}), made once and kept.
KNOWN_COOKIE = "Af7raD4xNUrBeaEu91IVsOsf-ObaR9GvSylU7qN6-O9im38PwV13SOYLo-rGDgBYDYQo11K_qqA"


def test_key_derivation_known_answer() -> None:
    session_key = crypto.derive_key(KNOWN_SECRET, "session")
    assert session_key.hex() == KNOWN_SESSION_KEY
    assert crypto.derive_key(KNOWN_SECRET, "signin").hex() == KNOWN_SIGNIN_KEY
    # The recipe: HKDF-SHA256 (RFC 5869) with tobira's salt and "tobira/<purpose>/v1" as info.
    prk = hmac.digest(b"tobira cookie codec / HKDF salt / 2024", KNOWN_SECRET.encode(), "sha256")
    assert hmac.digest(prk, b"tobira/session/v1\x01", "sha256") == session_key


def test_key_id_known_answer() -> None:
    assert crypto.key_id(bytes.fromhex(KNOWN_SESSION_KEY)).hex() == "feeb683e"
    assert crypto.key_id(bytes.fromhex(KNOWN_SIGNIN_KEY)).hex() == "4da813c8"


def test_a_cookie_made_earlier_still_opens() -> None:
    raw = base64.urlsafe_b64decode(KNOWN_COOKIE + "=" * (-len(KNOWN_COOKIE) % 4))
    assert raw[0] == 1, "format version"
    assert raw[1:5].hex() == "feeb683e", "key id of the session key"
    assert CookieCodec([KNOWN_SECRET], "session").decode(KNOWN_COOKIE) == {"s": "sid", "t": "token"}
    assert CookieCodec([KNOWN_SECRET], "signin").decode(KNOWN_COOKIE) is None


# Two secrets whose session keys share a key id (found by a birthday search over 4-byte ids).
COLLIDING = ("collision-108264-xxxxxxxxxxxxxxxxxxxx", "collision-113310-xxxxxxxxxxxxxxxxxxxx")


def test_keys_sharing_a_key_id_are_both_tried() -> None:
    first, second = (crypto.derive_key(secret, "session") for secret in COLLIDING)
    assert first != second and crypto.key_id(first) == crypto.key_id(second)
    value = CookieCodec([COLLIDING[1]], "session").encode(PAYLOAD)
    assert CookieCodec(list(COLLIDING), "session").decode(value) == PAYLOAD


def test_a_value_ending_in_x_is_canonical() -> None:
    # "X" is a base64 digit: only "=" may be stripped from the end, never anything else. (The value has
    # 42 bytes, a multiple of 3, so that its last character can be any digit.)
    key = crypto.derive_key(KEY_A, "session")
    header = bytes([crypto.FORMAT_VERSION]) + crypto.key_id(key)
    for counter in range(1000):
        nonce = counter.to_bytes(crypto.NONCE_LENGTH, "big")
        sealed = AESGCM(key).encrypt(nonce, b'{"n":123}', b"tobira/session/v1\x00" + header + nonce)
        value = _b64(header + nonce + sealed)
        if value.endswith("X"):
            break
    assert value.endswith("X")
    assert CODEC.decode(value) == {"n": 123}


def test_the_longest_value_is_8192_characters() -> None:
    # 8192 base64 characters are 6144 bytes: 17 of header, 16 of tag, 6111 of JSON.
    longest = CODEC.encode({"b": "x" * 6103})
    assert len(longest) == crypto.MAX_TOKEN_LENGTH
    assert CODEC.decode(longest) == {"b": "x" * 6103}
    with pytest.raises(ValueError, match=r"^encoded payload is 8194 characters, over 8192$"):
        CODEC.encode({"b": "x" * 6104})

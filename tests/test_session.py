"""Session and sign-in cookies: sealing, expiry at the exact boundary, size, several tabs."""

from __future__ import annotations

import re
from dataclasses import asdict

import pytest

from app.crypto import CookieCodec
from app.hosts import Instance, parse_instance
from app.session import (
    MAX_COOKIE_BYTES,
    MAX_FIELD,
    MAX_PENDING,
    PENDING_TTL,
    USER_FIELDS,
    PendingSignIn,
    Session,
    SessionCookies,
    display_user,
)

KEYS = ["a" * 32]
MISSKEY = Instance(host="misskey.io", origin="https://misskey.io", dev=False)
DEV = Instance(host="127.0.0.1:3000", origin="http://127.0.0.1:3000", dev=True)
SERVER = {"name": "Stand-in", "software": "misskey"}
USER = {
    "id": "9x",
    "username": "alice",
    "host": None,
    "name": "Alice",
    "avatarUrl": "https://m/a.png",
    "email": "x",
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock, secure: bool = False, max_age: int = 3600) -> SessionCookies:
    return SessionCookies(KEYS, secure=secure, max_age=max_age, clock=clock)


def test_issue_and_read_round_trip_keeps_only_display_fields() -> None:
    clock = Clock()
    cookies = make(clock)
    session, value = cookies.issue(MISSKEY, token="T" * 32, user=USER, method="miauth")
    read = cookies.read(value)
    assert read == session
    assert read is not None and read.user == {
        k: USER[k] for k in ("id", "username", "host", "name", "avatarUrl")
    }
    assert "T" * 32 not in value
    assert read.public_json()["instance"] == "misskey.io"
    assert "token" not in str(read.public_json())


def test_every_field_survives_the_cookie_and_the_format_is_kept() -> None:
    clock = Clock()
    session, value = make(clock).issue(DEV, token="T" * 32, user=USER, method="legacy", server=SERVER)
    user = {key: USER[key] for key in USER_FIELDS}
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", session.sid), "128 random bits"
    assert session == Session(
        sid=session.sid,
        host="127.0.0.1:3000",
        origin="http://127.0.0.1:3000",
        dev=True,
        token="T" * 32,
        user=user,
        method="legacy",
        issued_at=clock.now,
        expires_at=clock.now + 3600,
        server=SERVER,
    )
    assert make(clock).read(value) == session, "opened by another process, with nothing cached"
    assert session.public_json() == {
        "instance": "127.0.0.1:3000",
        "user": user,
        "method": "legacy",
        "server": SERVER,
    }
    # Live cookies hold this: a change of purpose or of a key's name would sign everyone out.
    assert CookieCodec(KEYS, "session").decode(value) == {
        "s": session.sid,
        "h": "127.0.0.1:3000",
        "o": "http://127.0.0.1:3000",
        "d": True,
        "t": "T" * 32,
        "u": user,
        "m": "legacy",
        "i": clock.now,
        "e": clock.now + 3600,
        "v": SERVER,
    }


def test_a_sign_in_under_way_keeps_every_field() -> None:
    clock = Clock()
    cookies = make(clock)
    pending = cookies.new_pending(DEV, "s1", "/back", "oauth2")
    assert pending == PendingSignIn(
        session="s1",
        host="127.0.0.1:3000",
        origin="http://127.0.0.1:3000",
        dev=True,
        return_to="/back",
        method="oauth2",
        expires_at=clock.now + PENDING_TTL,
    )
    value = cookies.write_pending([pending])
    assert make(clock).read_pending(value) == [pending]
    assert CookieCodec(KEYS, "signin").decode(value) == {"p": [asdict(pending)]}
    # What discovery said about the server travels with it, for the session to show.
    with_server = cookies.new_pending(DEV, "s2", "/", "miauth", SERVER)
    assert with_server.server == SERVER
    assert make(clock).read_pending(cookies.write_pending([with_server])) == [with_server]
    # An OpenID sign-in also carries the request it comes back to and the app it signs in for.
    app = {"name": "Wiki", "icon": None, "permissions": ["write:notes"]}
    for_app = cookies.new_pending(DEV, "s3", "/", "miauth", SERVER, oidc="request-1", app=app)
    assert (for_app.oidc, for_app.app) == ("request-1", app)
    assert make(clock).read_pending(cookies.write_pending([for_app])) == [for_app]


def test_session_expires_exactly_at_max_age() -> None:
    clock = Clock()
    cookies = make(clock, max_age=100)
    _, value = cookies.issue(MISSKEY, token="t", user=USER, method="miauth")
    clock.now += 99.999
    assert cookies.read(value) is not None
    clock.now += 0.001
    assert cookies.read(value) is None


def test_cookie_names_follow_the_scheme() -> None:
    assert make(Clock(), secure=True).secure is True
    assert make(Clock(), secure=False).secure is False
    assert make(Clock(), secure=True).session_name == "__Host-tobira"
    assert make(Clock(), secure=False).session_name == "tobira"
    assert make(Clock(), secure=True).pending_name == "__Host-tobira-signin"
    assert make(Clock(), secure=False).pending_name == "tobira-signin"
    assert make(Clock(), secure=True).recent_name == "__Host-tobira-recent"
    assert make(Clock(), secure=False).recent_name == "tobira-recent"
    assert make(Clock()).path == "/"


@pytest.mark.parametrize(
    ("secure", "path", "domain", "names"),
    [
        (True, "/misskey", None, ("__Secure-tobira", "__Secure-tobira-signin", "__Secure-tobira-recent")),
        (False, "/misskey", None, ("tobira", "tobira-signin", "tobira-recent")),
        (True, "/", "example.com", ("__Secure-tobira", "__Host-tobira-signin", "__Host-tobira-recent")),
        (
            True,
            "/a/b",
            "example.com",
            ("__Secure-tobira", "__Secure-tobira-signin", "__Secure-tobira-recent"),
        ),
    ],
)
def test_cookie_names_under_a_path_prefix(
    secure: bool, path: str, domain: str | None, names: tuple[str, str, str]
) -> None:
    """`__Host-` requires `Path=/`: under a prefix, over https, the cookies are `__Secure-`."""
    cookies = SessionCookies(KEYS, secure=secure, max_age=60, path=path, domain=domain)
    assert (cookies.session_name, cookies.pending_name, cookies.recent_name) == names
    assert (cookies.path, cookies.domain) == (path, domain)


# A profile at the per-field cap: dropping either of its two display fields frees about 700 bytes.
LONG_PROFILE = {**USER, "name": "n" * MAX_FIELD, "avatarUrl": "https://m/" + "a" * (MAX_FIELD - 10)}


def _cookie_bytes(cookies: SessionCookies, token_length: int) -> tuple[Session, int]:
    """The session issued with a token of that length, and its whole Set-Cookie pair's length."""
    session, value = cookies.issue(MISSKEY, token="t" * token_length, user=LONG_PROFILE, method="miauth")
    return session, len(cookies.session_name) + 1 + len(value)


def _longest_token_with_every_field(cookies: SessionCookies) -> int:
    length = 0
    while _cookie_bytes(cookies, length + 1)[0].user["avatarUrl"] is not None:
        length += 1
    return length


def test_display_fields_are_dropped_avatar_first_only_when_over_4000_bytes() -> None:
    cookies = make(Clock(), secure=True)
    longest = _longest_token_with_every_field(cookies)

    kept, size = _cookie_bytes(cookies, longest)
    assert size == MAX_COOKIE_BYTES, "exactly at the cap, nothing is dropped"
    assert kept.user == {key: LONG_PROFILE[key] for key in USER_FIELDS}

    one_over, size = _cookie_bytes(cookies, longest + 1)
    assert size <= MAX_COOKIE_BYTES
    assert one_over.user["avatarUrl"] is None
    assert one_over.user["name"] == LONG_PROFILE["name"]

    # Dropping the avatar is not enough any more: the name goes too, and nothing else.
    both, size = _cookie_bytes(cookies, longest + 600)
    assert size <= MAX_COOKIE_BYTES
    assert both.user == {**{key: LONG_PROFILE[key] for key in USER_FIELDS}, "name": None, "avatarUrl": None}
    assert _cookie_bytes(cookies, longest + 500)[0].user["name"] == LONG_PROFILE["name"]


def test_what_is_dropped_is_dropped_from_the_cookie_too() -> None:
    clock = Clock()
    cookies = make(clock, secure=True)
    session, value = cookies.issue(
        MISSKEY,
        token="t" * (_longest_token_with_every_field(cookies) + 1),
        user=LONG_PROFILE,
        method="miauth",
    )
    assert make(clock, secure=True).read(value) == session


def test_each_display_field_is_a_string_of_at_most_max_field_characters() -> None:
    user = {
        "id": "i" * MAX_FIELD,
        "username": "u" * (MAX_FIELD + 1),
        "host": 7,
        "name": {"x": "y"},
        "extra": "e",
    }
    assert display_user(user) == {
        "id": "i" * MAX_FIELD,
        "username": None,
        "host": None,
        "name": None,
        "avatarUrl": None,
    }


def test_a_session_cookie_is_not_a_sign_in_cookie_and_back() -> None:
    clock = Clock()
    cookies = make(clock)
    _, session_value = cookies.issue(MISSKEY, token="t", user=USER, method="miauth")
    pending_value = cookies.write_pending([cookies.new_pending(MISSKEY, "s", "/", "miauth")])
    assert cookies.read_pending(session_value) == []
    assert cookies.read(pending_value) is None


def test_pending_sign_ins_expire_after_ten_minutes_and_keep_the_newest() -> None:
    clock = Clock()
    cookies = make(clock)
    value = None
    for number in range(MAX_PENDING + 2):
        value = cookies.start_pending(value, cookies.new_pending(MISSKEY, f"s{number}", "/", "miauth"))
    sessions = [item.session for item in cookies.read_pending(value)]
    assert sessions == [f"s{n}" for n in range(2, MAX_PENDING + 2)]
    clock.now += PENDING_TTL - 0.001
    assert len(cookies.read_pending(value)) == MAX_PENDING
    clock.now += 0.001
    assert cookies.read_pending(value) == []


def test_garbage_is_no_session() -> None:
    cookies = make(Clock())
    for value in ["", "x", "a" * 5000, "é", None]:
        assert cookies.read(value) is None
        assert cookies.read_pending(value) == []


def _pending(cookies: SessionCookies, n: int, return_to_length: int) -> PendingSignIn:
    return cookies.new_pending(MISSKEY, f"session-{n}", "/" + "r" * (return_to_length - 1), "miauth")


def _cookie_length(cookies: SessionCookies, items: list[PendingSignIn]) -> int:
    return len(cookies.pending_name) + 1 + len(cookies.write_pending(items))


def _newest_of_length(
    cookies: SessionCookies, older: list[PendingSignIn], total: int
) -> PendingSignIn | None:
    """A newest sign-in that makes the cookie of `older` and it exactly `total` bytes long, if one does."""
    for length in range(1, 3000):
        newest = _pending(cookies, len(older), length)
        if _cookie_length(cookies, [*older, newest]) == total:
            return newest
    return None


@pytest.mark.parametrize(("total", "kept"), [(MAX_COOKIE_BYTES, 2), (MAX_COOKIE_BYTES + 1, 1)])
def test_sign_ins_under_way_fit_in_4000_bytes_exactly(total: int, kept: int) -> None:
    """At 4000 bytes both stay; one byte more and the oldest gives way (the newest always stays)."""
    cookies = make(Clock(), secure=True)
    for older_length in range(1000, 1100):  # an older sign-in for which some newest one hits `total` exactly
        older = _pending(cookies, 0, older_length)
        newest = _newest_of_length(cookies, [older], total)
        if newest is not None:
            break
    assert newest is not None
    value = cookies.start_pending(cookies.write_pending([older]), newest)
    assert [item.session for item in cookies.read_pending(value)] == [older.session, newest.session][-kept:]


def test_as_few_give_way_as_needed() -> None:
    cookies = make(Clock(), secure=True)
    older = [_pending(cookies, n, 1200) for n in range(2)]
    newest = _pending(cookies, 2, 1200)
    assert (
        _cookie_length(cookies, [*older, newest])
        > MAX_COOKIE_BYTES
        >= _cookie_length(cookies, [older[1], newest])
    )
    value = cookies.start_pending(cookies.write_pending(older), newest)
    assert [item.session for item in cookies.read_pending(value)] == ["session-1", "session-2"]


def test_a_single_sign_in_stays_even_over_the_cap() -> None:
    """Without it the sign-in could not finish at all; a browser may still refuse a cookie that long."""
    cookies = make(Clock(), secure=True)
    newest = _pending(cookies, 0, 2900)
    value = cookies.start_pending(None, newest)
    assert _cookie_length(cookies, [newest]) > MAX_COOKIE_BYTES
    assert cookies.read_pending(value) == [newest]


def test_sign_ins_under_way_give_way_to_keep_the_cookie_under_the_cap() -> None:
    cookies = SessionCookies(["k" * 32], secure=True, max_age=3600)
    value = None
    long_return = "/" + "r" * 2000
    for n in range(MAX_PENDING):
        instance = parse_instance(f"{'s' * 60}{n}.example.social")
        pending = cookies.new_pending(instance, f"session-{n}", long_return, "miauth", {"name": "n" * 64})
        value = cookies.start_pending(value, pending)
        assert len(cookies.pending_name) + 1 + len(value) <= MAX_COOKIE_BYTES
    kept = cookies.read_pending(value)
    assert kept and kept[-1].session == f"session-{MAX_PENDING - 1}"  # the newest always stays
    assert len(kept) < MAX_PENDING

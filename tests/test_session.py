"""Session and sign-in cookies: sealing, expiry at the exact boundary, size, several tabs."""

from __future__ import annotations

from app.hosts import Instance, parse_instance
from app.session import MAX_COOKIE_BYTES, MAX_PENDING, PENDING_TTL, SessionCookies

KEYS = ["a" * 32]
MISSKEY = Instance(host="misskey.io", origin="https://misskey.io", dev=False)
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


def test_session_expires_exactly_at_max_age() -> None:
    clock = Clock()
    cookies = make(clock, max_age=100)
    _, value = cookies.issue(MISSKEY, token="t", user=USER, method="miauth")
    clock.now += 99.999
    assert cookies.read(value) is not None
    clock.now += 0.001
    assert cookies.read(value) is None


def test_cookie_names_follow_the_scheme() -> None:
    assert make(Clock(), secure=True).session_name == "__Host-tobira"
    assert make(Clock(), secure=False).session_name == "tobira"


def test_oversized_profile_fields_are_dropped_to_stay_under_4000_bytes() -> None:
    cookies = make(Clock())
    huge = {**USER, "name": "n" * 500, "avatarUrl": "https://m/" + "a" * 500, "username": "u" * 400}
    _, value = cookies.issue(MISSKEY, token="t" * 512, user=huge, method="miauth")
    assert len(value) + len("tobira=") < MAX_COOKIE_BYTES


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

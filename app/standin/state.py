"""Everything a running stand-in remembers, in memory, open to the tests that drive it.

MiAuth consent pages shown, access tokens (who, which permissions, which session, fetched, revoked), notes,
drive files, how often each MiAuth session was checked, a rate-limit window per user, a record of every
API call received, and the faults switched on (`app.standin.faults`) with their counters. The server runs
in its own thread; tests read these structures while it runs, and every change is a single append or
assignment, which the interpreter makes atomic.
"""

from __future__ import annotations

import secrets
import string
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from app.standin.config import StandinConfig, StandinUser

if TYPE_CHECKING:
    from app.standin.faults import Fault
    from app.standin.legacy import LegacyApp, LegacySession
    from app.standin.oauth2 import AuthorizationRequest, Grant

TOKEN_ALPHABET = string.ascii_letters + string.digits
_AID_EPOCH_MS = 946_684_800_000  # 2000-01-01T00:00:00Z, the epoch of Misskey's "aid" ids
_BASE36 = string.digits + string.ascii_lowercase


@dataclass
class AccessToken:
    """An app token as Misskey stores it; `session` is set for MiAuth tokens."""

    token: str
    id: str
    user: StandinUser
    permissions: tuple[str, ...]
    session: str | None = None
    name: str | None = None
    icon_url: str | None = None
    fetched: bool = False
    revoked: bool = False


@dataclass(frozen=True)
class ConsentView:
    """The four query parameters a MiAuth consent page was last opened with (None when absent)."""

    session: str
    name: str | None
    icon: str | None
    callback: str | None
    permission: str | None


@dataclass(frozen=True)
class RecordedCall:
    """One request to `/api/…`, as received: what tests assert tobira sent upstream."""

    method: str
    endpoint: str  # the path after /api/
    token: object  # the credential used: the Bearer token, else the body's "i" (any JSON value), else None
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body_keys: tuple[str, ...]


@dataclass
class NoteRecord:
    id: str
    created_at: datetime
    user: StandinUser
    text: str | None
    cw: str | None
    visibility: str
    local_only: bool
    file_ids: tuple[str, ...] = ()
    reply_id: str | None = None
    renote_id: str | None = None


@dataclass
class DriveFileRecord:
    id: str
    created_at: datetime
    user: StandinUser
    name: str
    type: str
    md5: str
    content: bytes
    comment: str | None
    is_sensitive: bool
    properties: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RateLimitInfo:
    """What Misskey's limiter reports when a call is refused (`reset` in seconds, `resetMs` in ms)."""

    total: int
    remaining: int
    reset: int
    reset_ms: int


class StandinState:
    """The stand-in's whole memory; exposed as `app.state.standin`."""

    def __init__(self, config: StandinConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.users = {user.id: user for user in config.users}
        self.tokens: dict[str, AccessToken] = {}
        self.consent_views: dict[str, ConsentView] = {}
        self.check_counts: Counter[str] = Counter()
        self.notes: list[NoteRecord] = []
        self.files: dict[str, DriveFileRecord] = {}
        self.calls: list[RecordedCall] = []
        self.legacy_apps: dict[str, LegacyApp] = {}  # by secret
        self.legacy_sessions: dict[str, LegacySession] = {}  # by session token
        self.oauth2_requests: dict[str, AuthorizationRequest] = {}  # consent pages shown, by transaction id
        self.oauth2_grants: dict[str, Grant] = {}  # by authorization code
        self.oauth2_token_requests: list[dict[str, str]] = []  # the form of every `POST /oauth/token`
        self.userkey_calls: list[str] = []  # the session token of every `auth/session/userkey`
        self.faults: dict[str, Fault] = {}  # route → fault; tests set and clear it while the server runs
        self.route_hits: Counter[str] = (
            Counter()
        )  # every request by route, faulted or not (`faults.route_of`)
        self.faults_in_progress = 0  # faults below HTTP still writing to (or holding) a connection
        self.stopping = False  # set by the runner: requests left hanging may end
        self._windows: dict[tuple[str, str], tuple[float, int]] = {}
        self._serial = 0
        # `/streaming` connections waiting for new notes (`app.standin.streaming`), on the server's loop
        self.note_listeners: set[Callable[[NoteRecord], None]] = set()

    def add_note(self, record: NoteRecord) -> None:
        """Store a new note and tell the open streams."""
        self.notes.append(record)
        for listener in list(self.note_listeners):
            listener(record)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def new_id(self) -> str:
        """A fresh Misskey-style id: 8 base-36 digits of time, 2 of a counter, so ids sort by creation."""
        self._serial = (self._serial + 1) % 36**2
        return _base36(int(self.clock() * 1000) - _AID_EPOCH_MS, 8) + _base36(self._serial, 2)

    def user_named(self, username: str) -> StandinUser | None:
        return next((user for user in self.users.values() if user.username == username), None)

    def issue_token(
        self,
        username: str,
        permissions: list[str] | tuple[str, ...],
        *,
        session: str | None = None,
        name: str | None = None,
        icon_url: str | None = None,
    ) -> AccessToken:
        """Store a new 32-character app token for `username`; raises KeyError for an unknown user."""
        user = self.user_named(username)
        if user is None:
            raise KeyError(username)
        token = AccessToken(
            token="".join(secrets.choice(TOKEN_ALPHABET) for _ in range(32)),
            id=self.new_id(),
            user=user,
            permissions=tuple(permissions),
            session=session,
            name=name,
            icon_url=icon_url,
        )
        self.tokens[token.token] = token
        return token

    def authenticate(self, token: str) -> AccessToken | None:
        """The live token behind a credential, or None for an unknown or revoked one."""
        found = self.tokens.get(token)
        return None if found is None or found.revoked else found

    def revoke(self, token: str) -> None:
        """What the person does in Settings > Apps (and what `i/revoke-token` does when allowed)."""
        if token in self.tokens:
            self.tokens[token].revoked = True

    def fetch_session_token(self, session: str) -> AccessToken | None:
        """`miauth/{session}/check`: the approved token the first time, None ever after (counted)."""
        self.check_counts[session] += 1
        found = next((t for t in self.tokens.values() if t.session == session), None)
        if found is None or found.fetched:
            return None
        found.fetched = True
        return found

    def count_call(self, key: str, actor: str, limit: int, window_seconds: float) -> RateLimitInfo | None:
        """Count one call of `actor` against `limit` per window; the limiter's info once it is exceeded."""
        now = self.clock()
        started, used = self._windows.get((key, actor), (now, 0))
        if now >= started + window_seconds:
            started, used = now, 0
        reset_ms = int((started + window_seconds) * 1000)
        if used >= limit:
            return RateLimitInfo(total=limit, remaining=0, reset=reset_ms // 1000, reset_ms=reset_ms)
        self._windows[(key, actor)] = (started, used + 1)
        return None

    def calls_to(self, endpoint: str) -> list[RecordedCall]:
        return [call for call in self.calls if call.endpoint == endpoint]

    def check_count(self, session: str) -> int:
        """How many times `miauth/{session}/check` was called (with a body the server could parse)."""
        return self.check_counts[session]

    def token_of(self, username: str) -> str | None:
        """The newest token issued to an account, revoked or not."""
        issued = [t.token for t in self.tokens.values() if t.user.username == username]
        return issued[-1] if issued else None

    def is_revoked(self, token: str) -> bool:
        """True once a known token has been revoked; unknown tokens are not."""
        found = self.tokens.get(token)
        return found is not None and found.revoked

    def notes_count(self, user: StandinUser) -> int:
        return sum(1 for note in self.notes if note.user.id == user.id)


def _base36(number: int, width: int) -> str:
    digits = ""
    while number:
        number, digit = divmod(number, 36)
        digits = _BASE36[digit] + digits
    return digits.rjust(width, "0")[-width:]

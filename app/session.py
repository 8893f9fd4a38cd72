"""Sessions and sign-ins under way, both kept in the browser as encrypted cookies.

A session cookie holds only what tobira needs: a random session id (for revocation), the instance, the
token, a few display fields of the user and an absolute expiry. A sign-in under way is bound to the browser
by a second, short-lived cookie listing the MiAuth session ids this browser started (several tabs at once).
Both are sealed by `CookieCodec` under different purposes, so neither can stand in for the other.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from app.crypto import CookieCodec
from app.hosts import Instance

MAX_COOKIE_BYTES = 4000
PENDING_TTL = 600
MAX_PENDING = 5
USER_FIELDS = ("id", "username", "host", "name", "avatarUrl")
MAX_FIELD = 512
OPENED_CACHE_ENTRIES = 4096


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    host: str
    origin: str
    dev: bool
    token: str
    user: dict[str, Any]
    method: str
    issued_at: float
    expires_at: float
    server: dict[str, Any] = field(default_factory=dict)

    @property
    def instance(self) -> Instance:
        return Instance(host=self.host, origin=self.origin, dev=self.dev)

    def public_json(self) -> dict[str, Any]:
        """What `GET /session` shows: never the token or the session id."""
        return {"instance": self.host, "user": dict(self.user), "method": self.method, "server": self.server}


@dataclass(frozen=True, slots=True)
class PendingSignIn:
    session: str
    host: str
    origin: str
    dev: bool
    return_to: str
    method: str
    expires_at: float
    server: dict[str, Any] = field(default_factory=dict)  # what discovery said, for the session to show
    oidc: str = ""  # the OpenID authorization request this sign-in answers (its id), if any
    app: dict[str, Any] = field(
        default_factory=dict
    )  # the app named on the server's consent page, if not tobira

    @property
    def instance(self) -> Instance:
        return Instance(host=self.host, origin=self.origin, dev=self.dev)


def display_user(user: dict[str, Any]) -> dict[str, Any]:
    """The few profile fields a session keeps, each a short string or null."""
    kept: dict[str, Any] = {}
    for name in USER_FIELDS:
        value = user.get(name)
        kept[name] = value if isinstance(value, str) and len(value) <= MAX_FIELD else None
    return kept


class SessionCookies:
    """Seals and opens the session and sign-in cookies; names follow SPEC.md (`__Host-` over https).

    Under a path prefix (`path`, TOBIRA_PUBLIC_URL's) the cookies are for that path only, hence `__Secure-`
    over https (`__Host-` requires `Path=/`). With a `domain` (TOBIRA_COOKIE_DOMAIN) the session cookie is
    set for that domain, so that forward authentication on its subdomains sees it: then it is
    `__Secure-tobira` (`__Host-` forbids a Domain). The other cookies stay on tobira's own host."""

    def __init__(
        self,
        secret_keys: Sequence[str],
        *,
        secure: bool,
        max_age: int,
        clock: Callable[[], float] = time.time,
        domain: str | None = None,
        path: str = "/",
    ) -> None:
        self.secure = secure
        self.path = path
        self.max_age = max_age
        self.clock = clock
        self.domain = domain
        prefix = ("__Host-" if path == "/" else "__Secure-") if secure else ""
        self.session_name = "__Secure-tobira" if domain is not None else prefix + "tobira"
        self.pending_name = prefix + "tobira-signin"
        self.recent_name = prefix + "tobira-recent"  # see app.recent
        self._sessions = CookieCodec(secret_keys, "session")
        # Opening a cookie is the proxy's costliest step of its own; the same value always opens the same.
        self._opened: dict[str, Session] = {}
        self._pending = CookieCodec(secret_keys, "signin")

    def issue(
        self,
        instance: Instance,
        *,
        token: str,
        user: dict[str, Any],
        method: str,
        server: dict[str, Any] | None = None,
    ) -> tuple[Session, str]:
        """A new session and its cookie value (kept under MAX_COOKIE_BYTES by dropping display fields)."""
        now = self.clock()
        session = Session(
            sid=secrets.token_urlsafe(16),
            host=instance.host,
            origin=instance.origin,
            dev=instance.dev,
            token=token,
            user=display_user(user),
            method=method,
            issued_at=now,
            expires_at=now + self.max_age,
            server=server or {},
        )
        value = self._seal(session)
        for dropped in ("avatarUrl", "name"):
            if len(value) + len(self.session_name) + 1 <= MAX_COOKIE_BYTES:
                break
            session.user[dropped] = None
            value = self._seal(session)
        return session, value

    def _seal(self, session: Session) -> str:
        return self._sessions.encode(
            {
                "s": session.sid,
                "h": session.host,
                "o": session.origin,
                "d": session.dev,
                "t": session.token,
                "u": session.user,
                "m": session.method,
                "i": session.issued_at,
                "e": session.expires_at,
                "v": session.server,
            }
        )

    def read(self, value: str | None) -> Session | None:
        """The session in a cookie value, or None when absent, forged, malformed or expired."""
        if not value:
            return None
        session = self._opened.get(value)
        if session is None:
            session = self._open(value)
            if session is None:
                return None
            if len(self._opened) >= OPENED_CACHE_ENTRIES:
                self._opened.clear()
            self._opened[value] = session
        return session if self.clock() < session.expires_at else None

    def _open(self, value: str) -> Session | None:
        data = self._sessions.decode(value)
        if data is None:
            return None
        try:
            session = Session(
                sid=data["s"],
                host=data["h"],
                origin=data["o"],
                dev=bool(data["d"]),
                token=data["t"],
                user=data["u"],
                method=data["m"],
                issued_at=float(data["i"]),
                expires_at=float(data["e"]),
                server=data.get("v") or {},
            )
        except (KeyError, TypeError, ValueError):
            return None
        return session

    def start_pending(self, value: str | None, sign_in: PendingSignIn) -> str:
        """Add a sign-in to this browser's list and return the new cookie value: the newest few, as many as
        fit in one cookie under MAX_COOKIE_BYTES (the oldest give way)."""
        items = [*self.read_pending(value), sign_in][-MAX_PENDING:]
        encoded = self.write_pending(items)
        while len(items) > 1 and len(self.pending_name) + 1 + len(encoded) > MAX_COOKIE_BYTES:
            items = items[1:]
            encoded = self.write_pending(items)
        return encoded

    def new_pending(
        self,
        instance: Instance,
        session: str,
        return_to: str,
        method: str,
        server: dict[str, Any] | None = None,
        *,
        oidc: str = "",
        app: dict[str, Any] | None = None,
    ) -> PendingSignIn:
        return PendingSignIn(
            session=session,
            host=instance.host,
            origin=instance.origin,
            dev=instance.dev,
            return_to=return_to,
            method=method,
            expires_at=self.clock() + PENDING_TTL,
            server=server or {},
            oidc=oidc,
            app=app or {},
        )

    def read_pending(self, value: str | None) -> list[PendingSignIn]:
        """The unexpired sign-ins this browser started; [] for no, forged or malformed cookies."""
        data = self._pending.decode(value) if value else None
        items = data.get("p") if data else None
        if not isinstance(items, list):
            return []
        now = self.clock()
        pending = []
        for item in items:
            try:
                sign_in = PendingSignIn(**item)
            except TypeError:
                return []
            if now < sign_in.expires_at:
                pending.append(sign_in)
        return pending

    def write_pending(self, items: Sequence[PendingSignIn]) -> str:
        return self._pending.encode({"p": [asdict(item) for item in items]})

"""The sign-out notice: what tobira itself recorded about this browser's sign-out, for the page after it.

`POST /logout` ends the session, then redirects to `/signed-out`, which tells the person whether their
server withdrew tobira's access or whether they must revoke it themselves in Settings › Apps (with a link to
their server). That page must show only what tobira recorded, never what a link says: a crafted
`/signed-out?host=look-alike.example` would otherwise have tobira's own page send people to a look-alike
server. So the facts travel in a short-lived cookie of this browser, signed (they are no secret, only
tobira's word) with itsdangerous under keys derived from `TOBIRA_SECRET_KEYS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from itsdangerous import BadData, URLSafeTimedSerializer

MAX_AGE = 300  # long enough to reload the page or switch its language; short enough to mean "just now"
SALT = "tobira sign-out notice"
MAX_HOST = 300


@dataclass(frozen=True, slots=True)
class SignOut:
    host: str  # the canonical host of the server signed out of
    revoked: bool  # whether that server withdrew the token


class SignOutNotices:
    """Signs and reads the sign-out notice cookie (`__Host-` over https, like tobira's other cookies)."""

    def __init__(self, secret_keys: Sequence[str], *, secure: bool, path: str = "/") -> None:
        """`path`: tobira's path prefix, "/" at the root (then `__Host-`, else `__Secure-`, over https)."""
        prefix = ("__Host-" if path == "/" else "__Secure-") if secure else ""
        self.name = prefix + "tobira-signed-out"
        self.max_age = MAX_AGE
        # itsdangerous signs with the last key and verifies with all; tobira lists its keys newest first.
        self._serializer = URLSafeTimedSerializer(list(reversed(secret_keys)), salt=SALT)

    def issue(self, notice: SignOut) -> str:
        """The cookie value recording one sign-out."""
        return self._serializer.dumps([notice.host, notice.revoked])

    def read(self, value: str | None) -> SignOut | None:
        """The sign-out a cookie value records; None when absent, forged, malformed or past MAX_AGE."""
        if not value:
            return None
        try:
            host, revoked = self._serializer.loads(value, max_age=self.max_age)
        except (BadData, ValueError, TypeError):
            return None
        if not isinstance(host, str) or len(host) > MAX_HOST or not isinstance(revoked, bool):
            return None
        return SignOut(host, revoked)

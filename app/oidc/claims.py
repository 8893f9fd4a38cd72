"""What tobira says about a Misskey account to the apps: the OpenID Connect claims.

`sub` is a hash of the account's server and user id: stable for one account, the same for every app, never
derived from a token. It is deliberately not keyed with `TOBIRA_SECRET_KEYS`: rotating those must not change
every account's `sub` in every app, and `sub` is no secret (every app sees the same one, and the server and
user id are public anyway).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from app.session import Session

PROFILE_CLAIMS = ("preferred_username", "name", "picture", "profile", "misskey_host", "misskey_user_id")


def subject(host: str, user_id: str) -> str:
    digest = hashlib.sha256(f"tobira sub v1\x00{host}\x00{user_id}".encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def account_claims(host: str, origin: str, user: dict[str, Any]) -> dict[str, Any]:
    """Every claim about the account `user` (a Misskey user object, or tobira's session's few fields) on
    `host` (canonical, `host:port` for a dev origin) reached at `origin`."""
    user_id, username = str(user["id"]), str(user["username"])
    claims: dict[str, Any] = {
        "sub": subject(host, user_id),
        "preferred_username": f"{username}@{host}",
        "name": user.get("name") if isinstance(user.get("name"), str) and user.get("name") else username,
        "profile": f"{origin}/@{username}",
        "misskey_host": host,
        "misskey_user_id": user_id,
    }
    avatar = user.get("avatarUrl")
    if isinstance(avatar, str) and avatar.startswith(("https://", "http://")):
        claims["picture"] = avatar
    return claims


def for_scope(claims: dict[str, Any], scope: str) -> dict[str, Any]:
    """The claims a token with `scope` may see: `sub` always, the account's profile with `profile`."""
    shown = {"sub": claims["sub"]}
    if "profile" in scope.split():
        shown.update({name: claims[name] for name in PROFILE_CLAIMS if name in claims})
    return shown


def session_account_claims(session: Session) -> dict[str, Any]:
    """The claims about the account a tobira session is signed in with."""
    return account_claims(session.host, session.origin, session.user)

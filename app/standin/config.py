"""What a stand-in Misskey server is: its name, version, switches and accounts.

One frozen dataclass per test or demo; the server never changes it. Defaults describe a fresh Misskey
2026.5.4 with federation off and two local accounts, `alice` and `bob`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class StandinUser:
    """A local account on the stand-in (`host` is always null in what the server sends)."""

    id: str
    username: str
    name: str | None = None
    avatar_url: str | None = None  # None: the stand-in's own `/avatar/{id}` picture
    is_bot: bool = False
    is_cat: bool = False
    is_moderator: bool = False  # may call `admin/*` endpoints (roles are otherwise not modelled)


def default_users() -> list[StandinUser]:
    """Two ordinary accounts with Misskey-style (aid) ids."""
    return [
        StandinUser(id="9x1alice00", username="alice", name="Alice"),
        StandinUser(id="9x1bob0000", username="bob", name="Bob 🐈", is_cat=True),
    ]


@dataclass(frozen=True)
class StandinConfig:
    """How the stand-in presents itself and which real-server behaviours it switches on.

    `base_url` is the origin used in every absolute URL the server emits (nodeinfo links, avatar and file
    URLs, `uri` in `api/meta`); an empty string lets `run_standin_in_thread` fill in the address it binds.
    """

    base_url: str
    name: str = "Stand-in Misskey"
    version: str = "2026.5.4"
    software: str = "misskey"  # nodeinfo software.name; forks say "sharkey", "cherrypick", …
    miauth: bool = True  # False: no features.miauth in api/meta (as before 12.28) and no MiAuth routes
    oauth2: bool = False  # True: OAuth 2.0 as Misskey 2023.9+ (`app.standin.oauth2`), beside MiAuth
    federation: bool = False  # False: /.well-known/nodeinfo is an empty 403, like a fresh Misskey
    revoke_token_self: bool = False  # True: `i/revoke-token` accepts an app token revoking itself (204)
    # None: every misskey-js permission. A list: the only names this server knows (an older server or a
    # fork): consent drops the others silently and OAuth 2.0 metadata's `scopes_supported` lists just these.
    known_permissions: list[str] | None = None
    rate_limit_notes_create: int | None = None  # calls per hour per user; None: no limit
    users: list[StandinUser] = field(default_factory=default_users)

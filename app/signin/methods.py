"""What every sign-in method is: the one small protocol MiAuth, the legacy flow and OAuth 2.0 implement.

A method starts at a server (a session id that binds the sign-in to the browser, and where to send the
person) and finishes from the callback (the approval, with the API key to keep, or None when the server
says it was not approved). Protocol code: no web framework.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.discovery import ServerInfo
from app.hosts import Instance


class Method(enum.StrEnum):
    """The sign-in methods, by the names `TOBIRA_AUTH_METHODS` uses."""

    MIAUTH = "miauth"
    LEGACY = "legacy"
    OAUTH2 = "oauth2"


@dataclass(frozen=True, slots=True)
class AppIdentity:
    """How tobira presents itself on a server's consent page, and what it asks for."""

    name: str
    icon: str | None
    permissions: tuple[str, ...]
    description: str = "Sign in with your Misskey account."


@dataclass(frozen=True, slots=True)
class Approval:
    """What a server's answer to a finished sign-in gives: the token and the public profile of the user."""

    token: str
    user: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Start:
    session: str  # binds the sign-in to the browser: a MiAuth session, a legacy token, an OAuth 2.0 state
    location: str  # the server's consent page


@dataclass(frozen=True, slots=True)
class Identity:
    """A finished sign-in, handed to whoever asked for it (today: tobira's own session)."""

    instance: Instance
    user: dict[str, Any]
    token: str  # the API key tobira calls the instance with (`i`)
    method: Method
    permissions: tuple[str, ...]
    server: dict[str, Any] = field(default_factory=dict)  # software, version, name: for display


class SignInMethod(Protocol):
    """One way to sign in at a Misskey server."""

    name: Method
    callback_path: str  # where the server sends the browser back, under tobira's origin

    def session_in(self, params: Mapping[str, str]) -> str | None:
        """The session a callback's query names, or None when it names none or a malformed one."""
        ...

    async def start(self, instance: Instance, info: ServerInfo) -> Start:
        """Ask the server for what the sign-in needs; raises the InstanceError subclasses."""
        ...

    async def finish(self, instance: Instance, session: str, params: Mapping[str, str]) -> Approval | None:
        """Ask the server once whether `session` was approved: the approval (its token the API key to keep)
        or None. Raises the InstanceError subclasses, and NoSignInPending or SignInMismatch where the method
        keeps state of its own."""
        ...

"""The person signed in to tobira: their session, from the cookie, begun from an identity, ended, revoked.

A session is live while its encrypted cookie opens, has not expired and has not been ended by a sign-out
(the ledger remembers ended sessions on every replica). Protocol code: no web framework; callers hand in the
request's cookies.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from app.errors import InstanceError
from app.session import Session
from app.signin.methods import Identity

if TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger("tobira")


async def current_session(services: Services, cookies: Mapping[str, str]) -> Session | None:
    """The browser's session, unless it is absent, forged, expired or ended by a sign-out."""
    session = services.cookies.read(cookies.get(services.cookies.session_name))
    if session is None or await services.ledger.session_ended(session.sid):
        return None
    return session


async def begin_session(services: Services, identity: Identity, previous: Session | None) -> str:
    """A new session for `identity` (ending `previous`, the browser's session before it): its cookie value.

    Identity-only sign-ins (no permissions) have the token revoked at once: it can call nothing anyway."""
    if previous is not None:
        await end_session(services, previous)
    session, value = services.cookies.issue(
        identity.instance,
        token=identity.token,
        user=identity.user,
        method=identity.method,
        server=identity.server,
    )
    if not identity.permissions:
        log.info("identity-only sign-in: token revoked: %s", await revoke(services, session))
    return value


async def end_session(services: Services, session: Session) -> None:
    """Remember the session as ended until it would have expired, on every replica; close its streams."""
    services.streams.close(session.sid)  # the instance keeps a revoked token's streams open
    await services.ledger.end_session(session.sid, session.expires_at - services.clock())


async def revoke(services: Services, session: Session) -> bool:
    """Ask the instance to revoke the token; False when it refuses or fails (it often does)."""
    try:
        answer = await services.client.post(
            session.instance.url("/api/i/revoke-token"), json={"i": session.token, "token": session.token}
        )
    except InstanceError:
        return False
    return answer.status_code in (200, 204)

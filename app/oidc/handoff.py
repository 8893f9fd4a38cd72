"""Where a person's sign-in meets an app's authorization request: the tobira session or a finished sign-in
becomes the account an app is told about, and the code that goes back to the app.

An app without `permissions` gets identity only: the sign-in becomes tobira's own session as any sign-in
does (so the next app, or the next visit, can "continue as"), and the code carries claims only. An app with
`permissions` gets the Misskey token of a sign-in that named the app on the person's server; that token goes
into the code (sealed) and to the app from the token endpoint, and never into tobira's session.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.account import begin_session
from app.errors import NoSignInPending, NotFound
from app.oidc.claims import account_claims, session_account_claims
from app.oidc.clients import Client
from app.oidc.provider import Account, AuthorizationRequest, Provider
from app.session import PendingSignIn, Session
from app.signin.methods import AppIdentity, Identity

if TYPE_CHECKING:
    from app.services import Services


def provider_of(services: Services) -> Provider:
    """The OpenID provider; NotFound when tobira is none (no `TOBIRA_OIDC_CLIENTS`)."""
    if services.oidc is None:
        raise NotFound()
    return services.oidc


async def waiting_request(services: Services, request_id: str) -> AuthorizationRequest:
    """The authorization request a page or a sign-in names; NoSignInPending once expired or answered."""
    found = await provider_of(services).request(request_id)
    if found is None:
        raise NoSignInPending()
    return found


def session_account(session: Session | None) -> Account | None:
    return None if session is None else Account(session_account_claims(session), session.issued_at)


def app_identity(provider: Provider, request: AuthorizationRequest) -> AppIdentity | None:
    """How the sign-in presents itself on the person's server: as the app when it asks for permissions."""
    client = provider.client(request)
    if not client.permissions:
        return None
    return AppIdentity(client.client_name, client.logo_uri, client.permissions)


async def start_sign_in(
    services: Services, request: AuthorizationRequest, text: str
) -> tuple[PendingSignIn, str]:
    """A sign-in at the server `text` names that answers `request`. Raises what SignInFlow.start raises."""
    provider = provider_of(services)
    client = provider.client(request)
    return await services.signin.start(
        text,
        services.settings.base_path + "/",
        app=app_identity(provider, request),
        oidc=request.id,
        instances=client.instances,
    )


async def answer_sign_in(
    services: Services, pending: PendingSignIn, identity: Identity, previous: Session | None
) -> tuple[str, str | None]:
    """A finished sign-in that answers an app: (the redirect to the app with its code, the new tobira
    session's cookie value, or None when the sign-in was the app's own). Raises NoSignInPending."""
    provider = provider_of(services)
    request = await waiting_request(services, pending.oidc)
    instance = identity.instance
    claims = account_claims(instance.host, instance.origin, identity.user)
    if provider.client(request).permissions:
        account = Account(claims, services.clock(), identity.token)
        return await provider.issue_code(request, account), None
    value = await begin_session(services, identity, previous)
    return await provider.issue_code(request, Account(claims, services.clock())), value


async def consented_apps(services: Services, session: Session | None) -> list[Client]:
    """The apps the signed-in account agreed to sign in to (for tobira's page, to withdraw)."""
    if services.oidc is None or session is None:
        return []
    account = session_account(session)
    assert account is not None
    provider = services.oidc
    return [provider.clients[client_id] for client_id in await provider.consents(account.claims["sub"])]

"""The sign-in flow, whatever the method: from what a person typed to a pending sign-in, and from the
callback to an identity.

    start:  typed text → host parser → allow/deny lists → discovery → method → pending sign-in + consent URL
    finish: callback → the pending sign-in this browser started → claim (once, on every replica) → the
            method asks the server once → identity

The caller keeps the pending sign-ins (tobira's encrypted cookie) and decides what an identity becomes (today
tobira's own session). Protocol code: no web framework.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import httpx

from app.config import Settings
from app.discovery import Discovery, ServerInfo
from app.errors import (
    InstanceNotAllowed,
    InvalidCallback,
    MiAuthUnsupported,
    NoSignInPending,
    SignInFinished,
    SignInMismatch,
    SignInNotApproved,
)
from app.hosts import Instance, host_matches, parse_instance
from app.ledger import Ledger
from app.session import PendingSignIn, SessionCookies
from app.signin.legacy import Legacy
from app.signin.methods import AppIdentity, Identity, Method, SignInMethod
from app.signin.miauth import MiAuth
from app.signin.oauth2 import OAuth2
from app.software import speaks_misskey_oauth2

CLIENT_PATH = "/client"  # tobira's OAuth 2.0 client_id is this URL
MAX_SHOWN = 64  # what a sign-in keeps of each text the server says about itself (it travels in cookies)

log = logging.getLogger("tobira")


def allowed_instance(settings: Settings, text: str) -> Instance:
    """Parse what the person typed and apply the operator's allow and deny lists.

    Raises InvalidInstance (with the reason) and InstanceNotAllowed."""
    instance = parse_instance(text, settings.dev_origins)
    if instance.dev:
        return instance
    if host_matches(instance.host, settings.instances_deny) or (
        settings.instances_allow and not host_matches(instance.host, settings.instances_allow)
    ):
        raise InstanceNotAllowed()
    return instance


def choose_method(
    allowed: Sequence[str],
    *,
    miauth_supported: bool,
    oauth2_supported: bool = False,
    software: str | None = None,
) -> Method:
    """The first allowed method the server supports: OAuth 2.0 where it offers Misskey's flow, MiAuth where
    it has it, the legacy flow where not. Raises MiAuthUnsupported when nothing fits."""
    for name in allowed:
        method = Method(name)
        if method is Method.OAUTH2 and oauth2_supported and speaks_misskey_oauth2(software):
            return method
        if method is Method.MIAUTH and miauth_supported:
            return method
        if method is Method.LEGACY and not miauth_supported:
            return method
    raise MiAuthUnsupported()


class SignInFlow:
    """Starts and finishes sign-ins with the methods the operator allows."""

    def __init__(
        self,
        settings: Settings,
        *,
        client: httpx.AsyncClient,
        ledger: Ledger,
        discovery: Discovery,
        cookies: SessionCookies,
    ) -> None:
        self._settings = settings
        self._ledger = ledger
        self._discovery = discovery
        self._cookies = cookies
        self._client = client
        base = settings.public_base
        app = AppIdentity(settings.app_name, settings.app_icon, tuple(settings.permissions))
        self.oauth2 = OAuth2(client, ledger, app, base + CLIENT_PATH, base + OAuth2.callback_path)
        methods: list[SignInMethod] = [*self._named(app), self.oauth2]
        self._methods = {method.name: method for method in methods}

    def _named(self, app: AppIdentity) -> list[SignInMethod]:
        """The methods that show `app`'s own name on the server's consent page (OAuth 2.0 cannot: the server
        reads the name from tobira's client document)."""
        base = self._settings.public_base
        return [
            MiAuth(self._client, app, base + MiAuth.callback_path),
            Legacy(self._client, self._ledger, app, base + Legacy.callback_path),
        ]

    def _methods_for(self, app: AppIdentity | None) -> dict[Method, SignInMethod]:
        return self._methods if app is None else {method.name: method for method in self._named(app)}

    async def start(
        self,
        text: str,
        return_to: str,
        *,
        app: AppIdentity | None = None,
        oidc: str = "",
        instances: Sequence[str] = (),
    ) -> tuple[PendingSignIn, str]:
        """The sign-in that `text` names: (the pending sign-in to bind to the browser, the consent URL).

        `app` signs in as another app than tobira (its name on the consent page, its permissions), `oidc` is
        the OpenID authorization request the sign-in answers, `instances` further limits the servers.
        Raises InvalidInstance, InstanceNotAllowed, MiAuthUnsupported and the InstanceError subclasses."""
        instance = allowed_instance(self._settings, text)
        if instances and not host_matches(instance.host, instances):
            raise InstanceNotAllowed()
        info = await self._discovery.lookup(instance)
        method = self._methods_for(app)[self.choose(info, named=app is not None)]
        start = await method.start(instance, info)
        shown = {
            "software": info.software,
            "version": info.software_version or info.version,
            "name": info.name,
        }
        server = {key: value[:MAX_SHOWN] if value else value for key, value in shown.items()}
        named = (
            {} if app is None else {"name": app.name, "icon": app.icon, "permissions": list(app.permissions)}
        )
        pending = self._cookies.new_pending(
            instance, start.session, return_to, method.name, server, oidc=oidc, app=named
        )
        log.info("sign-in started with %s (%s)", instance.host, method.name)
        return pending, start.location

    def choose(self, info: ServerInfo, *, named: bool = False) -> Method:
        allowed = [name for name in self._settings.auth_methods if not (named and name == Method.OAUTH2)]
        return choose_method(
            allowed,
            miauth_supported=info.miauth,
            oauth2_supported=info.oauth2 is not None,
            software=info.software,
        )

    def match(
        self, method: Method, params: Mapping[str, str], pending: Sequence[PendingSignIn]
    ) -> PendingSignIn:
        """The sign-in under way in this browser that a callback of `method` names.

        Raises InvalidCallback (malformed), NoSignInPending (nothing under way) and SignInMismatch: a
        sign-in this browser did not start (login CSRF: its server is never asked)."""
        session = self._methods[method].session_in(params)
        if session is None:
            raise InvalidCallback()
        if not pending:
            raise NoSignInPending()
        match = next((item for item in pending if item.session == session and item.method == method), None)
        if match is None:
            log.warning("callback for a sign-in this browser did not start")
            raise SignInMismatch()
        return match

    async def finish(self, pending: PendingSignIn, params: Mapping[str, str]) -> Identity:
        """Ask the server once whether `pending` was approved; the identity when it was.

        Raises SignInFinished (already finished, on any replica), SignInNotApproved, the method's own errors
        and the InstanceError subclasses."""
        instance = pending.instance
        if not await self._ledger.claim_check(instance.origin, pending.session):
            raise SignInFinished()
        method = Method(pending.method)
        app = None
        if pending.app:
            shown = pending.app
            app = AppIdentity(shown["name"], shown.get("icon"), tuple(shown.get("permissions", ())))
        approval = await self._methods_for(app)[method].finish(instance, pending.session, params)
        if approval is None:
            raise SignInNotApproved()
        log.info("signed in with %s", instance.host)
        permissions = tuple(self._settings.permissions) if app is None else app.permissions
        return Identity(instance, approval.user, approval.token, method, permissions, dict(pending.server))

"""The shared resources one running tobira owns, built in the app's lifespan and closed with it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from app.access import AccessRules, load_rules
from app.config import Settings
from app.discovery import NODEINFO_DEADLINE, Discovery
from app.endings import endings_for
from app.endpoints import EndpointPolicy
from app.guard import Guard, GuardSettings, Resolver, build_guard, guarded_client
from app.ledger import Ledger
from app.notices import SignOutNotices
from app.oidc.clients import load_clients
from app.oidc.keys import KeyRing
from app.oidc.provider import Provider
from app.resolver import DnsResolver
from app.session import SessionCookies
from app.signin.flow import SignInFlow
from app.store import open_store
from app.streams import StreamRegistry


@dataclass(slots=True)
class Services:
    settings: Settings
    guard: Guard
    client: httpx.AsyncClient
    ledger: Ledger
    discovery: Discovery
    cookies: SessionCookies
    notices: SignOutNotices
    signin: SignInFlow
    endpoints: EndpointPolicy
    clock: Callable[[], float]
    streams: StreamRegistry = field(default_factory=StreamRegistry)
    oidc: Provider | None = None  # with TOBIRA_OIDC_CLIENTS: tobira is an OpenID provider
    access: AccessRules = field(default_factory=lambda: AccessRules(None))  # forward authentication

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.ledger.close()


def build_resolver(settings: Settings) -> DnsResolver:
    """The resolver with the operator's bounds; dev origins named by a host name keep the system's resolver
    (for /etc/hosts names such as localhost)."""
    return DnsResolver(
        timeout=settings.resolve_timeout,
        max_under_way=settings.resolve_max,
        per_client=settings.resolve_per_client,
        system_hosts=[host for _, host, _ in settings.dev_origins],
    )


def build_services(
    settings: Settings,
    *,
    resolver: Resolver | None = None,
    clock: Callable[[], float] = time.time,
) -> Services:
    """Everything the routes need; `resolver` and `clock` are for tests."""
    guard = build_guard(
        GuardSettings(
            connect_timeout=settings.connect_timeout,
            total_timeout=settings.request_timeout,
            max_response_bytes=settings.max_response_bytes,
            per_host_connections=settings.per_host_connections,
            dev_origins=settings.dev_origins,
        ),
        resolver=resolver or build_resolver(settings),
    )
    client = guarded_client(guard)
    store = open_store(settings.resolved_store_url, clock=clock)
    ledger = Ledger(store, endings_for(store))
    discovery = Discovery(
        client,
        ttl=settings.discovery_cache_seconds,
        nodeinfo_deadline=min(NODEINFO_DEADLINE, settings.request_timeout),
    )
    cookies = SessionCookies(
        settings.secret_values(),
        secure=settings.is_production,
        max_age=settings.session_max_age,
        clock=clock,
        domain=settings.cookie_domain,
        path=settings.base_path or "/",
    )
    oidc = None
    if settings.oidc_clients is not None:
        oidc = Provider(
            settings.issuer,
            load_clients(settings.oidc_clients),
            ledger=ledger,
            keys=KeyRing(ledger, settings.secret_values(), clock),
            secret_keys=settings.secret_values(),
            clock=clock,
        )
    return Services(
        settings=settings,
        guard=guard,
        client=client,
        ledger=ledger,
        discovery=discovery,
        cookies=cookies,
        notices=SignOutNotices(
            settings.secret_values(), secure=settings.is_production, path=settings.base_path or "/"
        ),
        signin=SignInFlow(settings, client=client, ledger=ledger, discovery=discovery, cookies=cookies),
        # Identity-only sign-in (no permissions): the token can call nothing, so the proxy forwards nothing.
        endpoints=EndpointPolicy(settings.proxy_endpoints if settings.permissions else []),
        clock=clock,
        oidc=oidc,
        access=load_rules(settings.access_rules)[0],  # checked by load_settings: no problems left here
    )

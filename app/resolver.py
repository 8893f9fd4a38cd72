"""Name resolution for the guard: asynchronous, bounded in time, capped overall and per client, shared.

Why not the system resolver: the event loop's `getaddrinfo` runs in a small thread pool (4 threads under
uvloop), and a name whose DNS server never answers holds a thread for about ten seconds whatever the
request's own time bound says; two such names at once starved every other sign-in and proxy call. Here
names are asked with dnspython's asynchronous resolver (the name servers of /etc/resolv.conf, as usual),
which holds nothing but a socket while it waits, and:

- every resolution ends within `timeout` seconds (3 by default: a healthy recursive resolver answers in
  well under one, even for a name it must look up afresh, and the whole request has 15), A and AAAA
  asked at once, CNAME chains followed;
- at most `max_under_way` resolutions run at once (beyond it a caller waits for a slot, still within
  `timeout`, then InstanceTimeout), so hostile names cost a bounded number of sockets and timers (two
  UDP sockets each; 128 by default, which honest traffic fills only at well over a hundred new server
  names a second);
- one client address starts at most `per_client` resolutions at once (beyond it RateLimited at once), so
  one person cannot take all of those slots (4 by default: a person looks up one server at a time, a
  few tabs at most; filling 128 takes 32 addresses). The client is the one `CLIENT` names (set per
  request by the app's middleware, keyed by `app.clients.client_key`: an IPv6 client is its /64); without
  one (tests, work outside a request), only the overall cap applies;
- one resolution per name at a time, shared by everyone who asks (shielded: a caller giving up cancels
  nothing), so a discovery's concurrent requests, or a burst of sign-ins to one server, resolve it once.

A name that does not exist or has no address is InstanceNotFound; a resolver that does not answer in time,
or no DNS server answering at all, InstanceTimeout. Errors never carry more than the host.

The operator's dev hosts (`system_hosts`, names such as localhost from /etc/hosts) keep the system
resolver, under the same bounds. IP literals never reach a resolver (the guard connects to them as they are).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Iterable
from contextvars import ContextVar

import dns.asyncresolver
import dns.exception
import dns.resolver

from app.errors import InstanceError, InstanceNotFound, InstanceTimeout, RateLimited

RESOLVE_TIMEOUT = 3.0
RESOLVE_MAX = 128
RESOLVE_PER_CLIENT = 4
RETRY_AFTER = 1  # seconds: a client over its cap waits for one of its own resolutions to end

# The key (see `app.clients.client_key`) of the client the current request is for; None outside requests.
CLIENT: ContextVar[str | None] = ContextVar("tobira_resolving_for", default=None)

_log = logging.getLogger(__name__)


class DnsResolver:
    """The guard's resolver (see the module docstring); implements `app.guard.Resolver`."""

    def __init__(
        self,
        *,
        timeout: float = RESOLVE_TIMEOUT,
        max_under_way: int = RESOLVE_MAX,
        per_client: int = RESOLVE_PER_CLIENT,
        system_hosts: Iterable[str] = (),
        dns_resolver: dns.asyncresolver.Resolver | None = None,
    ) -> None:
        self._timeout = timeout
        self._per_client = per_client
        self._system_hosts = frozenset(system_hosts)
        self._dns = dns_resolver or _configured_resolver()
        self._slots = asyncio.Semaphore(max_under_way)
        self._under_way: dict[str, asyncio.Task[list[str]]] = {}
        self._by_client: Counter[str] = Counter()

    async def resolve(self, host: str, port: int) -> list[str]:
        """IP address strings for `host`, IPv4 first; raises InstanceNotFound/Timeout, RateLimited."""
        task = self._under_way.get(host)
        if task is None:
            task = self._start(host, port)
        # shield: one caller giving up must not cancel the resolution the others are waiting for.
        return list(await asyncio.shield(task))

    def _start(self, host: str, port: int) -> asyncio.Task[list[str]]:
        client = CLIENT.get()
        if client is not None:
            if self._by_client[client] >= self._per_client:
                raise RateLimited(retry_after=RETRY_AFTER)
            self._by_client[client] += 1
        task = asyncio.create_task(self._resolution(host, port))
        self._under_way[host] = task
        task.add_done_callback(lambda done: self._finished(host, client, done))
        return task

    def _finished(self, host: str, client: str | None, task: asyncio.Task[list[str]]) -> None:
        if self._under_way.get(host) is task:
            del self._under_way[host]
        if client is not None:
            self._by_client[client] -= 1
            if not self._by_client[client]:
                del self._by_client[client]
        if not task.cancelled():
            task.exception()  # retrieved here, so that nobody waiting any more is not an "unretrieved" error

    async def _resolution(self, host: str, port: int) -> list[str]:
        try:
            async with asyncio.timeout(self._timeout), self._slots:
                if host in self._system_hosts:
                    return await _system_lookup(host, port)
                return await self._dns_lookup(host)
        except TimeoutError:
            _log.debug("resolving %s timed out", host)
            raise InstanceTimeout() from None

    async def _dns_lookup(self, host: str) -> list[str]:
        outcomes = await asyncio.gather(
            *(
                self._dns.resolve(
                    host, rdtype, search=False, raise_on_no_answer=False, lifetime=self._timeout
                )
                for rdtype in ("A", "AAAA")
            ),
            return_exceptions=True,
        )
        addresses: list[str] = []
        for outcome in outcomes:
            if isinstance(outcome, dns.resolver.Answer):
                addresses += [rdata.address for rdata in outcome.rrset or ()]
            elif not isinstance(outcome, dns.exception.DNSException):
                raise outcome  # not the DNS's answer: a bug or a cancellation, never hidden
        if addresses:
            return addresses
        raise _failure(host, [outcome for outcome in outcomes if isinstance(outcome, BaseException)])


def _failure(host: str, failures: list[BaseException]) -> InstanceError:
    """What a name with no address means: absent (NXDOMAIN, nothing) or too slow (no server answered)."""
    _log.debug("resolving %s failed: %s", host, ", ".join(type(f).__name__ for f in failures) or "no address")
    if any(isinstance(f, dns.resolver.NXDOMAIN) for f in failures):
        return InstanceNotFound()
    # No server answering, or all failing (SERVFAIL: their upstream did not answer): too slow, not absent.
    if any(isinstance(f, dns.exception.Timeout | dns.resolver.NoNameservers) for f in failures):
        return InstanceTimeout()
    return InstanceNotFound()


async def _system_lookup(host: str, port: int) -> list[str]:
    """The operating system's answer (for the operator's dev hosts only); raises InstanceNotFound."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise InstanceNotFound() from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _configured_resolver() -> dns.asyncresolver.Resolver:
    """dnspython's resolver configured from /etc/resolv.conf; without one, a server on localhost, as glibc
    assumes."""
    try:
        return dns.asyncresolver.Resolver()
    except dns.resolver.NoResolverConfiguration:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        return resolver

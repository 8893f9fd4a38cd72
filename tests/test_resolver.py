"""The guard's resolver (`app.resolver`) against a DNS server of the test's own on loopback.

The server answers from a small zone, records every question it is asked, and can stay silent, fail
(SERVFAIL) or answer late, so that time bounds, caps and shared resolutions are seen from the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import dns.asyncresolver
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import httpx
import pytest

import app.resolver
from app.config import ConfigError, load_settings
from app.errors import ErrorCode, InstanceNotFound, InstanceTimeout, RateLimited
from app.hosts import parse_instance
from app.main import ResolvingFor, create_app
from app.resolver import CLIENT, RESOLVE_MAX, RESOLVE_PER_CLIENT, RESOLVE_TIMEOUT, DnsResolver
from app.services import build_resolver
from tests.hostile_support import mint_session

pytestmark = pytest.mark.anyio

ZONE = {
    ("both.test.", "A"): ["1.1.1.1"],
    ("both.test.", "AAAA"): ["2606:4700::1111"],
    ("v4.test.", "A"): ["8.8.8.8"],
    ("v6.test.", "AAAA"): ["2001:4860:4860::8888"],
    ("late.test.", "A"): ["9.9.9.9"],
}
CNAMES = {"alias.test.": "chain.test.", "chain.test.": "both.test."}
EMPTY = {"empty.test.", "v4.test.", "v6.test.", "late.test."}  # names that exist (NOERROR) with no address
SILENT = ".silent."  # names with this label are never answered
LATE = 0.2  # seconds late.test's answers take
TIMEOUT = 0.5  # the resolvers' bound in these tests


@dataclass
class DnsServer:
    port: int = 0
    questions: list[tuple[str, str]] = field(default_factory=list)

    def names_asked(self) -> set[str]:
        return {name for name, _ in self.questions}


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram transport, not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name, rdtype = question.name.to_text().lower(), dns.rdatatype.to_text(question.rdtype)
        self.server.questions.append((name, rdtype))
        if SILENT in name:
            return
        answer = _answer(query, name, rdtype)
        delay = LATE if name == "late.test." else 0
        asyncio.get_running_loop().call_later(delay, self._send, answer.to_wire(), addr)

    def _send(self, wire: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.sendto(wire, addr)


def _answer(query: dns.message.Message, name: str, rdtype: str) -> dns.message.Message:
    """What a recursive resolver would say: the CNAME chain and the addresses at its end."""
    response = dns.message.make_response(query)
    if name == "servfail.test.":
        response.set_rcode(dns.rcode.SERVFAIL)
        return response
    while name in CNAMES:
        response.answer.append(dns.rrset.from_text(name, 60, "IN", "CNAME", CNAMES[name]))
        name = CNAMES[name]
    addresses = ZONE.get((name, rdtype))
    if addresses:
        response.answer.append(dns.rrset.from_text(name, 60, "IN", rdtype, *addresses))
    elif name not in EMPTY and (name, "A") not in ZONE and (name, "AAAA") not in ZONE:
        response.set_rcode(dns.rcode.NXDOMAIN)
    return response


@pytest.fixture
async def dns_server() -> AsyncIterator[DnsServer]:
    server = DnsServer()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Protocol(server), local_addr=("127.0.0.1", 0)
    )
    server.port = transport.get_extra_info("sockname")[1]
    try:
        yield server
    finally:
        transport.close()


def asking(server: DnsServer) -> dns.asyncresolver.Resolver:
    """dnspython's resolver configured to ask only `server`."""
    dns_resolver = dns.asyncresolver.Resolver(configure=False)
    dns_resolver.nameservers = ["127.0.0.1"]
    dns_resolver.port = server.port
    return dns_resolver


def resolver_for(server: DnsServer, **bounds: Any) -> DnsResolver:
    """A DnsResolver asking only `server`, with TIMEOUT unless told otherwise."""
    bounds.setdefault("timeout", TIMEOUT)
    return DnsResolver(dns_resolver=asking(server), **bounds)


@contextlib.contextmanager
def client(key: str | None) -> Iterator[None]:
    token = CLIENT.set(key)
    try:
        yield
    finally:
        CLIENT.reset(token)


def assert_plain(error: BaseException) -> None:
    """The error says nothing but its own message: no resolver text, no chained exception."""
    assert isinstance(error, InstanceNotFound | InstanceTimeout)
    assert str(error) == type(error).default_message
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


# ---------------------------------------------------------------------------------------------------------
# Answers


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("both.test", ["1.1.1.1", "2606:4700::1111"], id="a-and-aaaa-ipv4-first"),
        pytest.param("v4.test", ["8.8.8.8"], id="a-only"),
        pytest.param("v6.test", ["2001:4860:4860::8888"], id="aaaa-only"),
        pytest.param("alias.test", ["1.1.1.1", "2606:4700::1111"], id="cname-chain"),
    ],
)
async def test_addresses_from_a_and_aaaa(dns_server: DnsServer, host: str, expected: list[str]) -> None:
    assert await resolver_for(dns_server).resolve(host, 443) == expected
    assert sorted(dns_server.questions) == [(host + ".", "A"), (host + ".", "AAAA")]


@pytest.mark.parametrize(
    ("host", "error"),
    [
        pytest.param("nowhere.test", InstanceNotFound, id="nxdomain"),
        pytest.param("empty.test", InstanceNotFound, id="no-address"),
        pytest.param("servfail.test", InstanceTimeout, id="servfail"),
        pytest.param("x.silent.test", InstanceTimeout, id="never-answers"),
    ],
)
async def test_failures(dns_server: DnsServer, host: str, error: type[Exception]) -> None:
    started = time.monotonic()
    with pytest.raises(error) as caught:
        await resolver_for(dns_server).resolve(host, 443)
    assert time.monotonic() - started < TIMEOUT + 0.3
    assert_plain(caught.value)


async def test_the_search_list_is_never_used(dns_server: DnsServer) -> None:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers, resolver.port = ["127.0.0.1"], dns_server.port
    resolver.search = [dns.name.from_text("corp.internal")]
    with pytest.raises(InstanceNotFound):
        await DnsResolver(dns_resolver=resolver, timeout=TIMEOUT).resolve("nowhere.test", 443)
    assert dns_server.names_asked() == {"nowhere.test."}


async def test_no_dns_server_answering_is_a_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))  # bound and never read: queries go nowhere, nothing is refused
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers, resolver.port = ["127.0.0.1"], sock.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(InstanceTimeout) as caught:
            await DnsResolver(dns_resolver=resolver, timeout=0.3).resolve("both.test", 443)
    assert 0.3 <= time.monotonic() - started < 0.6
    assert_plain(caught.value)


# ---------------------------------------------------------------------------------------------------------
# One resolution per name, shared


async def test_concurrent_callers_share_one_resolution(dns_server: DnsServer) -> None:
    resolver = resolver_for(dns_server)
    with client("203.0.113.1"):
        answers = await asyncio.gather(*(resolver.resolve("late.test", 443) for _ in range(10)))
    assert answers == [["9.9.9.9"]] * 10
    assert sorted(dns_server.questions) == [("late.test.", "A"), ("late.test.", "AAAA")]
    await resolver.resolve("late.test", 443)  # once it has ended, the next caller asks again
    assert len(dns_server.questions) == 4


async def test_a_caller_giving_up_cancels_nothing_for_the_others(dns_server: DnsServer) -> None:
    resolver = resolver_for(dns_server)
    first = asyncio.create_task(resolver.resolve("late.test", 443))
    second = asyncio.create_task(resolver.resolve("late.test", 443))
    await asyncio.sleep(LATE / 4)
    first.cancel()
    assert await second == ["9.9.9.9"]
    assert first.cancelled()
    assert len(dns_server.questions) == 2


# ---------------------------------------------------------------------------------------------------------
# Caps


async def test_a_client_over_its_cap_is_refused_at_once(dns_server: DnsServer) -> None:
    resolver = resolver_for(dns_server, per_client=2)
    with client("203.0.113.7"):
        held = [asyncio.create_task(resolver.resolve(f"{i}.silent.test", 443)) for i in range(2)]
        await asyncio.sleep(0)
        started = time.monotonic()
        with pytest.raises(RateLimited) as caught:
            await resolver.resolve("2.silent.test", 443)
        assert time.monotonic() - started < 0.05
        assert caught.value.retry_after == 1
        joined = asyncio.create_task(resolver.resolve("0.silent.test", 443))  # joining costs nothing
    with client("203.0.113.8"):
        other = asyncio.create_task(resolver.resolve("3.silent.test", 443))  # another client is not held
    outcomes = await asyncio.gather(*held, joined, other, return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [InstanceTimeout] * 4
    assert dns_server.names_asked() == {"0.silent.test.", "1.silent.test.", "3.silent.test."}
    with client("203.0.113.7"):  # its resolutions have ended: it may start again
        assert await resolver.resolve("both.test", 443) == ["1.1.1.1", "2606:4700::1111"]


async def test_without_a_client_only_the_overall_cap_applies(dns_server: DnsServer) -> None:
    resolver = resolver_for(dns_server, per_client=1, max_under_way=3)
    tasks = [asyncio.create_task(resolver.resolve(f"{i}.silent.test", 443)) for i in range(4)]
    await asyncio.sleep(TIMEOUT / 2)
    # Three under way; the fourth waits for a slot and asks nothing meanwhile.
    assert dns_server.names_asked() == {"0.silent.test.", "1.silent.test.", "2.silent.test."}
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [InstanceTimeout] * 4


async def test_a_caller_waiting_for_a_slot_goes_on_when_one_frees(dns_server: DnsServer) -> None:
    resolver = resolver_for(dns_server, max_under_way=1)
    slow = asyncio.create_task(resolver.resolve("late.test", 443))
    await asyncio.sleep(0)
    started = time.monotonic()
    assert await resolver.resolve("v4.test", 443) == ["8.8.8.8"]
    assert LATE * 0.9 <= time.monotonic() - started < TIMEOUT
    assert await slow == ["9.9.9.9"]


# ---------------------------------------------------------------------------------------------------------
# The operator's dev hosts: the system's resolver, under the same bound


async def test_dev_hosts_use_the_system_resolver(dns_server: DnsServer) -> None:
    resolver = resolver_for(dns_server, system_hosts=["localhost"])
    assert "127.0.0.1" in await resolver.resolve("localhost", 3000)
    assert dns_server.questions == []


async def test_a_dev_host_the_system_cannot_resolve_is_not_found(
    dns_server: DnsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_such_name(*args: Any, **kwargs: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    resolver = resolver_for(dns_server, system_hosts=["x" * 64 + ".test", "gone.test"])
    with pytest.raises(InstanceNotFound):
        await resolver.resolve("x" * 64 + ".test", 443)  # a label too long to encode
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", no_such_name)
    with pytest.raises(InstanceNotFound) as caught:
        await resolver.resolve("gone.test", 443)
    assert_plain(caught.value)


async def test_a_dev_host_is_still_bounded_in_time(
    dns_server: DnsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def hangs(*args: Any, **kwargs: Any) -> list[Any]:
        await asyncio.sleep(60)
        return []

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", hangs)
    started = time.monotonic()
    with pytest.raises(InstanceTimeout):
        await resolver_for(dns_server, system_hosts=["standin.test"]).resolve("standin.test", 443)
    assert time.monotonic() - started < TIMEOUT + 0.3


# ---------------------------------------------------------------------------------------------------------
# Settings and the app: the client comes from each request


def test_settings_defaults_and_validation(tmp_path: Any) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert (settings.resolve_timeout, settings.resolve_max, settings.resolve_per_client) == (3.0, 128, 4)
    assert (RESOLVE_TIMEOUT, RESOLVE_MAX, RESOLVE_PER_CLIENT) == (3.0, 128, 4)
    with pytest.raises(ConfigError) as caught:
        load_settings(data_dir=tmp_path, resolve_timeout=0, resolve_max=2, resolve_per_client=3)
    assert caught.value.problems == [
        "TOBIRA_RESOLVE_TIMEOUT: Input should be greater than 0",
        "TOBIRA_RESOLVE_PER_CLIENT must not be more than TOBIRA_RESOLVE_MAX",
    ]
    with pytest.raises(ConfigError) as caught:
        load_settings(data_dir=tmp_path, resolve_max=2, resolve_per_client=3)
    assert caught.value.problems == ["TOBIRA_RESOLVE_PER_CLIENT must not be more than TOBIRA_RESOLVE_MAX"]


async def test_the_middleware_names_each_requests_client() -> None:
    seen: list[tuple[str, str | None]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append((scope["type"], CLIENT.get()))

    middleware = ResolvingFor(app, ipv6_prefix=64)
    await middleware({"type": "http", "client": ("198.51.100.4", 5000)}, None, None)
    await middleware({"type": "websocket", "client": ("2001:db8::7", 5001)}, None, None)
    await middleware({"type": "http", "client": None}, None, None)
    await middleware({"type": "lifespan"}, None, None)
    assert seen == [
        ("http", "198.51.100.4"),
        ("websocket", "2001:db8::/64"),  # an IPv6 client is its /64, as for rate limits
        ("http", None),
        ("lifespan", None),
    ]
    assert CLIENT.get() is None


async def test_a_client_resolving_too_much_gets_429_from_the_app(
    dns_server: DnsServer, tmp_path: Any
) -> None:
    settings = load_settings(data_dir=tmp_path, login_rate_limit=0, request_timeout=5)
    app = create_app(settings, resolver=resolver_for(dns_server, per_client=1, timeout=1.0))
    headers = {"Origin": settings.public_origin}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("192.0.2.10", 1234))
        async with httpx.AsyncClient(transport=transport, base_url=settings.public_url) as browser:
            lookup = browser.get("/lookup?instance=a.silent.tobira-lab.net", headers=headers)
            held = asyncio.create_task(lookup)
            await asyncio.sleep(0.2)
            refused = await browser.get("/lookup?instance=b.silent.tobira-lab.net", headers=headers)
            timed_out = await held
    assert (refused.status_code, refused.headers.get("retry-after")) == (429, "1"), refused.text
    assert refused.json()["error"]["code"] == ErrorCode.RATE_LIMITED
    assert timed_out.status_code == 504
    assert timed_out.json()["error"]["code"] == ErrorCode.INSTANCE_TIMEOUT
    # meta, nodeinfo and the OAuth metadata were all asked for: one resolution served them.
    assert sorted(dns_server.questions) == [
        ("a.silent.tobira-lab.net.", "A"),
        ("a.silent.tobira-lab.net.", "AAAA"),
    ]


async def test_proxy_calls_are_counted_for_their_client_too(dns_server: DnsServer, tmp_path: Any) -> None:
    key = "resolver-test-key-0123456789abcdef0123456789abcdef"
    settings = load_settings(data_dir=tmp_path, secret_keys=[key], login_rate_limit=0, request_timeout=5)
    app = create_app(settings, resolver=resolver_for(dns_server, per_client=1, timeout=1.0))
    session = mint_session([key], parse_instance("b.silent.tobira-lab.net"), "token-never-sent")
    headers = {"Origin": settings.public_origin, "Content-Type": "application/json"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("192.0.2.11", 1234))
        async with httpx.AsyncClient(transport=transport, base_url=settings.public_url) as browser:
            lookup = browser.get("/lookup?instance=a.silent.tobira-lab.net", headers=headers)
            held = asyncio.create_task(lookup)
            await asyncio.sleep(0.2)
            browser.cookies.set("tobira", session)
            refused = await browser.post("/api/i", content=b"{}", headers=headers)
            await held
    assert (refused.status_code, refused.headers.get("retry-after")) == (429, "1"), refused.text
    assert refused.json()["error"]["code"] == ErrorCode.RATE_LIMITED
    assert dns_server.names_asked() == {"a.silent.tobira-lab.net."}


async def test_the_operators_named_dev_hosts_keep_the_system_resolver(
    dns_server: DnsServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What /etc/resolv.conf configures, made the test's own server: nothing can leave the machine.
    monkeypatch.setattr(app.resolver, "_configured_resolver", lambda: asking(dns_server))
    settings = load_settings(data_dir=tmp_path, dev_instances=["http://localhost:3000"], resolve_timeout=0.5)
    resolver = build_resolver(settings)
    assert "127.0.0.1" in await resolver.resolve("localhost", 3000)  # from /etc/hosts
    assert dns_server.questions == []
    with pytest.raises(InstanceNotFound):
        await resolver.resolve("nowhere.test", 443)  # any other name: the DNS
    assert dns_server.names_asked() == {"nowhere.test."}

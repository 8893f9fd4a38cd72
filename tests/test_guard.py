"""The outbound network guard: what the guarded client does on the wire.

Every test server listens on loopback. A module-wide tripwire patches `socket.socket.connect` so that any
attempt to reach a non-loopback address fails on this machine (ENETUNREACH) instead of leaving it; it also
records every address the guard tried, which is how the tests see exactly what would have been connected to.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import gzip
import itertools
import os
import socket
import ssl
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

import httpx
import pytest
import trustme
from aiohttp import web

from app import http1
from app.errors import (
    AddressForbidden,
    InstanceBadAnswer,
    InstanceNotFound,
    InstanceTimeout,
    InstanceUnreachable,
)
from app.guard import (
    TOO_LARGE,
    USER_AGENT,
    GuardSettings,
    build_guarded_client,
)
from app.hosts import DevOrigin
from tests.hostile_support import tripwire

PUBLIC_V4 = "1.1.1.1"
PUBLIC_V6 = "2606:4700::1111"
# A private address a rebinding attacker would point at, with a canary listening on it (port 443).
CANARY_IP = "127.3.4.5"

# ---------------------------------------------------------------------------------------------------------
# Fixtures: the tripwire, the canary, fake resolvers, loopback servers


@pytest.fixture(autouse=True)
def connects(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int]]]:
    """Every (address, port) a socket tried to connect to; non-loopback ones fail without leaving."""
    with tripwire(monkeypatch) as seen:
        yield seen.attempts


@dataclasses.dataclass
class Canary:
    accepted: int = 0


@pytest.fixture
async def canary() -> AsyncIterator[Canary]:
    """A listener on CANARY_IP:443 counting the connections that reach it."""
    seen = Canary()

    async def on_connect(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.accepted += 1
        writer.close()

    try:
        server = await asyncio.start_server(on_connect, CANARY_IP, 443)
    except PermissionError:
        pytest.skip("the canary needs to listen on port 443 (run as root)")
    async with server:
        yield seen


class FakeResolver:
    """Answers from a script {host: [answer, ...]}; each call takes the next answer, the last repeats."""

    def __init__(self, script: dict[str, list[list[str]]] | None = None) -> None:
        self.script = script or {}
        self.calls: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.script:
            raise InstanceNotFound()
        answers = self.script[host]
        return list(answers.pop(0) if len(answers) > 1 else answers[0])


class BrokenResolver:
    async def resolve(self, host: str, port: int) -> list[str]:
        raise OSError(errno.EIO, "resolver exploded")


@functools.cache
def system_tls() -> ssl.SSLContext:
    """The default context, loaded once: loading the system's CAs is the slowest part of building a client."""
    return ssl.create_default_context()


@contextlib.asynccontextmanager
async def guarded(
    resolver: Any = None, ssl_context: ssl.SSLContext | None = None, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    settings.setdefault("total_timeout", 3.0)
    client = build_guarded_client(
        GuardSettings(**settings), resolver or FakeResolver(), ssl_context or system_tls()
    )
    async with client:
        yield client


@contextlib.asynccontextmanager
async def web_server(
    routes: list[web.RouteDef], ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    """An aiohttp.web app on 127.0.0.1; yields its port."""
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock, ssl_context=ssl_context).start()
    try:
        yield sock.getsockname()[1]
    finally:
        await runner.cleanup()


Respond = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(respond: Respond) -> AsyncIterator[int]:
    """A bare TCP server on 127.0.0.1 that reads the request head and lets `respond` misbehave."""

    handlers: set[asyncio.Task[None]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await reader.readuntil(b"\r\n\r\n")
            await respond(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers)


def dev(port: int, scheme: str = "http", host: str = "127.0.0.1") -> dict[str, Any]:
    return {"dev_origins": (DevOrigin(scheme, host, port),)}


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    seen = {
        "method": request.method,
        "path": request.path_qs,
        "headers": {k.lower(): v for k, v in request.headers.items()},
        "body": body.decode(),
        "peer": request.transport.get_extra_info("peername")[1] if request.transport else None,
    }
    return web.json_response(seen, headers={"Set-Cookie": "tracker=1; Path=/"})


# ---------------------------------------------------------------------------------------------------------
# Refused before any I/O


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://misskey.test/", id="plain-http"),
        pytest.param("https://misskey.test:8443/", id="https-other-port"),
        pytest.param("https://misskey.test:80/", id="https-port-80"),
        pytest.param("ftp://misskey.test/", id="other-scheme"),
        pytest.param("https://127.0.0.1/", id="ipv4-loopback-literal"),
        pytest.param("https://10.0.0.1/", id="ipv4-private-literal"),
        pytest.param("https://169.254.169.254/latest/meta-data/", id="metadata-literal"),
        pytest.param("https://0.0.0.0/", id="unspecified-literal"),
        pytest.param("https://[::1]/", id="ipv6-loopback-literal"),
        pytest.param("https://[0:0:0:0:0:0:0:1]/", id="ipv6-loopback-long-form"),
        pytest.param("https://[::ffff:127.0.0.1]/", id="mapped-loopback-literal"),
        pytest.param("https://[::ffff:7f00:1]/", id="mapped-loopback-hex-literal"),
        pytest.param("https://[64:ff9b::a9fe:a9fe]/", id="nat64-metadata-literal"),
        pytest.param("https://[fe80::1%25eth0]/", id="link-local-with-zone"),
        pytest.param("https://127.1/", id="short-ipv4"),
        pytest.param("https://2130706433/", id="decimal-ipv4"),
        pytest.param("https://127.0.0.1./", id="ipv4-trailing-dot"),
    ],
)
async def test_forbidden_urls_are_refused_before_any_io(url: str, connects: list[tuple[str, int]]) -> None:
    resolver = FakeResolver()
    async with guarded(resolver) as client:
        with pytest.raises(AddressForbidden):
            await client.get(url)
    assert resolver.calls == []
    assert connects == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://127.0.0.1:{port}/", id="scheme-differs"),
        pytest.param("http://127.0.0.1:{other}/", id="port-differs"),
        pytest.param("http://localhost:{port}/", id="host-differs"),
        pytest.param("http://127.0.0.2:{port}/", id="other-loopback-address"),
    ],
)
async def test_only_the_exact_dev_origin_is_exempt(url: str, connects: list[tuple[str, int]]) -> None:
    resolver = FakeResolver({"localhost": [["127.0.0.1"]]})
    async with guarded(resolver, **dev(4000)) as client:
        with pytest.raises(AddressForbidden):
            await client.get(url.format(port=4000, other=4001))
    assert connects == []


@pytest.mark.anyio
async def test_public_ip_literal_is_connected_to_directly(connects: list[tuple[str, int]]) -> None:
    resolver = FakeResolver()
    async with guarded(resolver) as client:
        with pytest.raises(InstanceUnreachable):
            await client.get(f"https://[{PUBLIC_V6}]/api/meta")
    assert resolver.calls == []
    assert connects == [(PUBLIC_V6, 443)]


# ---------------------------------------------------------------------------------------------------------
# Resolution: every address checked, only checked addresses connected to


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer",
    [
        pytest.param([CANARY_IP], id="loopback"),
        pytest.param(["10.0.0.1"], id="private"),
        pytest.param(["169.254.169.254"], id="metadata"),
        pytest.param([f"::ffff:{CANARY_IP}"], id="mapped-loopback"),
        pytest.param(["64:ff9b::a00:1"], id="nat64-private"),
        pytest.param(["fd00::2"], id="unique-local"),
        pytest.param([PUBLIC_V4, CANARY_IP], id="public-then-loopback"),
        pytest.param([PUBLIC_V6, "::1"], id="public-v6-then-loopback"),
        pytest.param(["not an address"], id="garbage"),
    ],
)
async def test_a_name_with_any_non_public_address_is_refused(
    answer: list[str], canary: Canary, connects: list[tuple[str, int]]
) -> None:
    resolver = FakeResolver({"evil.test": [answer]})
    async with guarded(resolver) as client:
        with pytest.raises(AddressForbidden):
            await client.get("https://evil.test/api/meta")
    assert resolver.calls == [("evil.test", 443)]
    assert connects == []
    assert canary.accepted == 0


@pytest.mark.anyio
async def test_a_public_name_is_connected_to_at_exactly_its_checked_addresses(
    connects: list[tuple[str, int]],
) -> None:
    resolver = FakeResolver({"misskey.test": [[PUBLIC_V4, PUBLIC_V6]]})
    async with guarded(resolver) as client:
        with pytest.raises(InstanceUnreachable):
            await client.get("https://misskey.test/api/meta")
    assert sorted(connects) == [(PUBLIC_V4, 443), (PUBLIC_V6, 443)]


@pytest.mark.anyio
async def test_rebinding_to_a_private_address_is_refused_at_connect_time(
    canary: Canary, connects: list[tuple[str, int]]
) -> None:
    resolver = FakeResolver({"rebind.test": [[PUBLIC_V4], [CANARY_IP]]})
    async with guarded(resolver, dns_cache_seconds=0) as client:
        with pytest.raises(InstanceUnreachable):
            await client.get("https://rebind.test/")
        with pytest.raises(AddressForbidden):
            await client.get("https://rebind.test/")
    assert resolver.calls == [("rebind.test", 443), ("rebind.test", 443)]
    assert connects == [(PUBLIC_V4, 443)]
    assert canary.accepted == 0


@pytest.mark.anyio
async def test_the_dns_cache_only_holds_checked_answers(
    canary: Canary, connects: list[tuple[str, int]]
) -> None:
    resolver = FakeResolver({"rebind.test": [[PUBLIC_V4], [CANARY_IP]]})
    async with guarded(resolver) as client:
        for _ in range(3):
            with pytest.raises(InstanceUnreachable):
                await client.get("https://rebind.test/")
    assert resolver.calls == [("rebind.test", 443)]
    assert connects == [(PUBLIC_V4, 443)] * 3
    assert canary.accepted == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    "resolver",
    [
        pytest.param(FakeResolver(), id="unknown-name"),
        pytest.param(FakeResolver({"empty.test": [[]]}), id="no-addresses"),
        pytest.param(BrokenResolver(), id="resolver-os-error"),
    ],
)
async def test_a_name_that_does_not_resolve_is_not_found(
    resolver: Any, connects: list[tuple[str, int]]
) -> None:
    async with guarded(resolver) as client:
        with pytest.raises(InstanceNotFound):
            await client.get("https://empty.test/")
    assert connects == []


@pytest.mark.anyio
async def test_a_dev_origin_name_may_resolve_to_loopback() -> None:
    resolver = FakeResolver({"standin.test": [["127.0.0.1"]]})
    async with web_server([web.get("/api/meta", echo)]) as port:
        async with guarded(resolver, **dev(port, host="standin.test")) as client:
            answer = await client.get(f"http://standin.test:{port}/api/meta")
            with pytest.raises(AddressForbidden):
                await client.get("https://standin.test/api/meta")  # same name, not the dev origin
    assert answer.status_code == 200
    assert answer.json()["headers"]["host"] == f"standin.test:{port}"


# ---------------------------------------------------------------------------------------------------------
# Requests and answers through a loopback dev origin


@pytest.mark.anyio
async def test_request_headers_are_ours_and_the_answer_is_relayed() -> None:
    async with web_server([web.get("/api/meta", echo)]) as port, guarded(**dev(port)) as client:
        answer = await client.get(
            f"http://127.0.0.1:{port}/api/meta?a=1&b=%2F",
            headers={
                "User-Agent": "Mozilla/5.0 (the visitor)",
                "X-Extra": "kept",
                "Proxy-Authorization": "x",
            },
        )
    seen = answer.json()
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json; charset=utf-8"
    assert answer.headers["content-length"] == str(len(answer.content))
    assert seen["method"] == "GET"
    assert seen["path"] == "/api/meta?a=1&b=%2F"
    assert seen["headers"]["user-agent"] == USER_AGENT
    assert seen["headers"]["x-extra"] == "kept"
    assert seen["headers"]["accept-encoding"] == "gzip, deflate"
    assert "proxy-authorization" not in seen["headers"]
    assert "content-type" not in seen["headers"]


@pytest.mark.anyio
async def test_cookies_are_never_stored() -> None:
    # By name: both cookie jars (httpx's and aiohttp's) ignore cookies from bare IP addresses anyway.
    resolver = FakeResolver({"standin.test": [["127.0.0.1"]]})
    async with web_server([web.get("/", echo)]) as port:
        async with guarded(resolver, **dev(port, host="standin.test")) as client:
            first = await client.get(f"http://standin.test:{port}/")
            second = await client.get(f"http://standin.test:{port}/")
            assert len(client.cookies) == 0
    assert first.headers["set-cookie"] == "tracker=1; Path=/"
    assert "cookie" not in second.json()["headers"]


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kwargs", "body", "framing"),
    [
        pytest.param({"content": b'{"i":"tok"}'}, '{"i":"tok"}', ("11", None), id="bytes"),
        pytest.param({"content": b""}, "", ("0", None), id="empty-bytes"),
        pytest.param(
            {"content": chunks(b"ab", b"cd", b"e")}, "abcde", (None, "chunked"), id="stream-chunked"
        ),
        pytest.param(
            {"content": chunks(b"ab", b"cde"), "headers": {"Content-Length": "5"}},
            "abcde",
            ("5", None),
            id="stream-with-length",
        ),
    ],
)
async def test_request_bodies_are_sent(
    kwargs: dict[str, Any], body: str, framing: tuple[str | None, str | None]
) -> None:
    async with web_server([web.post("/api/notes/create", echo)]) as port, guarded(**dev(port)) as client:
        answer = await client.post(f"http://127.0.0.1:{port}/api/notes/create", **kwargs)
    seen = answer.json()
    assert seen["body"] == body
    assert (seen["headers"].get("content-length"), seen["headers"].get("transfer-encoding")) == framing
    assert "content-type" not in seen["headers"]  # none given, none invented


@pytest.mark.anyio
async def test_multipart_uploads_are_sent() -> None:
    async def upload(request: web.Request) -> web.Response:
        form = await request.post()
        file = form["file"]
        assert isinstance(file, web.FileField)
        return web.json_response(
            {"folder": form["folderId"], "name": file.filename, "data": file.file.read().decode()}
        )

    async with (
        web_server([web.post("/api/drive/files/create", upload)]) as port,
        guarded(**dev(port)) as client,
    ):
        answer = await client.post(
            f"http://127.0.0.1:{port}/api/drive/files/create",
            data={"folderId": "f1"},
            files={"file": ("cat.txt", b"meow", "text/plain")},
        )
    assert answer.json() == {"folder": "f1", "name": "cat.txt", "data": "meow"}


@pytest.mark.anyio
async def test_redirects_are_returned_not_followed() -> None:
    hits: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        hits.append(request.path)
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

    async with web_server([web.get("/{tail:.*}", redirect)]) as port, guarded(**dev(port)) as client:
        answer = await client.get(f"http://127.0.0.1:{port}/.well-known/nodeinfo")
    assert answer.status_code == 302
    assert answer.headers["location"] == "http://169.254.169.254/latest/meta-data/"
    assert hits == ["/.well-known/nodeinfo"]


@pytest.mark.anyio
async def test_connections_are_kept_alive_and_closed_with_the_client() -> None:
    peers: list[int] = []
    closed = asyncio.Event()

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            peers.append(writer.get_extra_info("peername")[1])
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            if len(peers) == 1:
                await reader.readuntil(b"\r\n\r\n")
        await reader.read()  # until the client closes the pooled connection
        closed.set()

    async with raw_server(respond) as port:
        client = build_guarded_client(GuardSettings(**dev(port)), FakeResolver())
        assert (await client.get(f"http://127.0.0.1:{port}/")).content == b"ok"
        assert (await client.get(f"http://127.0.0.1:{port}/")).content == b"ok"
        await client.aclose()
        await asyncio.wait_for(closed.wait(), 1)
    assert len(peers) == 2
    assert peers[0] == peers[1]


@pytest.mark.anyio
async def test_requests_over_the_per_host_bound_wait_instead_of_failing() -> None:
    active = 0
    most = 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal active, most
        active += 1
        most = max(most, active)
        await asyncio.sleep(0.05)
        active -= 1
        return web.Response(text="ok")

    async with web_server([web.get("/", slow)]) as port:
        async with guarded(per_host_connections=2, **dev(port)) as client:
            answers = await asyncio.gather(*(client.get(f"http://127.0.0.1:{port}/") for _ in range(8)))
    assert [a.text for a in answers] == ["ok"] * 8
    assert most == 2


# ---------------------------------------------------------------------------------------------------------
# The pool: idle connections closed on time, and capped

NAMES = 60


def own_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def settles(condition: Callable[[], bool], seconds: float) -> bool:
    """True as soon as `condition()` holds, False if it still does not after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def sweeper_running() -> bool:
    return any(task.get_name() == "tobira-pool-sweeper" for task in asyncio.all_tasks())


@contextlib.asynccontextmanager
async def many_names(count: int, **settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, list[str]]]:
    """A guarded client and the URLs of `count` names (dev origins), all served by one keep-alive server
    that never closes a connection itself."""
    async with web_server([web.get("/api/meta", echo)]) as port:
        names = [f"n{index}.test" for index in range(count)]
        resolver = FakeResolver({name: [["127.0.0.1"]] for name in names})
        origins = tuple(DevOrigin("http", name, port) for name in names)
        async with guarded(resolver, dev_origins=origins, **settings) as client:
            yield client, [f"http://{name}:{port}/api/meta" for name in names]


@pytest.mark.anyio
async def test_idle_connections_are_closed_on_time() -> None:
    async with many_names(NAMES, idle_seconds=0.4) as (client, urls):
        baseline = own_fds()
        for url in urls:
            assert (await client.get(url)).status_code == 200
        assert own_fds() >= baseline + NAMES  # one kept-alive connection per name (and the server's ends)
        started = time.monotonic()
        assert await settles(lambda: own_fds() == baseline, 2.0), (baseline, own_fds())
        assert 0.4 <= time.monotonic() - started < 0.4 + 0.1 + 0.5  # the limit, one sweep, a loaded machine
        assert await settles(lambda: not sweeper_running(), 0.5)  # nothing idle: the sweeper has ended
        assert (await client.get(urls[0])).status_code == 200  # and starts again when needed
        assert sweeper_running()
    assert not sweeper_running()  # closing the client stopped it


@pytest.mark.anyio
async def test_idle_connections_are_capped_overall() -> None:
    async with many_names(NAMES, max_idle=5) as (client, urls):
        baseline = own_fds()
        first = [(await client.get(url)).json()["peer"] for url in urls]
        assert await settles(lambda: own_fds() == baseline + 2 * 5, 1.0), (baseline, own_fds())
        again = [(await client.get(url)).json()["peer"] for url in urls[-5:]]
        assert again == first[-5:]  # the newest five were kept, and reused


@pytest.mark.anyio
async def test_idle_connections_are_capped_per_origin() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.1)
        return web.Response(text="ok")

    async with web_server([web.get("/", slow)]) as port:
        async with guarded(max_idle_per_origin=2, **dev(port)) as client:
            baseline = own_fds()
            answers = await asyncio.gather(*(client.get(f"http://127.0.0.1:{port}/") for _ in range(8)))
            assert [answer.text for answer in answers] == ["ok"] * 8
            assert await settles(lambda: own_fds() == baseline + 2 * 2, 1.0), (baseline, own_fds())


# ---------------------------------------------------------------------------------------------------------
# Size cap, counted after decompression

LIMIT = 64 * 1024


def bomb(compress: Callable[[bytes], bytes]) -> bytes:
    return compress(bytes(16 * 1024 * 1024))  # 16 MiB of zeros, about 16 KiB on the wire


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("respond", "size"),
    [
        pytest.param(lambda: web.Response(body=b"x" * LIMIT), LIMIT, id="exactly-the-cap"),
        pytest.param(
            lambda: web.Response(body=gzip.compress(b"y" * 1000), headers={"Content-Encoding": "gzip"}),
            1000,
            id="gzip-decoded",
        ),
        pytest.param(
            lambda: web.Response(body=zlib.compress(b"z" * 1000), headers={"Content-Encoding": "deflate"}),
            1000,
            id="deflate-decoded",
        ),
    ],
)
async def test_answers_within_the_cap_arrive_decoded(respond: Callable[[], web.Response], size: int) -> None:
    async def handler(request: web.Request) -> web.Response:
        return respond()

    async with web_server([web.get("/", handler)]) as port:
        async with guarded(max_response_bytes=LIMIT, **dev(port)) as client:
            answer = await client.get(f"http://127.0.0.1:{port}/")
    assert len(answer.content) == size
    assert "content-encoding" not in answer.headers
    assert answer.headers["content-length"] == str(size)


async def stream_over_cap(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)  # chunked: no Content-Length to refuse up front
    for _ in range(4):
        await response.write(b"x" * (LIMIT // 2))
    return response


@pytest.mark.anyio
@pytest.mark.parametrize(
    "handler",
    [
        pytest.param(lambda r: web.Response(body=b"x" * (LIMIT + 1)), id="content-length-over"),
        pytest.param(stream_over_cap, id="chunked-over"),
        pytest.param(
            lambda r: web.Response(body=bomb(gzip.compress), headers={"Content-Encoding": "gzip"}),
            id="gzip-bomb",
        ),
        pytest.param(
            lambda r: web.Response(body=bomb(zlib.compress), headers={"Content-Encoding": "deflate"}),
            id="deflate-bomb",
        ),
    ],
)
async def test_answers_over_the_cap_are_refused(handler: Callable[[web.Request], Any]) -> None:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        response = handler(request)
        return await response if asyncio.iscoroutine(response) else response  # type: ignore[no-any-return]

    async with web_server([web.get("/", wrapped)]) as port:
        async with guarded(max_response_bytes=LIMIT, **dev(port)) as client:
            with pytest.raises(InstanceBadAnswer) as caught:
                await client.get(f"http://127.0.0.1:{port}/")
    assert caught.value.message == TOO_LARGE


# ---------------------------------------------------------------------------------------------------------
# Bounds counted as the bytes arrive (`app.http1`), before the parser buffers anything

PIECE = 64 * 1024
ENDLESS = 16 * 1024 * 1024  # what an endless answer gets to send before a test gives up on it


class WireTransport:
    """What `http1.Connection` uses of a transport: it records, and says whether it was closed."""

    def __init__(self) -> None:
        self.closed = False

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


@dataclasses.dataclass
class Fed:
    outcome: http1.Answer | BaseException | None  # None: still waiting when the bytes ran out
    delivered: int  # bytes handed to the connection before it closed (or all of them)
    peak_memory: int  # bytes Python allocated at most meanwhile, beyond what it held before


async def feed(head: bytes, then: Iterable[bytes] = (), **limits: Any) -> Fed:
    """Answer one GET with `head`, then the pieces of `then`, until the connection closes."""
    connection = http1.Connection(limits.pop("max_body", LIMIT), **limits)
    transport = WireTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    exchange = asyncio.create_task(connection.exchange(b"GET / HTTP/1.1\r\n\r\n", b"", 0))
    await asyncio.sleep(0)
    delivered = 0
    tracemalloc.start()
    try:
        for piece in itertools.chain([head], then):
            if transport.closed:
                break
            connection.data_received(piece)
            delivered += len(piece)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    await asyncio.wait([exchange], timeout=0.1)  # the answer, or the failure, is already decided
    if not exchange.done():
        exchange.cancel()
        return Fed(None, delivered, peak)
    return Fed(exchange.exception() or exchange.result(), delivered, peak)


def endless(piece: bytes, total: int = ENDLESS) -> Iterator[bytes]:
    return itertools.repeat(piece, total // len(piece))


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data)


GZIP_HEAD = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("head", "then"),
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nX-Endless: ", b"a" * PIECE, id="endless-header-value"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX-", b"b" * PIECE, id="endless-header-name"),
        pytest.param(b"HTTP/1.1 200 OK", b" OK" * (PIECE // 3), id="endless-status-line"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-Trailer: ",
            b"c" * PIECE,
            id="endless-trailer",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;ext=",
            b"d" * PIECE,
            id="endless-chunk-ext",
        ),
    ],
)
async def test_an_endless_head_or_trailer_is_refused_at_the_cap(head: bytes, then: bytes) -> None:
    fed = await feed(head, endless(then))
    assert isinstance(fed.outcome, http1.Malformed)
    assert fed.delivered <= 2 * http1.MAX_HEAD + PIECE  # refused as soon as over the cap, not at the end
    assert fed.peak_memory < 4 * http1.MAX_HEAD  # never buffered past it


@pytest.mark.anyio
async def test_a_head_of_exactly_the_cap_is_read() -> None:
    start = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Pad: "
    head = start + b"p" * (http1.MAX_HEAD - len(start) - 4) + b"\r\n\r\n"
    assert len(head) == http1.MAX_HEAD
    fed = await feed(head + b"{}")
    assert isinstance(fed.outcome, http1.Answer)
    assert (fed.outcome.status, fed.outcome.body) == (200, b"{}")
    over = await feed(head[:-4] + b"p\r\n\r\n{}")
    assert isinstance(over.outcome, http1.Malformed)


@pytest.mark.anyio
async def test_a_large_body_in_the_same_read_as_the_head_is_not_counted_as_head() -> None:
    body = b"x" * (3 * http1.MAX_HEAD)
    fed = await feed(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body), max_body=len(body)
    )
    assert isinstance(fed.outcome, http1.Answer)
    assert fed.outcome.body == body


@pytest.mark.anyio
@pytest.mark.parametrize(("fields", "refused"), [(http1.MAX_FIELDS, False), (http1.MAX_FIELDS + 1, True)])
async def test_header_fields_are_counted(fields: int, refused: bool) -> None:
    lines = b"".join(b"x%d: 1\r\n" % index for index in range(fields - 1))
    fed = await feed(b"HTTP/1.1 200 OK\r\n" + lines + b"Content-Length: 2\r\n\r\n{}")
    if refused:
        assert isinstance(fed.outcome, http1.Malformed)
    else:
        assert isinstance(fed.outcome, http1.Answer)
        assert len(fed.outcome.headers) == fields


@pytest.mark.anyio
async def test_trailers_count_as_fields_and_are_not_taken_for_headers() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n"
    fed = await feed(head + b"0\r\nContent-Type: text/html\r\n\r\n")
    assert isinstance(fed.outcome, http1.Answer)
    assert (fed.outcome.headers, fed.outcome.body) == ([(b"transfer-encoding", b"chunked")], b"{}")
    many = b"".join(b"t%d: 1\r\n" % index for index in range(http1.MAX_FIELDS))
    assert isinstance((await feed(head + b"0\r\n" + many + b"\r\n")).outcome, http1.Malformed)


@pytest.mark.anyio
async def test_many_small_chunks_are_body_not_head() -> None:
    body = chunk(b"x") * (4 * http1.MAX_HEAD // 6) + b"0\r\n\r\n"
    fed = await feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    assert isinstance(fed.outcome, http1.Answer)
    assert fed.outcome.body == b"x" * (4 * http1.MAX_HEAD // 6)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "after",
    [
        pytest.param(b" ", id="one-byte"),
        pytest.param(gzipped(b"{}"), id="a-second-gzip-member"),
    ],
)
async def test_nothing_is_accepted_after_the_compressed_body_ends(after: bytes) -> None:
    fed = await feed(GZIP_HEAD + chunk(gzipped(b'{"ok":true}') + after) + b"0\r\n\r\n")
    assert isinstance(fed.outcome, http1.Malformed)


@pytest.mark.anyio
async def test_endless_bytes_after_the_compressed_body_are_refused_at_once() -> None:
    fed = await feed(GZIP_HEAD + chunk(gzipped(b'{"ok":true}')), endless(chunk(b" " * (PIECE - 16))))
    assert isinstance(fed.outcome, http1.Malformed)
    assert fed.delivered <= len(GZIP_HEAD) + 64 + PIECE
    assert fed.peak_memory < 4 * PIECE


@pytest.mark.anyio
async def test_a_compressed_body_split_anywhere_is_read() -> None:
    compressed = gzipped(b'{"ok":true}')
    pieces = [chunk(compressed[i : i + 1]) for i in range(len(compressed))]
    fed = await feed(GZIP_HEAD, iter([*pieces, b"0\r\n\r\n"]))
    assert isinstance(fed.outcome, http1.Answer)
    assert fed.outcome.body == b'{"ok":true}'


async def endless_header(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nX-Endless: ")
    for _ in range(ENDLESS // PIECE):
        writer.write(b"a" * PIECE)
        await writer.drain()


async def gzip_then_endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(GZIP_HEAD + chunk(gzipped(b'{"ok":true}')))
    for _ in range(ENDLESS // PIECE):
        writer.write(chunk(b" " * PIECE))
        await writer.drain()


@pytest.mark.anyio
@pytest.mark.parametrize("respond", [endless_header, gzip_then_endless])
async def test_hostile_answers_on_the_wire_are_bad_answers(respond: Respond) -> None:
    async with raw_server(respond) as port, guarded(total_timeout=2.0, **dev(port)) as client:
        started = time.monotonic()
        with pytest.raises(InstanceBadAnswer) as caught:
            await client.get(f"http://127.0.0.1:{port}/api/meta?i=secret-token")
    assert time.monotonic() - started < 0.5
    assert caught.value.message == InstanceBadAnswer.default_message


# ---------------------------------------------------------------------------------------------------------
# Failures on the wire, each mapped to one InstanceError


def sends(data: bytes, then_wait: float = 0.0) -> Respond:
    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        await asyncio.sleep(then_wait)

    return respond


async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    for _ in range(1000):
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(0.05)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("respond", "error"),
    [
        pytest.param(sends(b""), InstanceUnreachable, id="closed-before-answering"),
        pytest.param(
            sends(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"),
            InstanceUnreachable,
            id="closed-mid-body",
        ),
        pytest.param(
            sends(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"),
            InstanceUnreachable,
            id="closed-mid-chunk",
        ),
        pytest.param(
            sends(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"), InstanceUnreachable, id="closed-in-headers"
        ),
        pytest.param(sends(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), InstanceBadAnswer, id="not-http"),
        pytest.param(sends(b"HTTP/1.1 2000 OK\r\n\r\n"), InstanceBadAnswer, id="bad-status-line"),
        pytest.param(
            sends(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
            InstanceBadAnswer,
            id="two-content-lengths",
        ),
        pytest.param(
            sends(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n", then_wait=1),
            InstanceBadAnswer,
            id="bad-chunk-size",
        ),
        pytest.param(
            sends(
                b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!",
                then_wait=1,
            ),
            InstanceBadAnswer,
            id="corrupt-gzip",
        ),
        pytest.param(
            sends(
                b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip, gzip\r\nContent-Length: 2\r\n\r\nxx", then_wait=1
            ),
            InstanceBadAnswer,
            id="stacked-encodings",
        ),
        pytest.param(sends(b"", then_wait=5), InstanceTimeout, id="never-answers"),
        pytest.param(drip, InstanceTimeout, id="slow-drip-body"),
    ],
)
async def test_wire_failures_become_instance_errors(respond: Respond, error: type[Exception]) -> None:
    async with raw_server(respond) as port:
        async with guarded(total_timeout=0.5, **dev(port)) as client:
            started = time.monotonic()
            with pytest.raises(error) as caught:
                await client.get(f"http://127.0.0.1:{port}/api/i?i=secret-token", headers={"X-Token": "hdr"})
            elapsed = time.monotonic() - started
    assert elapsed < 1.5
    assert type(caught.value) is error
    assert "secret-token" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__


@pytest.mark.anyio
async def test_a_declared_length_over_the_cap_is_refused_before_reading() -> None:
    respond = sends(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n", then_wait=5)
    async with raw_server(respond) as port, guarded(max_response_bytes=LIMIT, **dev(port)) as client:
        started = time.monotonic()
        with pytest.raises(InstanceBadAnswer) as caught:
            await client.get(f"http://127.0.0.1:{port}/")
    assert caught.value.message == TOO_LARGE
    assert time.monotonic() - started < 1


@pytest.mark.anyio
async def test_a_declared_length_without_a_body_is_not_over_the_cap() -> None:
    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (LIMIT + 1))

    async with web_server([web.get("/", big)]) as port:
        async with guarded(max_response_bytes=LIMIT, **dev(port)) as client:
            answer = await client.head(f"http://127.0.0.1:{port}/")
    assert answer.status_code == 200
    assert answer.content == b""


@pytest.mark.anyio
async def test_a_refused_port_is_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once the socket is closed
    async with guarded(**dev(port)) as client:
        with pytest.raises(InstanceUnreachable) as caught:
            await client.get(f"http://127.0.0.1:{port}/api/meta?i=secret-token")
    assert "secret-token" not in str(caught.value)


@pytest.mark.anyio
async def test_connecting_is_bounded_by_the_connect_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        # Fill the accept queue: the kernel then drops further SYNs and connecting hangs.
        with contextlib.ExitStack() as fillers:
            for _ in range(3):
                filler = fillers.enter_context(socket.socket())
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect_ex(("127.0.0.1", port))
            async with guarded(connect_timeout=0.2, total_timeout=3.0, **dev(port)) as client:
                started = time.monotonic()
                with pytest.raises(InstanceTimeout):
                    await client.get(f"http://127.0.0.1:{port}/")
                elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 1.0


# ---------------------------------------------------------------------------------------------------------
# TLS: the certificate is checked against the name even though the connection goes to a checked address


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_tls(ca: trustme.CA, name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    return context


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("certificate_for", "expected"),
    [
        pytest.param("standin.test", 200, id="matching-name"),
        pytest.param("other.test", None, id="other-name"),
    ],
)
async def test_tls_verifies_the_instance_name(
    ca: trustme.CA, client_tls: ssl.SSLContext, certificate_for: str, expected: int | None
) -> None:
    resolver = FakeResolver({"standin.test": [["127.0.0.1"]]})
    async with web_server([web.get("/api/meta", echo)], server_tls(ca, certificate_for)) as port:
        async with guarded(resolver, client_tls, **dev(port, "https", "standin.test")) as client:
            if expected is None:
                with pytest.raises(InstanceUnreachable):
                    await client.get(f"https://standin.test:{port}/api/meta")
            else:
                answer = await client.get(f"https://standin.test:{port}/api/meta")
                assert answer.status_code == expected
                assert answer.json()["headers"]["host"] == f"standin.test:{port}"


@pytest.mark.anyio
async def test_tls_refuses_an_unknown_authority(ca: trustme.CA) -> None:
    resolver = FakeResolver({"standin.test": [["127.0.0.1"]]})
    async with web_server([web.get("/", echo)], server_tls(ca, "standin.test")) as port:
        async with guarded(
            resolver, ssl.create_default_context(), **dev(port, "https", "standin.test")
        ) as client:
            with pytest.raises(InstanceUnreachable):
                await client.get(f"https://standin.test:{port}/")


def test_settings_defaults_follow_the_spec() -> None:
    assert GuardSettings() == GuardSettings(
        connect_timeout=5.0,
        total_timeout=15.0,
        max_response_bytes=4 * 1024 * 1024,
        per_host_connections=16,
        dev_origins=(),
        dns_cache_seconds=10,
        idle_seconds=4.0,
        max_idle_per_origin=None,
        max_idle=256,
    )

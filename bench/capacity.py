"""What one tobira process can carry: idle streams per GiB of memory, and sign-ins per second.

    .venv/bin/python bench/capacity.py [--streams 2000,9900] [--hold-seconds 30]
        [--sign-in-seconds 10] [--sign-in-clients 64] [--json]

Not part of the test suite: run it by hand. Linux only: it reads /proc. Needs nginx and wrk (Debian:
`apt-get install -y nginx-light wrk`). Everything listens on 127.0.0.0/8, every process it starts is stopped
when it ends (and dies with it if it is killed outright), and every step has a time limit: a run takes
about three minutes. tobira runs as operators run it, `tobira serve` (one process, SQLite).

1. Idle streams. tobira relays `/streaming` to an https instance on 127.0.0.2, trusted through a test CA
   (`SSL_CERT_FILE`) that signs through an intermediate, as Let's Encrypt does: a stream is the browser's
   WebSocket to tobira plus tobira's own TLS WebSocket to the instance, opened through the network guard.
   The browsers offer per-message compression, as browsers do. The instance, a small aiohttp server in a
   child process, answers sign-ins at once (a new account and token each time) and holds streams as
   Misskey's server does (no compression; `connect` frames answered); it is not what is measured. tobira
   caps streams neither per session nor per client; each stream here still has a session of its own, as
   if each were another person. After the sign-ins and a few streams opened and closed (what loads on
   first use is then loaded), the script reads tobira's resident memory (VmRSS), opens streams up to each
   count of `--streams` and reads it again once they have settled. At the last count the streams stay
   idle for `--hold-seconds` (WebSocket pings go both ways every 20 s), then a sample of them relays a
   frame both ways, and tobira and the instance must still hold every one. Then all close, and once
   tobira has handed the freed memory back (`app.heap`, 30 s later) the same streams open again: they
   must fit in about the memory they took the first time (at most +10 %), or streams opening and closing
   all day would grow the process. Reported: bytes per stream (RSS added / streams open) and how many
   streams a GiB holds at that rate. tobira holds two sockets a
   stream: the script raises the limit on open files as far as it needs, which past the hard limit takes
   root with CAP_SYS_RESOURCE (the default 9,900 streams fit a hard limit of 20,000).
2. Sign-ins per second. A new tobira process against nginx answering like an instance with fixed answers
   (`bench/proxy_bench.py`'s), with no sign-in rate limit (TOBIRA_LOGIN_RATE_LIMIT=0, so that the limit
   is not what is measured). Each of `--sign-in-clients` clients signs in over and over as a browser does,
   `POST /login` then the callback, where tobira asks the instance's `/api/miauth/{session}/check`; each
   sign-in is timed whole. After a warm-up, `--sign-in-seconds` are counted. Then wrk measures what nginx
   alone answers to that check, at 32 connections, in the same run. The CPU each process used is shown:
   on 2 cores the clients share the machine with tobira.

Exit status: 0 when everything was measured and met its target (at least 10,000 idle streams per GiB, no
error anywhere, every stream still open and relaying after the hold, no growth when opened again); 1 when
a target was missed or there were errors; 2 when the measurement could not be made (a missing tool, too
low a limit on open files, a server that would not start, a step over its time limit).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import shlex
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's `app` and `bench`, not whatever the venv has installed

import aiohttp  # noqa: E402
import trustme  # noqa: E402
from aiohttp import web  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import WebSocketException  # noqa: E402
from websockets.typing import Origin  # noqa: E402

from app import http1  # noqa: E402
from app.heap import TRIM_DELAY_SECONDS  # noqa: E402
from bench import proxy_bench  # noqa: E402
from bench.load import (  # noqa: E402
    STARTUP_SECONDS,
    BenchError,
    cpu_seconds,
    die_with_parent,
    free_port,
    log_tail,
    open_fds,
    percentile,
    rss_kib,
    run_and_report,
    running,
    stop_child,
    tobira_env,
    wait_healthy,
    within,
)

TOBIRA_HOST = "127.0.0.1"  # nginx (proxy_bench's configuration) listens on 127.0.0.1 too
INSTANCE_HOST = "127.0.0.2"
PER_HOST_CONNECTIONS = 32  # tobira's default
GIB = 2**30
TARGET_STREAMS_PER_GIB = 10_000
MAX_REOPENED_GROWTH = 0.10  # the same streams opened again: +40 % without app.heap, +5 % with it
# The most files one process here opens: tobira, two sockets a stream, and a few of its own.
OPEN_FILES_PER_STREAM = 2
OPEN_FILES_SPARE = 128

STEP_SECONDS = 300.0  # the most one step may take: signing in, opening one count of streams, closing
SETTLE_SECONDS = 3.0  # after the last stream of a count is open, before memory is read
WARMUP_STREAMS = 50
AT_ONCE = 64  # streams opened, sampled or closed at once; sign-ins at once for the streams
SAMPLED_STREAMS = 100
FRAME_SECONDS = 10.0
CLIENT_TIMEOUT = 30.0
MAX_ANSWER = 1024 * 1024
SIGN_IN_WARMUP_SECONDS = 3.0
WRK_CONNECTIONS = 32
EXAMPLES = 5


class StepError(Exception):
    """tobira answered a step otherwise than the contract says."""


FAILURES = (StepError, http1.WireError, TimeoutError, WebSocketException, OSError, ValueError)


def describe(error: BaseException) -> str:
    return str(error) if isinstance(error, StepError) else f"{type(error).__name__}: {error}"[:200]


@contextmanager
def open_files(limit: int) -> Iterator[None]:
    """This process (and what it starts) may open `limit` files; the limit is put back on the way out.

    Raising the hard limit takes root with CAP_SYS_RESOURCE; without it, BenchError saying how far it goes.
    """
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(limit, before[0]), max(limit, before[1])))
    except (ValueError, OSError) as error:
        raise BenchError(
            f"cannot allow {limit} open files ({error}): the hard limit is {before[1]} and only root with"
            " CAP_SYS_RESOURCE may raise it; open fewer streams"
        ) from None
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


def nginx_cpu_seconds(pid: int) -> float:
    """CPU seconds of nginx's master `pid` and its workers."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return cpu_seconds(pid) + sum(cpu_seconds(int(child)) for child in children)


async def start_tobira(
    stack: AsyncExitStack, work: Path, instance: str, **extra: str
) -> tuple[str, subprocess.Popen[bytes]]:
    """`tobira serve` (one process) with `instance` as a dev origin; its URL and process."""
    port = free_port(TOBIRA_HOST)
    url = f"http://{TOBIRA_HOST}:{port}"
    folder = work / "tobira"
    folder.mkdir(mode=0o700)
    env = tobira_env(url, [instance], folder / "data", PER_HOST_CONNECTIONS) | extra
    log = folder / "tobira.log"
    process = stack.enter_context(running(proxy_bench.tobira_command(port, 1), log, env))
    await wait_healthy(url, process, log)
    return url, process


# --- the instance for streams, in a child process ----------------------------------------------------------


class StreamingInstance:
    """Answers a sign-in at once (a new account and token each time) and holds `/streaming` sockets."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.tokens: set[str] = set()
        self.streams = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/meta", self.meta)
        app.router.add_get("/.well-known/nodeinfo", self.nodeinfo_links)
        app.router.add_get("/nodeinfo/2.1", self.nodeinfo)
        app.router.add_post("/api/miauth/{session}/check", self.check)
        app.router.add_get("/streaming", self.streaming)
        return app

    async def meta(self, request: web.Request) -> web.Response:
        return web.json_response({**proxy_bench.META, "uri": self.origin})

    async def nodeinfo_links(self, request: web.Request) -> web.Response:
        rel = "http://nodeinfo.diaspora.software/ns/schema/2.1"
        return web.json_response({"links": [{"rel": rel, "href": f"{self.origin}/nodeinfo/2.1"}]})

    async def nodeinfo(self, request: web.Request) -> web.Response:
        software = {"name": "misskey", "version": proxy_bench.META["version"]}
        return web.json_response({"version": "2.1", "software": software, "protocols": ["activitypub"]})

    async def check(self, request: web.Request) -> web.Response:
        index = len(self.tokens)
        token = f"capacity{index:08d}"
        self.tokens.add(token)
        user = {**proxy_bench.USER, "id": f"9cap{index:08d}", "username": f"user{index}"}
        return web.json_response({"ok": True, "token": token, "user": user})

    async def streaming(self, request: web.Request) -> web.StreamResponse:
        """Misskey's streaming endpoint, as far as tobira needs it: the token checked, `connect` answered."""
        if request.query.get("i") not in self.tokens:
            return web.Response(status=401)
        socket = web.WebSocketResponse(compress=False)  # Misskey's server (`ws`) offers no compression
        await socket.prepare(request)
        self.streams += 1
        try:
            async for message in socket:
                frame = json.loads(message.data) if message.type == aiohttp.WSMsgType.TEXT else {}
                body = frame.get("body") if isinstance(frame, dict) else None
                if frame.get("type") == "connect" and isinstance(body, dict) and body.get("pong") is True:
                    await socket.send_json({"type": "connected", "body": {"id": body.get("id")}})
        finally:
            self.streams -= 1
        return socket


def serve_instance(pipe: Connection[Any, Any], host: str, cert: str, key: str) -> None:
    """Child process: the streaming instance over https on `host`, until the parent says "stop"."""
    die_with_parent()
    asyncio.run(_serve_instance(pipe, host, cert, key))


async def _serve_instance(pipe: Connection[Any, Any], host: str, cert: str, key: str) -> None:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    port = free_port(host)
    instance = StreamingInstance(f"https://{host}:{port}")
    runner = web.AppRunner(instance.app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=tls, backlog=1024).start()
    pipe.send(instance.origin)
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, pipe.recv) == "streams":
        pipe.send(instance.streams)
    await runner.cleanup()


@dataclass
class Instance:
    """The streaming instance as the parent sees it."""

    origin: str
    pipe: Connection[Any, Any]

    def streams(self) -> int:
        """How many streams the instance holds open now."""
        self.pipe.send("streams")
        if not self.pipe.poll(10.0):
            raise BenchError("the streaming instance did not say how many streams it holds")
        count: int = self.pipe.recv()
        return count


@contextmanager
def instance_process(host: str, cert: str, key: str) -> Iterator[Instance]:
    """The streaming instance in a child process, stopped (or killed) on the way out."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=serve_instance, args=(theirs, host, cert, key), daemon=True)
    process.start()
    theirs.close()
    try:
        if not ours.poll(STARTUP_SECONDS):
            raise BenchError("the streaming instance did not start")
        yield Instance(ours.recv(), ours)
    finally:
        stop_child(process, ours)


# --- browsers ------------------------------------------------------------------------------------------


class Browser:
    """A browser's one keep-alive connection to tobira, cookies carried by hand.

    It speaks through tobira's own HTTP/1.1 client (`app.http1`): aiohttp cost this script about three
    times the CPU per sign-in, taken from the two cores that tobira needs too.
    """

    def __init__(self, tobira: str) -> None:
        self.origin = tobira
        self.address = urlsplit(tobira).hostname or "", urlsplit(tobira).port or 80
        self._connection: http1.Connection | None = None

    def head(self, method: str, target: str, *lines: str) -> bytes:
        """A request's head: `lines` are extra header lines ("Name: value")."""
        host = f"{self.address[0]}:{self.address[1]}"
        return "\r\n".join([f"{method} {target} HTTP/1.1", f"Host: {host}", *lines, "", ""]).encode()

    async def exchange(self, head: bytes, body: bytes = b"") -> http1.Answer:
        if self._connection is not None and not self._connection.reusable:
            self.close()
        if self._connection is None:
            loop = asyncio.get_running_loop()
            _, self._connection = await loop.create_connection(
                lambda: http1.Connection(MAX_ANSWER), *self.address
            )
        return await self._connection.exchange(head, body, len(body))

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def set_cookies(answer: http1.Answer) -> dict[str, str]:
    """The cookies `answer` sets, by name."""
    found = {}
    for name, value in answer.headers:
        if name == b"set-cookie":
            pair = value.decode("latin-1").split(";", 1)[0]
            found[pair.split("=", 1)[0].strip()] = pair.partition("=")[2].strip()
    return found


async def sign_in(browser: Browser, instance: str) -> str:
    """A MiAuth sign-in as a browser makes it, the instance approving at once; the `tobira` cookie's value.

    `instance` is what the person types (host:port). Raises StepError on a wrong answer.
    """
    form = urlencode({"instance": instance}).encode()
    async with asyncio.timeout(CLIENT_TIMEOUT):
        started = await browser.exchange(
            browser.head(
                "POST",
                "/login",
                f"Origin: {browser.origin}",
                "Sec-Fetch-Site: same-origin",
                "Content-Type: application/x-www-form-urlencoded",
                f"Content-Length: {len(form)}",
            ),
            form,
        )
        consent = (started.header(b"location") or b"").decode("latin-1")
        if started.status != 303 or "/miauth/" not in consent:
            raise StepError(f"POST /login: {started.status} to {consent[:80]!r}")
        session = urlsplit(consent).path.rsplit("/", 1)[-1]
        pending = "; ".join(f"{name}={value}" for name, value in set_cookies(started).items())
        target = f"/callback?{urlencode({'session': session})}"
        finished = await browser.exchange(browser.head("GET", target, f"Cookie: {pending}"))
    cookie = set_cookies(finished).get("tobira")
    if finished.status != 303 or not cookie:
        raise StepError(f"GET /callback: {finished.status}")
    return cookie


@dataclass
class SignInLog:
    """Sign-ins made by a set of clients: the cookies won, each one's seconds, what went wrong."""

    cookies: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


async def signing_in(
    tobira: str, instance: str, clients: int, keep_going: Callable[[], bool], into: SignInLog
) -> None:
    """`clients` browsers sign in over and over, each starting another while `keep_going()`."""

    async def browser() -> None:
        client = Browser(tobira)
        try:
            while keep_going():
                began = time.perf_counter()
                try:
                    into.cookies.append(await sign_in(client, instance))
                except FAILURES as error:
                    into.errors[describe(error)] += 1
                    continue
                into.seconds.append(time.perf_counter() - began)
        finally:
            client.close()

    await asyncio.gather(*(browser() for _ in range(clients)))


def take(count: int) -> Callable[[], bool]:
    """True `count` times, then False."""
    tickets = iter(range(count))
    return lambda: next(tickets, None) is not None


def until(deadline: float) -> Callable[[], bool]:
    """True until the monotonic clock reaches `deadline`."""
    return lambda: time.monotonic() < deadline


# --- 1. idle streams -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryPoint:
    """tobira's resident memory and open files with `streams` streams open, `when`."""

    when: str
    streams: int
    rss_kib: int
    fds: int


@dataclass(frozen=True)
class Lived:
    """Whether the streams lived through the hold: still open at both ends, and still relaying."""

    open_after_hold: int  # at the browsers' end
    instance_streams: int  # at the instance
    sampled: int
    relayed: int  # sampled streams that carried a frame both ways


@dataclass
class Streams:
    """Idle streams and tobira's memory at each count, and whether they all lived."""

    points: list[MemoryPoint]  # before, at each count, after the hold, all closed, all opened again
    bytes_per_stream: int  # (RSS with the most streams - RSS before) / the most streams
    streams_per_gib: int
    rss_mib_at_most: float
    reopened_growth_pct: float  # RSS with the most streams opened again, against the first time
    lived: Lived
    sign_ins: int
    errors: int
    ok: bool
    error_examples: list[str] = field(default_factory=list)


class StreamClients:
    """Streams to tobira, each with the cookie of a session of its own, as many browsers hold them."""

    def __init__(self, tobira: str, cookies: list[str]) -> None:
        self.url = "ws" + tobira.removeprefix("http") + "/streaming"
        self.origin = Origin(tobira)
        self.cookies = cookies
        self.open: list[ClientConnection] = []
        self.errors: Counter[str] = Counter()

    async def _each(self, steps: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
        """Every step's result (None for a step that failed, counted), `AT_ONCE` under way at once."""
        gate = asyncio.Semaphore(AT_ONCE)

        async def one(step: Callable[[], Awaitable[Any]]) -> Any:
            async with gate:
                try:
                    return await step()
                except FAILURES as error:
                    self.errors[describe(error)] += 1
                    return None

        return await asyncio.gather(*(one(step) for step in steps))

    async def _stream(self, cookie: str) -> ClientConnection:
        """A browser's idle stream: it answers tobira's pings, as a browser does, and sends none."""
        return await connect(
            self.url,
            origin=self.origin,
            additional_headers={"Cookie": f"tobira={cookie}"},
            ping_interval=None,
            open_timeout=CLIENT_TIMEOUT,
        )

    async def open_to(self, count: int) -> None:
        """Open streams until `count` are (the cookies are used in order: the first ones again after
        `close_all`)."""
        fresh = self.cookies[len(self.open) : count]
        opened = await self._each([lambda cookie=cookie: self._stream(cookie) for cookie in fresh])
        self.open.extend(stream for stream in opened if stream is not None)

    async def relay(self, sample: list[ClientConnection]) -> int:
        """How many streams of `sample` carry a `connect` frame to the instance and its answer back."""

        async def round_trip(index: int, stream: ClientConnection) -> bool:
            frame = {"type": "connect", "body": {"channel": "main", "id": f"c{index}", "pong": True}}
            await stream.send(json.dumps(frame))
            async with asyncio.timeout(FRAME_SECONDS):
                answer = json.loads(await stream.recv())
            return bool(answer == {"type": "connected", "body": {"id": f"c{index}"}})

        trips = [lambda i=i, stream=stream: round_trip(i, stream) for i, stream in enumerate(sample)]
        return sum(1 for outcome in await self._each(trips) if outcome)

    async def close_all(self) -> None:
        await self._each([stream.close for stream in self.open])
        self.open.clear()


async def settled(pid: int, when: str, streams: int) -> MemoryPoint:
    """tobira's memory once the streams just opened or closed have settled."""
    await asyncio.sleep(SETTLE_SECONDS)
    return MemoryPoint(when, streams, rss_kib(pid), open_fds(pid))


def instance_certificate(work: Path) -> tuple[Path, Path, Path]:
    """A test CA and the instance's certificate from it: (CA file, certificate chain, key)."""
    ca = trustme.CA()
    issued = ca.create_child_ca().issue_cert(INSTANCE_HOST)  # a chain of two, as Let's Encrypt sends
    files = work / "ca.pem", work / "instance.pem", work / "instance.key"
    ca.cert_pem.write_to_path(str(files[0]))
    for index, pem in enumerate(issued.cert_chain_pems):
        pem.write_to_path(str(files[1]), append=index > 0)
    issued.private_key_pem.write_to_path(str(files[2]))
    return files


async def idle_streams(args: argparse.Namespace, say: Callable[[str], None]) -> Streams:
    """Phase 1: the instance and tobira started, one session per stream signed in, streams measured."""
    async with AsyncExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tobira-capacity-")))
        ca, cert, key = instance_certificate(work)
        instance = stack.enter_context(instance_process(INSTANCE_HOST, str(cert), str(key)))
        tobira, process = await start_tobira(stack, work, instance.origin, SSL_CERT_FILE=str(ca))
        say(f"streams: {args.streams[-1]} sign-ins at {instance.origin}")
        log = SignInLog()
        authority = instance.origin.split("://")[1]
        signed_in = signing_in(tobira, authority, AT_ONCE, take(args.streams[-1]), log)
        await within(STEP_SECONDS, "signing in", signed_in)
        clients = StreamClients(tobira, log.cookies)
        stack.push_async_callback(clients.close_all)
        points, lived = await measure_streams(args, clients, instance, process.pid, say)
        if process.poll() is not None:
            tail = log_tail(work / "tobira" / "tobira.log")
            raise BenchError(f"tobira exited with status {process.returncode}:\n{tail}")
    return streams_report(args, points, lived, log.errors + clients.errors, len(log.cookies))


async def measure_streams(
    args: argparse.Namespace, clients: StreamClients, instance: Instance, pid: int, say: Callable[[str], None]
) -> tuple[list[MemoryPoint], Lived]:
    """tobira's memory before, at each count, after the hold, once all are closed and once all are open
    again (the same streams: memory that closed streams freed should serve them); how they lived."""
    await within(STEP_SECONDS, "warming up", clients.open_to(WARMUP_STREAMS))
    await clients.relay(clients.open)
    await within(STEP_SECONDS, "closing", clients.close_all())
    points = [await settled(pid, "before", 0)]
    for count in args.streams:
        say(f"streams: opening up to {count}")
        await within(STEP_SECONDS, f"opening {count} streams", clients.open_to(count))
        points.append(await settled(pid, "opened", len(clients.open)))
    say(f"streams: {len(clients.open)} open, idle for {args.hold_seconds:g} s")
    await asyncio.sleep(args.hold_seconds)
    points.append(
        MemoryPoint(f"after {args.hold_seconds:g} s idle", len(clients.open), rss_kib(pid), open_fds(pid))
    )
    still_open = sum(1 for stream in clients.open if stream.close_code is None)
    held = instance.streams()
    sample = clients.open[:: max(1, len(clients.open) // SAMPLED_STREAMS)][:SAMPLED_STREAMS]
    relayed = await within(STEP_SECONDS, "relaying", clients.relay(sample))
    say(f"streams: closing them all, waiting {TRIM_DELAY_SECONDS:g} s (tobira then hands freed memory back)")
    await within(STEP_SECONDS, "closing", clients.close_all())
    await asyncio.sleep(TRIM_DELAY_SECONDS)
    points.append(await settled(pid, f"all closed, {TRIM_DELAY_SECONDS:g} s later", 0))
    say(f"streams: opening {args.streams[-1]} again")
    await within(STEP_SECONDS, "opening them again", clients.open_to(args.streams[-1]))
    points.append(await settled(pid, "opened again", len(clients.open)))
    return points, Lived(still_open, held, len(sample), relayed)


def streams_report(
    args: argparse.Namespace, points: list[MemoryPoint], lived: Lived, errors: Counter[str], sign_ins: int
) -> Streams:
    """Phase 1's figures from what was read (`points` as `measure_streams` reads them)."""
    before, at_most, reopened = points[0], points[len(args.streams)], points[-1]
    per_stream = (at_most.rss_kib - before.rss_kib) * 1024 // max(1, at_most.streams)
    per_gib = GIB // max(1, per_stream)
    growth = (reopened.rss_kib - at_most.rss_kib) / at_most.rss_kib if at_most.rss_kib else 0.0
    count = sum(errors.values())
    return Streams(
        points=points,
        bytes_per_stream=per_stream,
        streams_per_gib=per_gib,
        rss_mib_at_most=round(at_most.rss_kib / 1024, 1),
        reopened_growth_pct=round(growth * 100, 1),
        lived=lived,
        sign_ins=sign_ins,
        errors=count,
        ok=(
            count == 0
            and per_gib >= TARGET_STREAMS_PER_GIB
            and at_most.streams == reopened.streams == args.streams[-1]
            and lived.open_after_hold == lived.instance_streams == at_most.streams
            and lived.relayed == lived.sampled
            and growth <= MAX_REOPENED_GROWTH
        ),
        error_examples=[f"{n} x {message}" for message, n in errors.most_common(EXAMPLES)],
    )


# --- 2. sign-ins per second ---------------------------------------------------------------------------


@dataclass
class SignIns:
    """Sign-ins back to back by many clients for a fixed time, and what nginx alone answers to the check."""

    clients: int
    seconds: float
    sign_ins: int
    errors: int
    sign_ins_per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    cpu_pct: dict[str, float]  # % of one core, per process, while counting (2 CPUs: 200 in all)
    tobira_cpu_ms_per_sign_in: float
    instance_alone: proxy_bench.WrkResult  # nginx answering the check, wrk at WRK_CONNECTIONS
    error_examples: list[str] = field(default_factory=list)


def start_nginx(stack: AsyncExitStack, work: Path) -> tuple[int, int]:
    """nginx with `bench/proxy_bench.py`'s configuration; the instance's port, and nginx's pid."""
    nginx = proxy_bench.find_nginx()
    upstream_port, proxy_port = free_port(TOBIRA_HOST), free_port(TOBIRA_HOST)
    folder = work / "nginx"
    folder.mkdir()
    for path in (work, folder):  # nginx's workers (nobody, when we are root) must reach their folders
        path.chmod(0o755)
    config = folder / "nginx.conf"
    config.write_text(proxy_bench.nginx_config(folder, upstream_port, proxy_port))
    log = folder / "nginx.out"
    command = [nginx, "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(config)]
    server = stack.enter_context(running(command, log, dict(os.environ)))
    proxy_bench.wait_for_port(upstream_port, server, log, "nginx")  # blocks briefly: nothing else runs yet
    return upstream_port, server.pid


async def sign_ins(args: argparse.Namespace, say: Callable[[str], None]) -> SignIns:
    """Phase 2: nginx as the instance and a new tobira; sign-ins counted; then nginx's check alone."""
    async with AsyncExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tobira-capacity-")))
        port, nginx = start_nginx(stack, work)
        authority = f"{TOBIRA_HOST}:{port}"
        tobira, process = await start_tobira(stack, work, f"http://{authority}")
        clients, seconds = args.sign_in_clients, args.sign_in_seconds
        say(f"sign-ins: {clients} clients, {SIGN_IN_WARMUP_SECONDS:g} s warm-up, then {seconds:g} s counted")
        warmup = until(time.monotonic() + SIGN_IN_WARMUP_SECONDS)
        await within(STEP_SECONDS, "warming up", signing_in(tobira, authority, clients, warmup, SignInLog()))
        readers: dict[str, Callable[[], float]] = {
            "tobira": lambda: cpu_seconds(process.pid),
            "nginx": lambda: nginx_cpu_seconds(nginx),
            "clients (this script)": lambda: cpu_seconds(os.getpid()),
        }
        cpu_before = {name: read() for name, read in readers.items()}
        log, began = SignInLog(), time.monotonic()
        counted = signing_in(tobira, authority, clients, until(began + seconds), log)
        await within(seconds + STEP_SECONDS, "signing in", counted)
        elapsed = time.monotonic() - began
        cpu = {name: round(100 * (read() - cpu_before[name]) / elapsed, 1) for name, read in readers.items()}
        say(f"sign-ins: nginx alone answering the check, wrk, {WRK_CONNECTIONS} connections, {seconds:g} s")
        script = work / "check.lua"
        script.write_text(proxy_bench.wrk_script({"Content-Type": "application/json"}))
        check = f"http://{authority}/api/miauth/capacity/check"
        # Blocks this loop on purpose: nothing else of this script runs while wrk measures.
        alone = proxy_bench.run_wrk("nginx", check, WRK_CONNECTIONS, seconds, script)
    milliseconds = [value * 1000 for value in log.seconds]
    return SignIns(
        clients=clients,
        seconds=round(elapsed, 2),
        sign_ins=len(log.seconds),
        errors=sum(log.errors.values()),
        sign_ins_per_second=round(len(log.seconds) / elapsed, 1),
        p50_ms=round(percentile(milliseconds, 50), 2),
        p95_ms=round(percentile(milliseconds, 95), 2),
        p99_ms=round(percentile(milliseconds, 99), 2),
        max_ms=round(max(milliseconds, default=0.0), 2),
        cpu_pct=cpu,
        tobira_cpu_ms_per_sign_in=round(cpu["tobira"] * elapsed * 10 / max(1, len(log.seconds)), 3),
        instance_alone=alone,
        error_examples=[f"{n} x {message}" for message, n in log.errors.most_common(EXAMPLES)],
    )


# --- the whole run --------------------------------------------------------------------------------------


@dataclass
class Report:
    command: str
    tobira_command: str
    cpus: int
    python: str
    streams: Streams
    sign_ins: SignIns
    ok: bool


def print_report(report: Report) -> None:
    one, two = report.streams, report.sign_ins
    print(f"\ncapacity of one tobira process ({report.cpus} CPUs, Python {report.python})")
    print("\n1. idle streams: the browser's WebSocket to tobira + tobira's TLS WebSocket to the instance")
    print(f"  {'streams':>9}{'RSS MiB':>10}{'open fds':>10}  when")
    for point in one.points:
        print(f"  {point.streams:>9,}{point.rss_kib / 1024:>10.1f}{point.fds:>10,}  {point.when}")
    print(
        f"  {one.bytes_per_stream:,} bytes per stream: {one.streams_per_gib:,} streams per GiB"
        f" (target >= {TARGET_STREAMS_PER_GIB:,}); opened again: RSS {one.reopened_growth_pct:+.1f} %"
        f" (<= +{MAX_REOPENED_GROWTH:.0%})"
    )
    lived = one.lived
    print(
        f"  after the hold: {lived.open_after_hold:,} open at the browsers,"
        f" {lived.instance_streams:,} at the instance; {lived.relayed} of {lived.sampled} sampled relayed"
        f" a frame both ways; {one.errors} errors"
    )
    for example in one.error_examples:
        print(f"    {example}")
    alone = two.instance_alone
    print(
        f"\n2. sign-ins: {two.clients} clients for {two.seconds:g} s, each POST /login then the callback"
        " (where tobira asks the instance's /check); TOBIRA_LOGIN_RATE_LIMIT=0"
    )
    print(f"  {'sign-ins':<32}{two.sign_ins:>10,}")
    print(f"  {'sign-ins/s':<32}{two.sign_ins_per_second:>10,.1f}")
    print(f"  {'p50 / p95 / p99 / max ms':<32}  {two.p50_ms} / {two.p95_ms} / {two.p99_ms} / {two.max_ms}")
    print(f"  {'errors':<32}{two.errors:>10}")
    print(f"  {'tobira CPU per sign-in, ms':<32}{two.tobira_cpu_ms_per_sign_in:>10.3f}")
    cpu = ", ".join(f"{name} {pct:.0f}" for name, pct in two.cpu_pct.items())
    print(f"  {'CPU, % of one core':<32}  {cpu}")
    print(
        f"  {f'nginx alone, /check, {WRK_CONNECTIONS} conns':<32}{alone.requests_per_second:>10,.0f} req/s"
        f"  (p50 {alone.p50_ms:.3f} ms, p99 {alone.p99_ms:.3f} ms)"
    )
    for example in two.error_examples:
        print(f"    {example}")
    print(f"\nresult: {'PASS' if report.ok else 'FAIL'}")
    print(f"tobira: {report.tobira_command}")
    print(f"reproduce: {report.command}")


async def run(args: argparse.Namespace, command: str, say: Callable[[str], None]) -> Report:
    """Both phases, one after the other, each with servers of its own."""
    first = await idle_streams(args, say)
    second = await sign_ins(args, say)
    return Report(
        command=command,
        tobira_command=shown_tobira_command(),
        cpus=os.cpu_count() or 0,
        python=sys.version.split()[0],
        streams=first,
        sign_ins=second,
        ok=first.ok and second.errors == 0,
    )


def shown_tobira_command() -> str:
    """How tobira runs here (`tobira serve`, one process), its port left out."""
    command = [".venv/bin/python", *proxy_bench.tobira_command(0, 1)[1:]]
    command[command.index("--port") + 1] = "PORT"
    return shlex.join(command)


def counts(text: str) -> list[int]:
    """argparse type: increasing stream counts, "2000,9900"."""
    try:
        values = [int(value) for value in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of counts") from None
    if not values or values[0] < 1 or values != sorted(set(values)):
        raise argparse.ArgumentTypeError(f"{text!r}: counts must be positive and increasing")
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--streams", type=counts, default=[2000, 9900], help="stream counts (2000,9900)")
    parser.add_argument("--hold-seconds", type=float, default=30.0, help="the most streams held idle (30)")
    parser.add_argument("--sign-in-seconds", type=float, default=10.0, help="sign-ins counted for (10)")
    parser.add_argument("--sign-in-clients", type=int, default=64, help="clients signing in at once (64)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    args = parser.parse_args()
    if args.hold_seconds < 0 or args.sign_in_seconds <= 0 or args.sign_in_clients < 1:
        parser.error("--hold-seconds must not be negative, --sign-in-seconds and --sign-in-clients positive")
    options = [
        "--streams",
        ",".join(map(str, args.streams)),
        "--hold-seconds",
        f"{args.hold_seconds:g}",
        "--sign-in-seconds",
        f"{args.sign_in_seconds:g}",
        "--sign-in-clients",
        str(args.sign_in_clients),
    ]
    command = shlex.join(
        [".venv/bin/python", "bench/capacity.py", *options] + (["--json"] if args.json else [])
    )

    def say(message: str) -> None:
        print(f"[capacity] {message}", file=sys.stderr, flush=True)

    with open_files(OPEN_FILES_PER_STREAM * args.streams[-1] + OPEN_FILES_SPARE):
        return run_and_report(
            "capacity", lambda: run(args, command, say), as_json=args.json, show=print_report
        )


if __name__ == "__main__":
    sys.exit(main())

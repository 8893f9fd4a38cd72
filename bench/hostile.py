"""Hostile names and hostile answers next to honest people: does anyone else slow down?

    .venv/bin/python bench/hostile.py [--seconds 8] [--calls 10] [--names 50] [--answers 32] [--rounds 3]

Not part of the test suite: run it by hand, as root (it needs `unshare --mount` and port 53 on loopback).
Linux only. Everything listens on 127.0.0.0/8; every process it starts is stopped when it ends (and dies
with it if it is killed outright); every phase is bounded, so a run takes about a minute.

What runs:
- tobira as one real uvicorn process inside a mount namespace of its own (`unshare --mount`) whose
  /etc/resolv.conf names a "DNS server" on 127.0.0.77:53 that reads every question and never answers;
- the stand-in Misskey server (`app.standin`) on 127.0.0.2, in a child process: a dev instance by the name
  `standin.bench`, which the namespace's /etc/hosts gives (so tobira resolves it with the system's
  resolver, as an operator's dev host, whenever its 10 s cache of checked answers has run out; the
  measuring browsers are told the address directly);
- a hostile instance on 127.0.0.4, in a child process, listening on `--answers` ports (all dev instances):
  on half of them `api/meta` is answered with a header line that never ends, on the other half with a gzip
  body followed by bytes that never end; anything else is a quick 404.

The phases:
1. honest people, alone and among dead names, in `--slices` alternating slices (so that whatever else the
   machine is doing weighs on both sides alike), `--seconds` in all on each side. Honest: one person after
   another signs in at the stand-in (form, consent, callback, with discovery each time:
   TOBIRA_DISCOVERY_CACHE_SECONDS=0) and makes `--calls` proxy calls (`POST /api/i`), each timed. Dead
   names: a child process keeps `--names` look-ups (`/lookup?instance=`) of names that never answer under
   way, from client addresses 127.0.0.10 and up, four per address (the per-client cap), each replaced by
   a look-up of a new name when it ends. Latency must not change; tobira's CPU use is shown beside it.
2. hostile answers: `--rounds` times, `--answers` look-ups at once of the hostile instance's origins; each
   must end in 502 at once. tobira's peak resident memory (VmHWM) before and after, and the round trips
   of `GET /healthz` sent every 10 ms during the phase and for a quiet second before it (it is answered
   from the event loop, so the loop's stalls show there, and so does the machine's load).

`--tobira-root DIR` runs tobira from another checkout (e.g. `git archive` of an older commit) to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gzip
import multiprocessing
import os
import shlex
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's `app` and `bench`, not whatever the venv has installed

import httpx  # noqa: E402

from app.guard import GuardSettings, build_guard  # noqa: E402
from app.hosts import DevOrigin  # noqa: E402
from bench.load import (  # noqa: E402
    CLIENT_TIMEOUT,
    FAILURES,
    BenchError,
    Browser,
    Site,
    StepError,
    account,
    cpu_seconds,
    describe,
    die_with_parent,
    free_port,
    percentile,
    running,
    standin_process,
    tobira_env,
    wait_healthy,
)

TOBIRA_HOST = "127.0.0.1"
STANDIN_HOST = "127.0.0.2"
HOSTILE_HOST = "127.0.0.4"
DNS_HOST = "127.0.0.77"
STANDIN_NAME = "standin.bench"
FIRST_CLIENT = 10  # hostile look-ups come from 127.0.0.10 and up
PER_CLIENT = 4  # TOBIRA_RESOLVE_PER_CLIENT's default
NEVER = "never-answers.tobira-bench.net"
PROBE_SECONDS = 0.01
CHUNK = b" " * 65536
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
HOSTILE_BYTES = 64 * 1024 * 1024  # the most one hostile answer sends before it gives up on its own
PHASE_LIMIT = 60.0
STARTUP_SECONDS = 20.0
RESOLVE_SECONDS = 3.0  # TOBIRA_RESOLVE_TIMEOUT's default
FLOOD_SETTLE_SECONDS = RESOLVE_SECONDS + 0.5
ACCOUNTS = 50


# --- the DNS server that never answers -------------------------------------------------------------------


class Silent(asyncio.DatagramProtocol):
    """Reads every question, answers none."""

    def __init__(self) -> None:
        self.questions = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.questions += 1


# --- the hostile instance, in a child process ------------------------------------------------------------


def serve_hostile(pipe: Connection[Any, Any], host: str, count: int) -> None:
    """Child process: `count` ports, the first half with an endless header, the rest gzip then endless."""
    die_with_parent()
    asyncio.run(_hostile(pipe, host, count))


async def _hostile(pipe: Connection[Any, Any], host: str, count: int) -> None:
    sent = Counter[str]()

    def handler(kind: str) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                request = await reader.readuntil(b"\r\n\r\n")
                if not request.startswith(b"POST /api/meta "):
                    writer.write(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
                    )
                    await writer.drain()
                    return
                sent["answers"] += 1
                if kind == "endless-header":
                    writer.write(b"HTTP/1.1 200 OK\r\nX-Endless: ")
                    piece = b"a" * len(CHUNK)
                else:
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n" + _chunk(gzip.compress(b'{"version":"1"}'))
                    )
                    piece = _chunk(CHUNK)
                for _ in range(HOSTILE_BYTES // len(piece)):
                    writer.write(piece)
                    sent["bytes"] += len(piece)
                    await writer.drain()
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                pass
            finally:
                writer.close()

        return handle

    servers = []
    for index in range(count):
        kind = "endless-header" if index < count // 2 else "gzip-endless"
        servers.append(await asyncio.start_server(handler(kind), host, 0))
    pipe.send([server.sockets[0].getsockname()[1] for server in servers])
    loop = asyncio.get_running_loop()
    while not await loop.run_in_executor(None, pipe.poll, 0.2):
        pass
    pipe.recv()
    pipe.send(dict(sent))


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@contextlib.contextmanager
def hostile_process(host: str, count: int) -> Iterator[tuple[list[int], Callable[[], dict[str, int]]]]:
    """The hostile instance's ports, and a function that stops it and says what it sent."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=serve_hostile, args=(theirs, host, count), daemon=True)
    process.start()
    theirs.close()
    result: dict[str, int] = {}

    def stop() -> dict[str, int]:
        if not result and process.is_alive():
            ours.send("stop")
            if ours.poll(10.0):
                result.update(ours.recv())
        return result

    try:
        if not ours.poll(STARTUP_SECONDS):
            raise BenchError("the hostile instance did not start")
        yield ours.recv(), stop
    finally:
        stop()
        process.join(5.0)
        if process.is_alive():
            process.kill()
            process.join(5.0)


# --- measurements ----------------------------------------------------------------------------------------


class ByName(httpx.AsyncBaseTransport):
    """Sends requests for `name` to `address` (the Host header still says `name`), like an /etc/hosts line."""

    def __init__(self, name: str, address: str) -> None:
        self._name, self._address = name, address
        self._wire = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == self._name:
            request.url = request.url.copy_with(host=self._address)
        return await self._wire.handle_async_request(request)

    async def aclose(self) -> None:
        await self._wire.aclose()


class NamedSite(Site):
    """`Site` with the stand-in known by name: browsers reach it through `ByName`."""

    def browser(self, user: str) -> Browser:
        transport = ByName(STANDIN_NAME, STANDIN_HOST)
        client = httpx.AsyncClient(transport=transport, timeout=CLIENT_TIMEOUT, trust_env=False)
        return Browser(user, client)


@dataclass
class Honest:
    """How long honest people's sign-ins and proxy calls took, and what went wrong."""

    sign_ins: list[float] = field(default_factory=list)
    calls: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0  # wall-clock time measured
    tobira_cpu: float = 0.0  # CPU seconds tobira used meanwhile

    def cpu_share(self) -> str:
        return f"tobira used {self.tobira_cpu / max(self.seconds, 1e-9):.0%} of a core"


def latency_line(what: str, seconds: list[float]) -> str:
    return (
        f"{what:<28} n={len(seconds):<4} p50 {percentile(seconds, 50) * 1000:6.1f} ms  "
        f"p95 {percentile(seconds, 95) * 1000:6.1f} ms  max {max(seconds, default=0) * 1000:6.1f} ms"
    )


async def honest(site: Site, pid: int, seconds: float, calls: int, into: Honest) -> None:
    """For `seconds`: a person signs in, then makes `calls` proxy calls; again and again."""
    cpu_before, began_all = cpu_seconds(pid), time.monotonic()
    deadline = began_all + seconds
    user = 0
    while time.monotonic() < deadline:
        browser = site.browser(account(user % ACCOUNTS))
        user += 1
        began = time.perf_counter()
        try:
            await site.sign_in(browser)
            into.sign_ins.append(time.perf_counter() - began)
            for _ in range(calls):
                began = time.perf_counter()
                answer = await browser.client.post(
                    f"{site.tobira}/api/i", content=b"{}", headers=site.api_headers
                )
                if answer.status_code != 200:
                    raise StepError(f"POST /api/i: {answer.status_code}")
                into.calls.append(time.perf_counter() - began)
        except FAILURES as error:
            into.errors[describe(error)] += 1
        finally:
            await browser.client.aclose()
    into.seconds += time.monotonic() - began_all
    into.tobira_cpu += cpu_seconds(pid) - cpu_before


@dataclass
class Flood:
    statuses: Counter[str] = field(default_factory=Counter)
    started: int = 0
    watching: bool = False
    asked_during: int = 0  # questions the silent DNS server got while honest people were measured
    fewest: int | None = None  # the fewest look-ups under way at any look while `watching`

    def look(self) -> None:
        if self.watching:
            under_way = self.started - self.statuses.total()
            self.fewest = under_way if self.fewest is None else min(self.fewest, under_way)


@contextlib.asynccontextmanager
async def never_answering_names(tobira: str, names: int, flood: Flood) -> AsyncIterator[None]:
    """`names` look-ups of names that never answer kept under way, from several client addresses."""
    stop = asyncio.Event()
    headers = {"Origin": tobira, "Sec-Fetch-Site": "same-origin"}

    async def keep_looking(worker: int) -> None:
        address = f"127.0.0.{FIRST_CLIENT + worker // PER_CLIENT}"
        transport = httpx.AsyncHTTPTransport(local_address=address)
        async with httpx.AsyncClient(transport=transport, timeout=CLIENT_TIMEOUT, trust_env=False) as client:
            # Spread over one resolution's time bound: a steady flood, not waves that start and end together.
            await asyncio.sleep(worker * RESOLVE_SECONDS / names)
            while not stop.is_set():
                flood.started += 1
                name = f"n{flood.started}.{NEVER}"
                try:
                    answer = await client.get(f"{tobira}/lookup", params={"instance": name}, headers=headers)
                    flood.statuses[str(answer.status_code)] += 1
                except httpx.HTTPError as error:
                    flood.statuses[type(error).__name__] += 1

    async def watch() -> None:
        while not stop.is_set():
            flood.look()
            await asyncio.sleep(0.05)

    workers = [asyncio.create_task(keep_looking(index)) for index in range(names)]
    watcher = asyncio.create_task(watch())
    try:
        yield
    finally:
        stop.set()
        await watcher
        await asyncio.wait(workers, timeout=PHASE_LIMIT)
        for worker in workers:
            worker.cancel()


def serve_flood(pipe: Connection[Any, Any], tobira: str, names: int) -> None:
    """Child process: the flood of dead names, on its own cores' share rather than the measuring client's."""
    die_with_parent()
    asyncio.run(_flood(pipe, tobira, names))


async def _flood(pipe: Connection[Any, Any], tobira: str, names: int) -> None:
    flood = Flood()
    async with never_answering_names(tobira, names, flood):
        await asyncio.sleep(FLOOD_SETTLE_SECONDS)
        flood.watching = True
        pipe.send("ready")
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # told to stop
        flood.watching = False
    pipe.send((flood.started, dict(flood.statuses), flood.fewest))


@contextlib.asynccontextmanager
async def flooding(tobira: str, names: int, totals: Flood) -> AsyncIterator[None]:
    """The flood in a child process, under way and steady when this yields; its figures added to `totals`."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=serve_flood, args=(theirs, tobira, names), daemon=True)
    process.start()
    theirs.close()
    loop = asyncio.get_running_loop()
    try:
        if not await loop.run_in_executor(None, ours.poll, STARTUP_SECONDS + FLOOD_SETTLE_SECONDS):
            raise BenchError("the flood of dead names did not start")
        ours.recv()
        yield
        ours.send("stop")
        if not await loop.run_in_executor(None, ours.poll, PHASE_LIMIT):
            raise BenchError("the flood of dead names did not stop")
        started, statuses, fewest = ours.recv()
        totals.started += started
        totals.statuses.update(statuses)
        totals.fewest = fewest if totals.fewest is None else min(totals.fewest, fewest or 0)
    finally:
        process.join(5.0)
        if process.is_alive():
            process.kill()
            process.join(5.0)


@dataclass
class Probe:
    rtts: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


@contextlib.asynccontextmanager
async def probing(tobira: str) -> AsyncIterator[Probe]:
    """`GET /healthz` every PROBE_SECONDS, each round trip recorded."""
    probe = Probe()
    stop = asyncio.Event()

    async def loop() -> None:
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT, trust_env=False) as client:
            await client.get(f"{tobira}/healthz")  # not counted: the client's own first-use costs
            while not stop.is_set():
                began = time.perf_counter()
                try:
                    await client.get(f"{tobira}/healthz")
                except httpx.HTTPError as error:
                    probe.errors[type(error).__name__] += 1
                probe.rtts.append(time.perf_counter() - began)
                await asyncio.sleep(PROBE_SECONDS)

    task = asyncio.create_task(loop())
    try:
        yield probe
    finally:
        stop.set()
        await asyncio.wait_for(task, PHASE_LIMIT)


def vm_kib(pid: int, field_name: str) -> int:
    """A field of /proc/PID/status in KiB; 0 once the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0
    for line in status.splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


async def hostile_answers(tobira: str, ports: list[int], rounds: int) -> tuple[Counter[str], list[float]]:
    """`rounds` times, a look-up of every hostile origin at once: their statuses and round times."""
    statuses: Counter[str] = Counter()
    durations: list[float] = []
    headers = {"Origin": tobira, "Sec-Fetch-Site": "same-origin"}
    async with httpx.AsyncClient(
        timeout=CLIENT_TIMEOUT, trust_env=False, limits=httpx.Limits(max_connections=len(ports))
    ) as client:

        async def one(port: int) -> None:
            instance = f"http://{HOSTILE_HOST}:{port}"
            try:
                answer = await client.get(f"{tobira}/lookup", params={"instance": instance}, headers=headers)
            except httpx.HTTPError as error:
                statuses[type(error).__name__] += 1
                return
            statuses[str(answer.status_code)] += 1

        for _ in range(rounds):
            began = time.perf_counter()
            await asyncio.wait_for(asyncio.gather(*(one(port) for port in ports)), PHASE_LIMIT)
            durations.append(time.perf_counter() - began)
    return statuses, durations


async def guard_stalls(ports: list[int], rounds: int) -> tuple[float, float, Counter[str]]:
    """The guard alone, in this process: the longest event-loop stall in a quiet half second, then while
    `rounds` times every hostile origin answers at once, and how the requests ended."""
    origins = tuple(DevOrigin("http", HOSTILE_HOST, port) for port in ports)
    guard = build_guard(GuardSettings(dev_origins=origins))
    outcomes: Counter[str] = Counter()
    worst = [0.0]

    async def tick(until: asyncio.Event) -> None:
        while not until.is_set():
            began = time.perf_counter()
            await asyncio.sleep(0.001)
            worst[0] = max(worst[0], time.perf_counter() - began - 0.001)

    async def one(port: int) -> None:
        try:
            await guard.request("POST", f"http://{HOSTILE_HOST}:{port}/api/meta", body=b"{}")
            outcomes["answered"] += 1
        except Exception as error:
            outcomes[type(error).__name__] += 1

    quiet = asyncio.Event()
    ticker = asyncio.create_task(tick(quiet))
    await asyncio.sleep(0.5)
    quiet.set()
    await ticker
    quiet_worst, worst[0] = worst[0], 0.0
    done = asyncio.Event()
    ticker = asyncio.create_task(tick(done))
    for _ in range(rounds):
        await asyncio.wait_for(asyncio.gather(*(one(port) for port in ports)), PHASE_LIMIT)
    done.set()
    await ticker
    await guard.aclose()
    return quiet_worst, worst[0], outcomes


# --- the run ---------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    def say(message: str) -> None:
        print(f"[hostile] {message}", file=sys.stderr, flush=True)

    loop = asyncio.get_running_loop()
    try:
        dns_transport, silent = await loop.create_datagram_endpoint(Silent, local_addr=(DNS_HOST, 53))
    except OSError as error:
        raise BenchError(f"cannot listen on {DNS_HOST}:53 (run as root): {error}") from None
    with (
        tempfile.TemporaryDirectory(prefix="tobira-hostile-") as temp,
        standin_process(STANDIN_HOST, ACCOUNTS) as standin,
        hostile_process(HOSTILE_HOST, args.answers) as (ports, stop_hostile),
    ):
        folder = Path(temp)
        resolv = folder / "resolv.conf"
        resolv.write_text(f"nameserver {DNS_HOST}\noptions timeout:5 attempts:2\n")
        hosts = folder / "hosts"
        hosts.write_text(f"127.0.0.1 localhost\n::1 localhost\n{STANDIN_HOST} {STANDIN_NAME}\n")
        named = dataclasses.replace(standin, url=f"http://{STANDIN_NAME}:{urlsplit(standin.url).port}")
        port = free_port(TOBIRA_HOST)
        tobira = f"http://{TOBIRA_HOST}:{port}"
        dev = [named.url] + [f"http://{HOSTILE_HOST}:{p}" for p in ports]
        env = tobira_env(tobira, dev, folder / "data", 32)
        env.update(TOBIRA_DISCOVERY_CACHE_SECONDS="0", PYTHONPATH=str(args.tobira_root))
        uvicorn = [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app"]
        uvicorn += ["--host", TOBIRA_HOST, "--port", str(port), "--log-level", "warning"]
        mounts = [f"mount --bind {shlex.quote(str(file))} /etc/{file.name}" for file in (resolv, hosts)]
        inner = " && ".join([*mounts, f"exec {shlex.join(uvicorn)}"])
        log = folder / "tobira.log"
        with running(["unshare", "--mount", "--", "sh", "-c", inner], log, env) as process:
            await wait_healthy(tobira, process, log)
            say(f"tobira {tobira} from {args.tobira_root}, stand-in {named.url} ({standin.url})")
            site = NamedSite(tobira, named)
            pid = process.pid
            await honest(site, pid, 1.0, args.calls, Honest())  # warm-up, not counted
            alone, flooded, flood = Honest(), Honest(), Flood()
            # In alternating slices, so that whatever else the machine is doing weighs on both alike.
            for index in range(args.slices):
                await honest(site, pid, args.seconds / args.slices, args.calls, alone)
                async with flooding(tobira, args.names, flood):
                    questions_before = silent.questions
                    await honest(site, pid, args.seconds / args.slices, args.calls, flooded)
                    flood.asked_during += silent.questions - questions_before
                say(f"honest people alone and with dead names: {index + 1} of {args.slices}")
            peak_before = vm_kib(pid, "VmHWM")
            async with probing(tobira) as quiet:
                await asyncio.sleep(1.0)
            cpu_before, began = cpu_seconds(pid), time.monotonic()
            async with probing(tobira) as busy:
                statuses, durations = await hostile_answers(tobira, ports, args.rounds)
            hostile_cpu, hostile_seconds = cpu_seconds(pid) - cpu_before, time.monotonic() - began
            peak_after, rss_after = vm_kib(pid, "VmHWM"), vm_kib(pid, "VmRSS")
            exited = process.poll()
        quiet_stall, busy_stall, outcomes = await guard_stalls(ports, args.rounds)
        sent = stop_hostile()
        say("hostile answers: done")
    dns_transport.close()

    load = ", ".join(f"{average:.1f}" for average in os.getloadavg())
    print(f"tobira from {args.tobira_root}; uvicorn with uvloop; every figure from this one run")
    print(f"{os.cpu_count()} cores, load average {load} at the end (other work on this machine counts)")
    print("\n1. honest people, alone and while names that never answer are being looked up")
    for what, before, during in (
        ("sign-in", alone.sign_ins, flooded.sign_ins),
        ("proxy call", alone.calls, flooded.calls),
    ):
        print("  " + latency_line(f"{what}, alone", before))
        print("  " + latency_line(f"{what}, {args.names} dead names", during))
        p50 = percentile(during, 50) / max(percentile(before, 50), 1e-9)
        p95 = percentile(during, 95) / max(percentile(before, 95), 1e-9)
        print(f"  {what} with dead names / alone: p50 {p50:.2f}x, p95 {p95:.2f}x")
    print(f"  errors: alone {dict(alone.errors)}, with dead names {dict(flooded.errors)}")
    print(f"  alone {alone.cpu_share()}, with dead names {flooded.cpu_share()}")
    print(
        f"  dead-name look-ups: {flood.started} started, at least {flood.fewest} under way at every look "
        f"while measuring; tobira answered {dict(flood.statuses)}"
    )
    print(
        f"  the silent DNS server was asked {silent.questions} questions, "
        f"{flood.asked_during} of them while measuring"
    )
    print(
        f"\n2. {args.rounds} x {len(ports)} hostile answers at once (half endless header, half gzip, endless)"
    )
    rounds = ", ".join(f"{d * 1000:.0f} ms" for d in durations)
    print(f"  tobira answered {dict(statuses)}; the rounds took {rounds}")
    print(f"  tobira used {hostile_cpu:.2f} CPU seconds in those {hostile_seconds:.2f} s")
    if exited is not None:
        print(f"  tobira EXITED with status {exited} (the peak RSS below is then unknown)")
    print(
        f"  the hostile instance started {sent.get('answers', 0)} hostile answers and wrote "
        f"{sent.get('bytes', 0) / 2**20:.1f} MiB before tobira hung up"
    )
    print(
        f"  tobira's peak RSS (VmHWM) {peak_before / 1024:.1f} MiB before, {peak_after / 1024:.1f} MiB "
        f"after (+{(peak_after - peak_before) / 1024:.1f} MiB); RSS {rss_after / 1024:.1f} MiB after"
    )
    print(
        f"  the guard alone in the bench's own process (asyncio), the same {args.rounds} x {len(ports)}: "
        f"{dict(outcomes)}; longest event-loop stall {busy_stall * 1000:.1f} ms "
        f"({quiet_stall * 1000:.1f} ms in a quiet half second before)"
    )
    for name, probe in (("quiet second before", quiet), ("during", busy)):
        rtts = probe.rtts
        print(
            f"  GET /healthz every {PROBE_SECONDS * 1000:.0f} ms, {name}: n={len(rtts)}, p50 "
            f"{percentile(rtts, 50) * 1000:.1f} ms, p99 {percentile(rtts, 99) * 1000:.1f} ms, longest "
            f"{max(rtts) * 1000:.1f} ms{f', failed {dict(probe.errors)}' if probe.errors else ''}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="honest people measured per side (8)")
    parser.add_argument("--slices", type=int, default=4, help="alternations alone / dead names (4)")
    parser.add_argument("--calls", type=int, default=10, help="proxy calls after each sign-in (10)")
    parser.add_argument("--names", type=int, default=50, help="never-answering names under way (50)")
    parser.add_argument("--answers", type=int, default=32, help="hostile answers at once (32)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of hostile answers (3)")
    parser.add_argument("--tobira-root", type=Path, default=ROOT, help="the checkout tobira runs from")
    args = parser.parse_args()
    if min(args.calls, args.names, args.answers, args.rounds, args.slices) < 1 or not 0 < args.seconds <= 30:
        parser.error("counts must be at least 1, --seconds in (0, 30]")
    try:
        asyncio.run(run(args))
    except BenchError as error:
        print(f"hostile: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

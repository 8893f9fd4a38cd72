"""Load on one tobira process: a burst of sign-ins, a soak of proxied calls, and a slow instance next door.

    .venv/bin/python bench/load.py [--soak-minutes 1] [--soak-clients 32] [--json]

Not part of the test suite: run it by hand. Everything listens on 127.0.0.0/8 and every process it starts
is stopped when it ends (and dies with it if it is killed outright). Every start-up and every phase has a
time limit, so a run takes at most about six minutes more than the soak. Linux only: it reads /proc.

What runs:
- tobira as operators run it, `tobira serve` (one process), with the stand-in and the slow instance as dev
  origins and no sign-in rate limit;
- the stand-in Misskey server (`app.standin`) on 127.0.0.2 with one account per simulated browser
  (user0, user1, …), served by `run_standin_in_thread` in a child process of this script, so that it
  does not share an interpreter (and its lock) with the clients whose latencies are measured; the
  script asks it over a pipe how often each MiAuth session was checked;
- a slow instance on 127.0.0.3 that answers like Misskey, but every request only after `--slow-delay`
  seconds, and that counts how many requests tobira has in flight at it.

The phases, each with a fixed count or duration and a time limit:
1. sign-ins: `--sign-ins` browsers (one httpx client and cookie jar each) sign in at once, each approving
   as a different account on the stand-in's consent page; then each asks `GET /session` and
   `POST /api/i`. Every browser must end up as exactly the account it approved (a mix-up otherwise), with
   no error, and the stand-in must have seen each session's `/check` exactly once.
2. soak: `--soak-clients` of those browsers call `POST /api/notes/timeline` in a loop for
   `--soak-minutes`, each with its session cookie in an aiohttp client of one connection (httpx costs
   this script over twice the CPU per call, and the script rather than tobira would set the pace; the
   CPU each process used is reported). Latencies, and tobira's RSS and open file descriptors every 5 s.
   Flat: RSS at the end within +10 % of the first sample after `--warmup-seconds`, and the fds tobira
   holds at rest (kept-alive connections expired) after the soak within +5 of those before it. Under
   load the count swings with tobira's pool of connections to the instance, by up to the per-host
   bound, so it is reported but does not decide.
3. starvation: `--starvation-sign-ins` fresh sign-ins at the stand-in as a yardstick; then
   `--slow-logins` concurrent `POST /login` naming the slow instance, and while they are held up, as many
   fresh sign-ins at the stand-in again. Those must all succeed, their p95 stay under 1 s, and tobira
   must never have had more than `TOBIRA_PER_HOST_CONNECTIONS` requests in flight at the slow instance.

Exit status: 0 when there were no errors, no mix-ups, every check was made once, resources stayed flat and
nothing starved; 1 when one of these failed; 2 when the measurement could not be made (a server that would
not start, a phase over its time limit).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import math
import multiprocessing
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import httpx
from aiohttp import web

from app.standin import StandinConfig, StandinUser, run_standin_in_thread

ROOT = Path(__file__).resolve().parent.parent
TOBIRA_HOST = "127.0.0.1"
STANDIN_HOST = "127.0.0.2"  # other loopback addresses: cookies are per host, as with real instances
SLOW_HOST = "127.0.0.3"
PERMISSIONS = "read:account,write:notes"
REQUEST_TIMEOUT = 15.0  # TOBIRA_REQUEST_TIMEOUT, set explicitly so the slow delay is measured against it
TIMELINE_BODY = b'{"limit":10}'
SEED_NOTES = 10  # notes posted before the soak, so that the timeline answer has the usual size
CLIENT_TIMEOUT = 30.0  # longer than tobira's own bound: tobira, not the client, must answer in time

SAMPLE_SECONDS = 5
MAX_RSS_GROWTH = 0.10
MAX_FD_GROWTH = 5
KEEP_ALIVE_DRAIN_SECONDS = 7.0  # uvicorn's keep-alive timeout (5 s), and a margin
SETTLE_STABLE_SECONDS = 2.0
SETTLE_LIMIT_SECONDS = 10.0
MAX_HEALTHY_P95 = 1.0  # seconds for a whole sign-in at the healthy instance while the slow one is flooded
FLOOD_SETTLE_SECONDS = 3.0  # at most this long for the flood to fill the slow instance's slots

STARTUP_SECONDS = 20.0
SIGN_IN_PHASE_SECONDS = 120.0
SOAK_GRACE_SECONDS = 60.0
STARVATION_GRACE_SECONDS = 60.0
STANDIN_TRIM_SECONDS = 2.0
EXAMPLES = 5  # distinct error messages kept per phase

PR_SET_PDEATHSIG = 1


class BenchError(Exception):
    """The measurement could not be made; the message says why."""


class StepError(Exception):
    """One browser's request answered something other than the contract says."""


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the one that started it dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


# --- the stand-in, in a child process -------------------------------------------------------------------


def account(index: int) -> str:
    return f"user{index}"


def serve_standin(pipe: Connection[Any, Any], host: str, accounts: int) -> None:
    """Child process: serve a stand-in with `accounts` users and answer the parent's questions until told.

    Questions: "checks" → {session: how often `/check` was called}; "stop" ends it. The stand-in records
    every API call in `state.calls`, which nobody reads here: it is emptied every few seconds so that a
    long soak does not grow this process without bound.
    """
    die_with_parent()
    users = [StandinUser(id=f"9load{i:05d}", username=account(i), name=f"User {i}") for i in range(accounts)]
    with run_standin_in_thread(StandinConfig(base_url="", users=users), host=host) as standin:
        pipe.send(standin.url)
        while True:
            try:
                if pipe.poll(STANDIN_TRIM_SECONDS):
                    question = pipe.recv()
                    if question == "checks":
                        pipe.send(dict(standin.state.check_counts))
                    else:
                        break
            except (EOFError, OSError):
                break
            standin.state.calls.clear()


@dataclass
class Standin:
    """The stand-in as the parent sees it: its origin, and its memory through the pipe."""

    url: str
    pipe: Connection[Any, Any]
    pid: int

    @property
    def authority(self) -> str:
        return urlsplit(self.url).netloc

    def check_counts(self) -> dict[str, int]:
        """How often the stand-in answered `/api/miauth/{session}/check`, per session."""
        self.pipe.send("checks")
        if not self.pipe.poll(10.0):
            raise BenchError("the stand-in did not say how often each session was checked")
        counts: dict[str, int] = self.pipe.recv()
        return counts


@contextmanager
def standin_process(host: str, accounts: int) -> Iterator[Standin]:
    """A stand-in with `accounts` users in a child process, stopped (or killed) on the way out."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(
        target=serve_standin, args=(theirs, host, accounts), name="tobira-load-standin", daemon=True
    )
    process.start()
    theirs.close()
    try:
        if not ours.poll(STARTUP_SECONDS):
            raise BenchError(f"the stand-in did not start within {STARTUP_SECONDS:.0f} s")
        try:
            url: str = ours.recv()
        except EOFError:
            raise BenchError(f"the stand-in exited with status {process.exitcode}") from None
        assert process.pid is not None  # started above
        yield Standin(url, ours, process.pid)
    finally:
        stop_child(process, ours)


def stop_child(process: multiprocessing.process.BaseProcess, pipe: Connection) -> None:
    """Ask a server in a child process to stop over its pipe, then make sure it has."""
    try:
        pipe.send("stop")
    except OSError:
        pass
    process.join(10.0)
    if process.is_alive():
        process.kill()
        process.join(5.0)
    pipe.close()


# --- the slow instance ----------------------------------------------------------------------------------


class SlowInstance:
    """An instance that answers like Misskey, each request only after `delay` seconds.

    It counts the requests in flight, and the most there ever were at once: tobira's per-host bound must
    keep that at or under `TOBIRA_PER_HOST_CONNECTIONS`. Handlers are cancelled when tobira hangs up, so a
    request tobira gave up on stops counting at once.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.url = ""
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._wanted = 0
        self._reached = asyncio.Event()

    async def held(self, count: int) -> None:
        """Returns once `count` requests are in flight here at once."""
        self._wanted, self._reached = count, asyncio.Event()
        if self.in_flight < count:
            await self._reached.wait()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if self.in_flight >= self._wanted:
            self._reached.set()
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        if request.path == "/api/meta" and request.method == "POST":
            return web.json_response(
                {
                    "name": "Slow Misskey",
                    "version": "2026.5.4",
                    "uri": self.url,
                    "features": {"miauth": True},
                }
            )
        if request.path in ("/nodeinfo/2.1", "/nodeinfo/2.0"):
            return web.json_response(
                {
                    "version": request.path.rsplit("/", 1)[-1],
                    "software": {"name": "misskey", "version": "2026.5.4"},
                    "protocols": ["activitypub"],
                    "openRegistrations": False,
                    "metadata": {"nodeName": "Slow Misskey"},
                }
            )
        if request.path == "/.well-known/nodeinfo":
            return web.Response(status=403)  # a fresh Misskey refuses it while federation is off
        return web.json_response(
            {"error": {"code": "NO_SUCH_ENDPOINT", "message": "No such endpoint.", "id": "slow"}}, status=404
        )

    @asynccontextmanager
    async def serving(self, host: str) -> AsyncIterator[str]:
        """Serve on `host` (any free port) in the running loop; yields the origin."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, 0).start()
            port: int = runner.addresses[0][1]
            self.url = f"http://{host}:{port}"
            yield self.url
        finally:
            await runner.cleanup()


# --- tobira ---------------------------------------------------------------------------------------------


def free_port(host: str) -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def tobira_env(public_url: str, dev_origins: list[str], data_dir: Path, per_host: int) -> dict[str, str]:
    """The caller's environment minus any TOBIRA_* and proxy settings, plus ours."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TOBIRA_") and name.lower() not in {"http_proxy", "https_proxy", "all_proxy"}
    }
    env.update(
        PYTHONPATH=str(ROOT),  # this checkout's `app`, not whatever the venv has installed
        TOBIRA_PUBLIC_URL=public_url,
        TOBIRA_DEV_INSTANCES=",".join(dev_origins),
        TOBIRA_DATA_DIR=str(data_dir),
        TOBIRA_LOGIN_RATE_LIMIT="0",
        TOBIRA_PERMISSIONS=PERMISSIONS,
        TOBIRA_PER_HOST_CONNECTIONS=str(per_host),
        TOBIRA_REQUEST_TIMEOUT=f"{REQUEST_TIMEOUT:g}",
    )
    return env


@contextmanager
def running(command: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """Runs `command` in its own process group, output to `log`; the group is stopped on the way out."""
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=log.parent,  # not the repository: a .env file there must not configure the run
            start_new_session=True,
            preexec_fn=die_with_parent,  # safe: this process runs no other thread
        )
    try:
        yield process
    finally:
        for sig, wait_seconds in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(wait_seconds)
                break
            except subprocess.TimeoutExpired:
                continue


def log_tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


async def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Returns once `GET url/healthz` answers 200; raises BenchError if tobira dies or takes too long."""
    deadline = time.monotonic() + STARTUP_SECONDS
    async with httpx.AsyncClient(timeout=1.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BenchError(f"tobira exited with status {process.returncode}:\n{log_tail(log)}")
            try:
                if (await client.get(url + "/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise BenchError(f"tobira did not answer /healthz within {STARTUP_SECONDS:.0f} s:\n{log_tail(log)}")


@dataclass(frozen=True)
class Sample:
    """tobira's resident memory and open file descriptors, `seconds` into the soak.

    `fds` is the most that were open at any of the window's once-a-second looks. Under load that number
    moves with tobira's pool of connections to the instance, which grows and shrinks (by up to
    `TOBIRA_PER_HOST_CONNECTIONS`) as the load's concurrency does; whether descriptors leak is therefore
    judged on counts taken at rest (`settled_fds`), not on these.
    """

    seconds: float
    rss_kib: int
    fds: int


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def settled_fds(pid: int) -> int:
    """tobira's open fds once idle kept-alive connections (its clients' and its own) have been closed.

    Both uvicorns (tobira's and the stand-in's) close a connection idle for 5 s; after that, and once the
    count has not moved for a while, what is left is what tobira holds for good.
    """
    await asyncio.sleep(KEEP_ALIVE_DRAIN_SECONDS)
    count, since = open_fds(pid), time.monotonic()
    deadline = since + SETTLE_LIMIT_SECONDS
    while time.monotonic() - since < SETTLE_STABLE_SECONDS and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        now = open_fds(pid)
        if now != count:
            count, since = now, time.monotonic()
    return count


def cpu_seconds(pid: int) -> float:
    """User plus system time of process `pid`, all its threads, from /proc/PID/stat."""
    # The fields after the parenthesised name start with the third; utime and stime are the 14th and 15th.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- browsers -------------------------------------------------------------------------------------------


@dataclass
class Browser:
    """One person's browser: its own cookie jar, the account it will approve, what happened to it."""

    user: str
    client: httpx.AsyncClient
    session: str | None = None  # the MiAuth session tobira started for it
    called_back: bool = False  # whether it reached tobira's /callback (so /check was due once)
    signed_in: bool = False


class Site:
    """The addresses a browser talks to, and the steps of a sign-in as a person's browser takes them."""

    def __init__(self, tobira: str, standin: Standin) -> None:
        self.tobira = tobira
        self.standin = standin
        self.form_headers = {"Origin": tobira, "Sec-Fetch-Site": "same-origin"}
        self.api_headers = {**self.form_headers, "Content-Type": "application/json"}
        # One TLS context for every client: nothing here is https, and building 250 of them costs seconds.
        self.tls = ssl.create_default_context()

    def browser(self, user: str) -> Browser:
        client = httpx.AsyncClient(
            timeout=CLIENT_TIMEOUT, follow_redirects=False, trust_env=False, verify=self.tls
        )
        return Browser(user, client)

    async def sign_in(self, browser: Browser) -> None:
        """Form → consent page → Accept → callback. Raises StepError or httpx.HTTPError on a wrong answer."""
        client, standin = browser.client, self.standin.url
        started = await client.post(
            f"{self.tobira}/login", data={"instance": self.standin.authority}, headers=self.form_headers
        )
        consent = started.headers.get("location", "")
        if started.status_code != 303 or not consent.startswith(f"{standin}/miauth/"):
            raise StepError(f"POST /login: {started.status_code} to {consent[:80]!r}")
        browser.session = urlsplit(consent).path.rsplit("/", 1)[-1]
        # The account page's button reopens the consent page with `user`; go there directly.
        page = await client.get(httpx.URL(consent).copy_add_param("user", browser.user))
        if page.status_code != 200:
            raise StepError(f"GET consent page: {page.status_code}")
        accepted = await client.post(
            f"{standin}/miauth/{browser.session}/accept", data={"user": browser.user}
        )
        callback = accepted.headers.get("location", "")
        if (
            accepted.status_code != 303
            or not callback.startswith(f"{self.tobira}/callback?")
            or parse_qs(urlsplit(callback).query).get("session") != [browser.session]
        ):
            raise StepError(f"POST accept: {accepted.status_code} to {callback[:80]!r}")
        browser.called_back = True
        finished = await client.get(callback)
        if finished.status_code != 303 or not client.cookies.get("tobira"):
            raise StepError(f"GET /callback: {finished.status_code}")
        browser.signed_in = True

    async def identities(self, browser: Browser) -> tuple[str, str]:
        """The username `GET /session` names and the one `POST /api/i` answers through the proxy."""
        session = await browser.client.get(f"{self.tobira}/session")
        if session.status_code != 200:
            raise StepError(f"GET /session: {session.status_code}")
        me = await browser.client.post(f"{self.tobira}/api/i", content=b"{}", headers=self.api_headers)
        if me.status_code != 200:
            raise StepError(f"POST /api/i: {me.status_code}")
        return str(session.json()["user"]["username"]), str(me.json()["username"])

    def soak_client(self, browser: Browser) -> aiohttp.ClientSession:
        """A leaner client for the soak, with `browser`'s session cookie and one connection, like it."""
        cookie = browser.client.cookies.get("tobira") or ""
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1),
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={**self.api_headers, "Cookie": f"tobira={cookie}"},
            timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT),
        )

    async def timeline(self, client: aiohttp.ClientSession) -> None:
        async with client.post(f"{self.tobira}/api/notes/timeline", data=TIMELINE_BODY) as answer:
            body = await answer.read()
        if answer.status != 200 or not isinstance(json.loads(body), list):
            raise StepError(f"POST /api/notes/timeline: {answer.status}")

    async def post_note(self, browser: Browser, text: str) -> None:
        answer = await browser.client.post(
            f"{self.tobira}/api/notes/create", json={"text": text}, headers=self.api_headers
        )
        if answer.status_code != 200:
            raise StepError(f"POST /api/notes/create: {answer.status_code}")


FAILURES = (StepError, httpx.HTTPError, aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError)


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:200] if not isinstance(error, StepError) else str(error)


async def timed(step: Awaitable[None]) -> float | str:
    """Seconds `step` took, or what went wrong."""
    began = time.perf_counter()
    try:
        await step
    except FAILURES as error:
        return describe(error)
    return time.perf_counter() - began


def percentile(values: list[float], percent: float) -> float:
    """Nearest-rank percentile of `values` (0.0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]


@dataclass
class SignIns:
    """A batch of concurrent sign-ins and what each browser then turned out to be."""

    attempted: int
    signed_in: int
    errors: int
    mixups: int
    wall_seconds: float
    sign_ins_per_second: float
    p50_s: float
    p95_s: float
    max_s: float
    sessions_checked_once: int  # browsers whose session the stand-in saw `/check` for exactly once
    check_anomalies: int  # sessions checked otherwise than due (twice, or without a callback)
    error_examples: list[str] = field(default_factory=list)


async def sign_in_batch(
    site: Site, browsers: list[Browser], during: Callable[[], None] | None = None
) -> SignIns:
    """All `browsers` sign in at once; then each one's identity, and each session's `/check` count.

    `during` runs as soon as the sign-ins are done, before anything else (the starvation phase uses it to
    see that the slow flood was still going).
    """
    began = time.perf_counter()
    outcomes = await asyncio.gather(*(timed(site.sign_in(browser)) for browser in browsers))
    wall = time.perf_counter() - began
    if during is not None:
        during()
    errors: Counter[str] = Counter(outcome for outcome in outcomes if isinstance(outcome, str))
    durations = [outcome for outcome in outcomes if isinstance(outcome, float)]
    signed_in = [browser for browser in browsers if browser.signed_in]

    async def identity(browser: Browser) -> tuple[str, str] | str:
        try:
            return await site.identities(browser)
        except FAILURES as error:
            return describe(error)

    mixups = 0
    for browser, found in zip(signed_in, await asyncio.gather(*map(identity, signed_in)), strict=True):
        if isinstance(found, str):
            errors[found] += 1
        elif found != (browser.user, browser.user):
            mixups += 1
            errors[f"mix-up: approved {browser.user}, /session {found[0]}, /api/i {found[1]}"] += 1
    counts = site.standin.check_counts()
    # A session is due one check once its browser reached /callback, and none before.
    checked = [(counts.get(b.session, 0), int(b.called_back)) for b in browsers if b.session is not None]
    return SignIns(
        attempted=len(browsers),
        signed_in=len(signed_in),
        errors=sum(count for message, count in errors.items() if not message.startswith("mix-up")),
        mixups=mixups,
        wall_seconds=round(wall, 3),
        sign_ins_per_second=round(len(durations) / wall, 1) if wall else 0.0,
        p50_s=round(percentile(durations, 50), 3),
        p95_s=round(percentile(durations, 95), 3),
        max_s=round(max(durations, default=0.0), 3),
        sessions_checked_once=sum(1 for count, _ in checked if count == 1),
        check_anomalies=sum(1 for count, due in checked if count != due),
        error_examples=[f"{count} x {message}" for message, count in errors.most_common(EXAMPLES)],
    )


# --- phase 2: the soak ----------------------------------------------------------------------------------


@dataclass
class Soak:
    """Proxied calls in a loop for a fixed time, with tobira's memory and descriptors over that time."""

    seconds: float
    clients: int
    requests: int
    errors: int
    requests_per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    warmup_seconds: float
    start: Sample
    baseline: Sample  # the first sample after the warm-up: what "flat" is measured against
    middle: Sample
    end: Sample
    rss_growth_pct: float
    fds_at_rest_before: int  # `settled_fds` before the first call and after the last
    fds_at_rest_after: int
    fd_growth: int
    flat: bool
    # CPU used during the soak, % of one core, per process: which of them set the pace (2 CPUs: 200 in all)
    cpu_pct: dict[str, float]
    samples: list[Sample]
    error_examples: list[str] = field(default_factory=list)


async def soak(
    site: Site, browsers: list[Browser], seconds: float, warmup: float, pids: dict[str, int]
) -> Soak:
    """`browsers` call `notes/timeline` back to back for `seconds`, while tobira is watched.

    `pids` names the processes whose CPU use is reported; the one called "tobira" is sampled.
    """
    errors: Counter[str] = Counter()
    for index in range(SEED_NOTES):
        try:
            await site.post_note(browsers[index % len(browsers)], f"Load note {index}")
        except FAILURES as error:
            errors[describe(error)] += 1
    latencies: list[float] = []
    tobira = pids["tobira"]
    fds_before = await settled_fds(tobira)
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    began = time.monotonic()
    deadline = began + seconds

    async def keep_calling(browser: Browser) -> None:
        async with site.soak_client(browser) as client:
            while time.monotonic() < deadline:
                outcome = await timed(site.timeline(client))
                if isinstance(outcome, str):
                    errors[outcome] += 1
                else:
                    latencies.append(outcome)

    samples: list[Sample] = [Sample(0.0, rss_kib(tobira), open_fds(tobira))]

    async def sampler() -> None:
        window_fds = 0
        tick = 0
        while True:
            tick += 1
            await asyncio.sleep(max(0.0, min(began + tick, deadline) - time.monotonic()))
            ending = began + tick >= deadline
            window_fds = max(window_fds, open_fds(tobira))
            if tick % SAMPLE_SECONDS == 0 or ending:
                samples.append(Sample(round(time.monotonic() - began, 1), rss_kib(tobira), window_fds))
                window_fds = 0
            if ending:
                return

    await asyncio.gather(sampler(), *map(keep_calling, browsers))
    elapsed = time.monotonic() - began
    cpu_pct = {
        name: round(100 * (cpu_seconds(pid) - cpu_before[name]) / elapsed, 1) for name, pid in pids.items()
    }
    fds_after = await settled_fds(tobira)
    baseline = next((s for s in samples if s.seconds >= warmup), samples[-1])
    end = samples[-1]
    after_warmup = [s for s in samples if s.seconds >= baseline.seconds]
    rss_growth = (end.rss_kib - baseline.rss_kib) / baseline.rss_kib if baseline.rss_kib else 0.0
    fd_growth = fds_after - fds_before
    milliseconds = [latency * 1000 for latency in latencies]
    return Soak(
        seconds=round(elapsed, 1),
        clients=len(browsers),
        requests=len(latencies) + sum(errors.values()),
        errors=sum(errors.values()),
        requests_per_second=round(len(latencies) / elapsed, 1),
        p50_ms=round(percentile(milliseconds, 50), 2),
        p95_ms=round(percentile(milliseconds, 95), 2),
        p99_ms=round(percentile(milliseconds, 99), 2),
        max_ms=round(max(milliseconds, default=0.0), 2),
        warmup_seconds=warmup,
        start=samples[0],
        baseline=baseline,
        middle=after_warmup[len(after_warmup) // 2],
        end=end,
        rss_growth_pct=round(rss_growth * 100, 1),
        fds_at_rest_before=fds_before,
        fds_at_rest_after=fds_after,
        fd_growth=fd_growth,
        flat=rss_growth <= MAX_RSS_GROWTH and fd_growth <= MAX_FD_GROWTH,
        cpu_pct=cpu_pct,
        samples=samples,
        error_examples=[f"{count} x {message}" for message, count in errors.most_common(EXAMPLES)],
    )


# --- phase 3: a slow instance next door -----------------------------------------------------------------


@dataclass
class Starvation:
    """Healthy sign-ins while the slow instance holds many sign-ins up; the per-host bound at work."""

    per_host_connections: int
    request_timeout_s: float
    slow_delay_s: float
    slow_logins: int
    slow_statuses: dict[str, int]  # what tobira answered the flood's POST /login (303 or 504 expected)
    slow_requests_seen: int
    slow_max_in_flight: int
    slow_in_flight_during: int  # requests still held at the slow instance when the healthy ones were done
    bounded: bool
    healthy_alone: SignIns  # the same number of sign-ins just before, with the slow instance idle
    healthy: SignIns
    starved: bool


async def starvation(
    site: Site, slow: SlowInstance, flood: int, healthy: tuple[list[Browser], list[Browser]], per_host: int
) -> Starvation:
    """Healthy sign-ins alone, then again while `flood` sign-ins at the slow instance are held up.

    `healthy` holds the browsers for each of the two rounds.
    """
    alone = await sign_in_batch(site, healthy[0])
    slow_authority = urlsplit(slow.url).netloc

    async def start_slow() -> str:
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT, trust_env=False, verify=site.tls) as client:
            try:
                answer = await client.post(
                    f"{site.tobira}/login", data={"instance": slow_authority}, headers=site.form_headers
                )
            except httpx.HTTPError as error:
                return type(error).__name__
            return str(answer.status_code)

    flooding = asyncio.gather(*(start_slow() for _ in range(flood)))
    try:
        async with asyncio.timeout(FLOOD_SETTLE_SECONDS):
            await slow.held(min(per_host, flood))
    except TimeoutError:
        pass  # measured anyway: `slow_in_flight_during` shows how much of the flood was under way
    during: list[int] = []
    result = await sign_in_batch(site, healthy[1], during=lambda: during.append(slow.in_flight))
    statuses = Counter(await flooding)
    return Starvation(
        per_host_connections=per_host,
        request_timeout_s=REQUEST_TIMEOUT,
        slow_delay_s=slow.delay,
        slow_logins=flood,
        slow_statuses=dict(sorted(statuses.items())),
        slow_requests_seen=slow.requests,
        slow_max_in_flight=slow.max_in_flight,
        slow_in_flight_during=during[0],
        bounded=0 < slow.max_in_flight <= per_host,
        healthy_alone=alone,
        healthy=result,
        starved=not (
            during[0] > 0
            and result.signed_in == result.attempted
            and result.errors == 0
            and result.p95_s < MAX_HEALTHY_P95
        ),
    )


# --- the whole run --------------------------------------------------------------------------------------


@dataclass
class Report:
    command: str
    tobira_command: str
    cpus: int
    python: str
    sign_ins: SignIns
    soak: Soak
    starvation: Starvation
    ok: bool


async def within(seconds: float, what: str, step: Awaitable[Any]) -> Any:
    """`step`'s result; BenchError if it takes longer than `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            return await step
    except TimeoutError:
        raise BenchError(f"{what} did not finish within {seconds:.0f} s") from None


async def run(args: argparse.Namespace, command: str, say: Callable[[str], None]) -> Report:
    """Starts the servers, runs the three phases; everything started is stopped on return."""
    accounts = max(args.sign_ins, args.starvation_sign_ins)
    async with AsyncExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tobira-load-")))
        say(f"starting the stand-in on {STANDIN_HOST} with {accounts} accounts")
        standin = stack.enter_context(standin_process(STANDIN_HOST, accounts))
        slow = SlowInstance(args.slow_delay)
        await stack.enter_async_context(slow.serving(SLOW_HOST))
        port = free_port(TOBIRA_HOST)
        tobira_url = f"http://{TOBIRA_HOST}:{port}"
        tobira_command = [
            sys.executable,
            "-m",
            "app.cli",
            "serve",
            "--host",
            TOBIRA_HOST,
            "--port",
            str(port),
        ]
        env = tobira_env(tobira_url, [standin.url, slow.url], work / "data", args.per_host_connections)
        say(f"starting tobira: {shlex.join(tobira_command)}")
        log = work / "tobira.log"
        tobira = stack.enter_context(running(tobira_command, log, env))
        await wait_healthy(tobira_url, tobira, log)
        site = Site(tobira_url, standin)
        browsers = [site.browser(account(i)) for i in range(args.sign_ins)]
        for browser in browsers:
            stack.push_async_callback(browser.client.aclose)

        say(f"phase 1: {args.sign_ins} concurrent sign-ins")
        first: SignIns = await within(SIGN_IN_PHASE_SECONDS, "phase 1", sign_in_batch(site, browsers))
        say(f"phase 1: {first.signed_in} signed in in {first.wall_seconds:.2f} s, {first.errors} errors")

        soakers = [browser for browser in browsers if browser.signed_in][: args.soak_clients]
        if not soakers:
            raise BenchError(f"no browser signed in, nothing to soak with:\n{log_tail(log)}")
        for browser in browsers:
            if browser not in soakers:  # their kept-alive connections would only add idle fds to tobira
                await browser.client.aclose()
        seconds = args.soak_minutes * 60
        warmup = min(args.warmup_seconds, seconds / 2)
        pids = {"tobira": tobira.pid, "stand-in": standin.pid, "load script": os.getpid()}
        say(f"phase 2: {len(soakers)} clients soak notes/timeline for {seconds:g} s")
        second: Soak = await within(
            seconds + SOAK_GRACE_SECONDS, "phase 2", soak(site, soakers, seconds, warmup, pids)
        )
        say(f"phase 2: {second.requests} requests, p99 {second.p99_ms} ms, {second.errors} errors")

        healthy = (
            [site.browser(account(i)) for i in range(args.starvation_sign_ins)],
            [site.browser(account(i)) for i in range(args.starvation_sign_ins)],
        )
        for browser in healthy[0] + healthy[1]:
            stack.push_async_callback(browser.client.aclose)
        say(
            f"phase 3: {args.starvation_sign_ins} sign-ins at the stand-in; then {args.slow_logins}"
            f" held {args.slow_delay:g} s by {slow.url}, and {args.starvation_sign_ins} more meanwhile"
        )
        third: Starvation = await within(
            args.slow_delay + REQUEST_TIMEOUT + STARVATION_GRACE_SECONDS,
            "phase 3",
            starvation(site, slow, args.slow_logins, healthy, args.per_host_connections),
        )
        if tobira.poll() is not None:
            raise BenchError(f"tobira exited with status {tobira.returncode}:\n{log_tail(log)}")
        ok = (
            first.errors == 0
            and first.mixups == 0
            and first.check_anomalies == 0
            and first.signed_in == first.attempted
            and second.errors == 0
            and second.flat
            and third.bounded
            and not third.starved
            and third.healthy.mixups == 0
            and third.healthy.check_anomalies == 0
            and third.healthy_alone.errors == 0
            and third.healthy_alone.mixups == 0
            and third.healthy_alone.check_anomalies == 0
        )
        return Report(
            command=command,
            tobira_command=shlex.join(tobira_command),
            cpus=os.cpu_count() or 0,
            python=sys.version.split()[0],
            sign_ins=first,
            soak=second,
            starvation=third,
            ok=ok,
        )


def print_report(report: Report) -> None:
    mark = {True: "PASS", False: "FAIL"}
    one, two, three = report.sign_ins, report.soak, report.starvation
    healthy = three.healthy
    print(f"\nphase 1: {one.attempted} concurrent sign-ins ({report.cpus} CPUs, Python {report.python})")
    print(f"  {'signed in':<28}{one.signed_in:>10}")
    print(f"  {'wall time s':<28}{one.wall_seconds:>10.2f}")
    print(f"  {'sign-ins/s':<28}{one.sign_ins_per_second:>10.1f}")
    print(f"  {'per sign-in p50 / p95 / max s':<28}  {one.p50_s:.3f} / {one.p95_s:.3f} / {one.max_s:.3f}")
    print(f"  {'errors':<28}{one.errors:>10}")
    print(f"  {'mix-ups':<28}{one.mixups:>10}")
    print(f"  {'/check exactly once':<28}{one.sessions_checked_once:>10}  of {one.attempted}")
    for example in one.error_examples:
        print(f"    {example}")
    print(f"\nphase 2: soak, {two.clients} clients, POST /api/notes/timeline for {two.seconds:g} s")
    print(f"  {'requests':<28}{two.requests:>10}")
    print(f"  {'requests/s':<28}{two.requests_per_second:>10.1f}")
    print(f"  {'p50 / p95 / p99 / max ms':<28}  {two.p50_ms} / {two.p95_ms} / {two.p99_ms} / {two.max_ms}")
    print(f"  {'errors':<28}{two.errors:>10}")
    cpu = ", ".join(f"{name} {pct:.0f}" for name, pct in two.cpu_pct.items())
    print(f"  {'CPU, % of one core':<28}  {cpu}")
    for example in two.error_examples:
        print(f"    {example}")
    print(f"  {'':<10}{'at s':>8}{'RSS MiB':>10}{'fds (most in the last 5 s)':>28}")
    for name, point in (
        ("start", two.start),
        ("baseline", two.baseline),
        ("middle", two.middle),
        ("end", two.end),
    ):
        print(f"  {name:<10}{point.seconds:>8.1f}{point.rss_kib / 1024:>10.1f}{point.fds:>28}")
    print(
        f"  RSS end vs baseline {two.rss_growth_pct:+.1f} % (<= +{MAX_RSS_GROWTH:.0%});"
        f" fds at rest before / after {two.fds_at_rest_before} / {two.fds_at_rest_after}"
        f" ({two.fd_growth:+d}, <= +{MAX_FD_GROWTH}): {'flat' if two.flat else 'GROWING'}"
    )
    print(
        f"\nphase 3: {three.slow_logins} sign-ins at an instance answering after {three.slow_delay_s:g} s"
        f" (TOBIRA_REQUEST_TIMEOUT={three.request_timeout_s:g}),"
        f" TOBIRA_PER_HOST_CONNECTIONS={three.per_host_connections}"
    )
    print(f"  {'slow POST /login answers':<28}  {three.slow_statuses}")
    print(
        f"  {'most in flight at slow host':<28}{three.slow_max_in_flight:>10}"
        f"  (bound {three.per_host_connections}: {mark[three.bounded]})"
    )
    print(f"  {'still held when healthy done':<28}{three.slow_in_flight_during:>10}")
    print(f"  {'healthy sign-ins':<28}{healthy.signed_in:>10}  of {healthy.attempted}")
    alone = three.healthy_alone
    print(
        f"  {'healthy p50 / p95 / max s':<28}  {healthy.p50_s:.3f} / {healthy.p95_s:.3f}"
        f" / {healthy.max_s:.3f}  (p95 < {MAX_HEALTHY_P95:g} s)"
    )
    print(
        f"  {'  the same, slow host idle':<28}  {alone.p50_s:.3f} / {alone.p95_s:.3f} / {alone.max_s:.3f}"
        f"  ({alone.errors} errors, {alone.mixups} mix-ups)"
    )
    print(f"  {'errors / mix-ups':<28}  {healthy.errors} / {healthy.mixups}")
    print(
        f"  {'/check exactly once':<28}{healthy.sessions_checked_once + alone.sessions_checked_once:>10}"
        f"  of {healthy.attempted + alone.attempted}"
    )
    for example in healthy.error_examples:
        print(f"    {example}")
    print(f"  {'starvation':<28}  {'yes' if three.starved else 'none'}")
    print(f"\nresult: {mark[report.ok]}")
    print(f"tobira: {report.tobira_command}")
    print(f"reproduce: {report.command}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sign-ins", type=int, default=200, help="concurrent sign-ins in phase 1 (200)")
    parser.add_argument("--soak-minutes", type=float, default=1.0, help="length of the soak (1; 0.5 works)")
    parser.add_argument("--soak-clients", type=int, default=32, help="concurrent clients in the soak (32)")
    parser.add_argument(
        "--warmup-seconds", type=float, default=10.0, help="soak time before the baseline sample (10)"
    )
    parser.add_argument("--slow-logins", type=int, default=100, help="sign-ins at the slow instance (100)")
    parser.add_argument("--starvation-sign-ins", type=int, default=50, help="healthy sign-ins meanwhile (50)")
    parser.add_argument("--slow-delay", type=float, default=10.0, help="the slow instance's delay, s (10)")
    parser.add_argument(
        "--per-host-connections", type=int, default=32, help="TOBIRA_PER_HOST_CONNECTIONS (32)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    args = parser.parse_args()
    counts = (args.sign_ins, args.soak_clients, args.slow_logins, args.starvation_sign_ins)
    if min(counts) < 1 or args.per_host_connections < 1:
        parser.error("counts must be at least 1")
    if args.soak_minutes <= 0 or args.warmup_seconds < 0 or args.slow_delay < 0:
        parser.error("--soak-minutes must be positive, --warmup-seconds and --slow-delay not negative")
    command = shlex.join(
        [
            ".venv/bin/python",
            "bench/load.py",
            "--sign-ins",
            str(args.sign_ins),
            "--soak-minutes",
            f"{args.soak_minutes:g}",
            "--soak-clients",
            str(args.soak_clients),
            "--warmup-seconds",
            f"{args.warmup_seconds:g}",
            "--slow-logins",
            str(args.slow_logins),
            "--starvation-sign-ins",
            str(args.starvation_sign_ins),
            "--slow-delay",
            f"{args.slow_delay:g}",
            "--per-host-connections",
            str(args.per_host_connections),
        ]
        + (["--json"] if args.json else [])
    )

    def say(message: str) -> None:
        print(f"[load] {message}", file=sys.stderr, flush=True)

    return run_and_report("load", lambda: run(args, command, say), as_json=args.json, show=print_report)


def run_and_report(
    name: str, measure: Callable[[], Awaitable[Any]], *, as_json: bool, show: Callable[[Any], None]
) -> int:
    """Run a benchmark's `measure` (its report has `ok`), print the report and give the exit status:
    0 ok, 1 a target missed, 2 not measured (a `BenchError`, or stopped by SIGTERM)."""

    async def guarded() -> Any:
        # A plain `kill` cancels the run, so every server started is still stopped on the way out.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await measure()

    try:
        report = asyncio.run(guarded())
    except BenchError as error:
        print(f"{name}: {error}", file=sys.stderr)
        return 2
    except asyncio.CancelledError:
        print(f"{name}: stopped", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(asdict(report), indent=2))
    else:
        show(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

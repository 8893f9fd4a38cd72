"""The Sentinel failover scenario, shared by tests/test_sentinel.py (short) and bench/failover.py (long).

Two tobira processes behind nginx (`deploy/nginx/`) keep their state in a Redis primary watched by three
sentinels (`tests.redis_cluster`). `threads` people, each from an address of their own, do a steady,
bounded load: sign in at the stand-in, call the proxy, look at `/session`, sign out, again. After
`before_kill` seconds the primary is killed (SIGKILL); the load goes on until `after_failover` seconds
after the sentinels have promoted the replica. Every answer tobira gave is recorded, with when and
which process gave it; then every sign-in that finished has its callback replayed (it must not finish
again, and the instance's one-shot check must have been called once), and every cookie signed out is
tried on both processes (it must be refused).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from app.standin import RunningStandin
from tests.conftest import Browser, TobiraProcess, free_port, session_param, start_tobira
from tests.nginx_support import run_nginx
from tests.redis_cluster import SentinelGroup

SECRET_KEYS = "failover-test-key-" + "x" * 32
EXPECTED = {"start": 303, "callback": 303, "session": 200, "api": 200, "logout": 303}


@dataclass(frozen=True)
class Answer:
    at: float  # seconds since the load began
    step: str  # a key of EXPECTED
    status: int
    body: str


@dataclass
class FailoverReport:
    answers: list[Answer] = field(default_factory=list)
    killed_at: float = 0.0
    promoted_at: float = 0.0
    finished: list[tuple[str, httpx.Cookies]] = field(default_factory=list)  # callback URL, pending cookies
    signed_out: list[str] = field(default_factory=list)  # session cookies
    replays_finished: int = 0  # callbacks replayed after the load that finished again (must be 0)
    checks_called_twice: int = 0  # sessions whose one-shot check the instance saw more than once
    signed_out_accepted: int = 0  # signed-out cookies that one process or the other still accepted

    def errors(self) -> list[Answer]:
        return [answer for answer in self.answers if answer.status != EXPECTED[answer.step]]

    def table(self) -> str:
        """A plain-text summary: counts by step and status, and when the errors came."""
        counts = Counter((answer.step, answer.status) for answer in self.answers)
        errors = self.errors()
        lines = [
            f"primary killed at {self.killed_at:.2f} s, replica promoted at {self.promoted_at:.2f} s "
            f"({self.promoted_at - self.killed_at:.2f} s later)",
            f"{len(self.answers)} answers, {len(errors)} errors"
            + (f" from {errors[0].at:.2f} s to {errors[-1].at:.2f} s" if errors else ""),
            f"sign-ins finished: {len(self.finished)}; finished again on replay: {self.replays_finished}; "
            f"checks called twice: {self.checks_called_twice}",
            f"cookies signed out: {len(self.signed_out)}; accepted again: {self.signed_out_accepted}",
            "",
            f"{'step':<10}{'status':>8}{'count':>8}",
        ]
        lines += [f"{step:<10}{status:>8}{count:>8}" for (step, status), count in sorted(counts.items())]
        return "\n".join(lines)


def run_failover(
    directory: Path,
    standin: RunningStandin,
    *,
    threads: int = 4,
    before_kill: float = 3.0,
    after_failover: float = 4.0,
    pause: float = 0.05,
    limit: float = 60.0,
) -> FailoverReport:
    """Run the scenario (module docstring); every phase is bounded, the whole by `limit` seconds."""
    report = FailoverReport()
    with SentinelGroup(directory / "redis", password="failover-password") as group:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            "TOBIRA_PUBLIC_URL": url,
            "TOBIRA_SECRET_KEYS": SECRET_KEYS,
            "TOBIRA_STORE_URL": group.url(),
            "TOBIRA_DEV_INSTANCES": standin.url,
        }
        processes: list[TobiraProcess] = []
        try:
            for number in (1, 2):
                (directory / f"tobira-{number}").mkdir(parents=True)
                processes.append(start_tobira(directory / f"tobira-{number}", **env))
            servers = [process.url.removeprefix("http://") for process in processes]
            with run_nginx(directory / "nginx", port, servers):
                _load(report, group, url, standin, threads, before_kill, after_failover, pause, limit)
                _verify(report, url, standin)
        finally:
            for process in processes:
                process.stop()
    return report


def _load(
    report: FailoverReport,
    group: SentinelGroup,
    url: str,
    standin: RunningStandin,
    threads: int,
    before_kill: float,
    after_failover: float,
    pause: float,
    limit: float,
) -> None:
    began = time.monotonic()
    stop = threading.Event()
    lock = threading.Lock()

    def record(step: str, answer: httpx.Response) -> bool:
        with lock:
            report.answers.append(
                Answer(time.monotonic() - began, step, answer.status_code, answer.text[:300])
            )
        return answer.status_code == EXPECTED[step]

    def person(number: int) -> None:
        address = f"127.9.{number // 250}.{number % 250 + 1}"
        with httpx.Client(timeout=20, transport=httpx.HTTPTransport(local_address=address)) as client:
            browser = Browser(url, standin, client)
            while not stop.is_set():
                client.cookies.clear()
                started = browser.start()
                if record("start", started):
                    callback_url = browser.approve(started.headers["location"])
                    pending = httpx.Cookies(client.cookies)
                    if record("callback", browser.callback(callback_url)):
                        with lock:
                            report.finished.append((callback_url, pending))
                        for _ in range(3):
                            record("api", browser.api("i"))
                            record("session", browser.session())
                            time.sleep(pause)
                        cookie = client.cookies["tobira"]
                        if record("logout", browser.post_form("/logout", {})):
                            with lock:
                                report.signed_out.append(cookie)
                time.sleep(pause)

    workers = [threading.Thread(target=person, args=(number,), daemon=True) for number in range(threads)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(before_kill)
        report.killed_at = time.monotonic() - began
        group.primary.kill()
        group.wait_for_failover(timeout=max(1.0, limit - (time.monotonic() - began)))
        report.promoted_at = time.monotonic() - began
        time.sleep(min(after_failover, max(0.0, limit - (time.monotonic() - began))))
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
    assert not any(worker.is_alive() for worker in workers), "a load thread did not stop"


def _verify(report: FailoverReport, url: str, standin: RunningStandin) -> None:
    with httpx.Client(timeout=20) as client:
        browser = Browser(url, standin, client)
        for callback_url, pending in report.finished:
            client.cookies = httpx.Cookies(pending)
            report.replays_finished += browser.callback(callback_url).status_code == 303
            report.checks_called_twice += standin.state.check_count(session_param(callback_url)) > 1
        for cookie in report.signed_out:
            client.cookies.clear()
            client.cookies.set("tobira", cookie)
            report.signed_out_accepted += sum(browser.session().status_code != 401 for _ in range(2))

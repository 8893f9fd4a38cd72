"""Measures what tobira's API proxy costs next to nginx's proxy_pass, on this machine, in one run.

    .venv/bin/python bench/proxy_bench.py [--duration 10] [--warmup 2] [--workers 1] [--json] [--nginx-only]

Needs `nginx` and `wrk` on the machine (Debian: `apt-get install -y nginx-light wrk`, or `nginx`);
it installs nothing itself. Everything listens on 127.0.0.1 and every process it starts is stopped
when it ends.

One nginx (`--workers` worker processes, no access log) plays two parts: a fast, fixed upstream that
answers like a Misskey instance (`/api/meta`, `/api/miauth/*/check`, `/api/i`, `/api/notes/timeline`:
~3 KB of JSON), and a plain `proxy_pass` to it with keep-alive upstream connections, the most any proxy
can do on these cores. tobira runs as `tobira serve --workers N` (as many processes as nginx has workers)
against that upstream; the script signs in through tobira's own pages (`POST /login`, then
`GET /callback`) and uses the session cookie.

wrk then sends `POST /api/notes/timeline` with `{"limit":10}` to the upstream directly, to
proxy_pass and to tobira, each at 1 connection (1 thread) and at 32 connections (2 threads), after a
warm-up run per target. The targets tobira must meet (issue 12):

- throughput at 32 connections: at least 0.4 x proxy_pass's with one process against one nginx worker,
  0.5 x with two against two;
- median latency at 1 connection, one process: at most 0.1 ms above proxy_pass's.

Exit status: 0 when both are met, 1 when one is missed, 2 when the measurement could not be made
(missing tool, a server that would not start, a sign-in that failed, or any error answer).
"""

from __future__ import annotations

import argparse
import html.parser
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
# Issue 12's targets: one process against nginx with one worker, and on all cores (two) against two.
MIN_THROUGHPUT_RATIO = {1: 0.4, 2: 0.5}
MAX_EXTRA_MEDIAN_MS = 0.1  # one process, at one connection
CONNECTION_COUNTS = {1: 1, 32: 2}  # connections -> wrk threads
BODY = '{"limit":10}'
STARTUP_SECONDS = 20.0
NGINX_MAX_TOKEN = 4000  # nginx reads its configuration in 4 KiB buffers: no token can be longer
# wrk prints this line from the script's done() hook: exact counts instead of its rounded summary.
RESULT_MARKER = "BENCH_RESULT "

META = {"name": "bench", "version": "2026.5.4", "features": {"miauth": True}}
USER = {"id": "9abc", "username": "bench", "host": None, "name": "Bench", "avatarUrl": None}
CHECK = {"ok": True, "token": "benchTOKEN0123456789abcdefghijkl", "user": USER}


class BenchError(Exception):
    """The measurement could not be made; the message says why."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: exact counts from the done() hook, latencies in milliseconds."""

    requests: int
    seconds: float
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    error_status: int
    socket_errors: int


def timeline_notes() -> list[dict[str, object]]:
    """Ten notes shaped like Misskey's `notes/timeline` answer, about 3 KB of JSON in all."""
    notes: list[dict[str, object]] = []
    for i in range(10):
        notes.append(
            {
                "id": f"a{i:02d}bench{i:04d}",
                "createdAt": f"2026-05-04T12:{i:02d}:00.000Z",
                "userId": USER["id"],
                "user": USER,
                "text": f"Note {i} on the benchmark timeline.",
                "cw": None,
                "visibility": "public",
                "localOnly": False,
                "renoteCount": i % 3,
                "repliesCount": i % 2,
                "reactions": {":bench@.:": i},
                "files": [],
                "replyId": None,
                "renoteId": None,
            }
        )
    return notes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def nginx_literal(value: object) -> str:
    """`value` as compact JSON in an nginx single-quoted string (refusing what nginx would interpret)."""
    text = json.dumps(value, separators=(",", ":"))
    if any(char in text for char in "$'\\") or len(text) > NGINX_MAX_TOKEN:
        raise ValueError(f"cannot quote for nginx ({len(text)} characters): {text[:60]}")
    return f"'{text}'"


def nginx_config(prefix: Path, upstream_port: int, proxy_port: int, workers: int = 1) -> str:
    """The whole nginx.conf: the instance-like upstream and the proxy_pass in front of it."""
    not_found = {"error": {"code": "NO_SUCH_ENDPOINT", "message": "No such endpoint.", "id": "bench"}}
    nodeinfo_links = {
        "links": [
            {
                "rel": "http://nodeinfo.diaspora.software/ns/schema/2.1",
                "href": f"http://127.0.0.1:{upstream_port}/nodeinfo/2.1",
            }
        ]
    }
    nodeinfo = {
        "version": "2.1",
        "software": {"name": "misskey", "version": META["version"]},
        "protocols": ["activitypub"],
        "openRegistrations": False,
        "metadata": {"nodeName": META["name"]},
    }

    def post_only(answer: object) -> str:
        return f"""
            if ($request_method != POST) {{ return 405 {nginx_literal(not_found)}; }}
            return 200 {nginx_literal(answer)};"""

    return f"""
daemon off;
master_process on;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    default_type application/json;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;

    server {{
        listen 127.0.0.1:{upstream_port};
        location = /api/meta {{{post_only(META)}
        }}
        location ~ ^/api/miauth/[^/]+/check$ {{{post_only(CHECK)}
        }}
        location = /api/i {{{post_only(USER)}
        }}
        location = /api/notes/timeline {{{post_only(timeline_notes())}
        }}
        location = /.well-known/nodeinfo {{ return 200 {nginx_literal(nodeinfo_links)}; }}
        location = /nodeinfo/2.1 {{ return 200 {nginx_literal(nodeinfo)}; }}
        location / {{ return 404 {nginx_literal(not_found)}; }}
    }}

    upstream bench_upstream {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{proxy_port};
        location / {{
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


@contextmanager
def running(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Runs `command` in its own process group, output to `log`; the group is stopped on the way out."""
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=log.parent, start_new_session=True
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


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    """Returns once 127.0.0.1:`port` accepts connections; raises BenchError if `process` dies first."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{what} exited with status {process.returncode}:\n{log_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(
        f"{what} did not listen on 127.0.0.1:{port} within {STARTUP_SECONDS:.0f} s:\n{log_tail(log)}"
    )


def tobira_command(port: int, workers: int) -> list[str]:
    """`tobira serve` on 127.0.0.1:`port`, as an operator runs it."""
    serve = ["-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    return [sys.executable, *serve]


def tobira_env(tobira_port: int, upstream_port: int, data_dir: Path) -> dict[str, str]:
    """The environment tobira runs with: the caller's, minus any TOBIRA_* and proxy settings, plus ours."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TOBIRA_") and name.lower() not in {"http_proxy", "https_proxy", "all_proxy"}
    }
    env.update(
        PYTHONPATH=str(ROOT),
        TOBIRA_DEV_INSTANCES=f"http://127.0.0.1:{upstream_port}",
        TOBIRA_PUBLIC_URL=f"http://127.0.0.1:{tobira_port}",
        TOBIRA_DATA_DIR=str(data_dir),
        TOBIRA_PERMISSIONS="read:account",
    )
    return env


class HiddenInputs(html.parser.HTMLParser):
    """Collects the hidden inputs (an anti-CSRF value, say) of the page's `<form action="/login">`."""

    def __init__(self) -> None:
        super().__init__()
        self.in_login_form = False
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "form":
            self.in_login_form = attributes.get("action") == "/login"
        elif tag == "input" and self.in_login_form and attributes.get("type") == "hidden":
            name = attributes.get("name")
            if name:
                self.fields[name] = attributes.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.in_login_form = False


def sign_in(tobira_port: int, upstream_port: int) -> str:
    """Signs in to tobira the way a browser does and returns the `tobira` session cookie's value.

    Raises BenchError when any step answers something else than the contract says.
    """
    origin = f"http://127.0.0.1:{tobira_port}"
    with httpx.Client(base_url=origin, follow_redirects=False, trust_env=False, timeout=10.0) as client:
        form_page = client.get("/login")
        if form_page.status_code != 200:
            raise BenchError(f"GET /login answered {form_page.status_code}: {form_page.text[:300]}")
        parser = HiddenInputs()
        parser.feed(form_page.text)
        started = client.post(
            "/login",
            data={**parser.fields, "instance": f"127.0.0.1:{upstream_port}"},
            headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"},
        )
        location = urlsplit(started.headers.get("location", ""))
        miauth_prefix = "/miauth/"
        if (
            started.status_code != 303
            or f"{location.scheme}://{location.netloc}" != f"http://127.0.0.1:{upstream_port}"
            or not location.path.startswith(miauth_prefix)
        ):
            raise BenchError(
                f"POST /login answered {started.status_code}, Location {started.headers.get('location')!r}:"
                f" {started.text[:300]}"
            )
        session = location.path.removeprefix(miauth_prefix)
        finished = client.get("/callback", params={"session": session})
        cookie = client.cookies.get("tobira")
        if finished.status_code != 303 or not cookie:
            raise BenchError(f"GET /callback answered {finished.status_code}: {finished.text[:300]}")
        proxied = client.post(
            "/api/notes/timeline",
            content=BODY,
            headers={"Content-Type": "application/json", "Origin": origin, "Sec-Fetch-Site": "same-origin"},
        )
        if proxied.status_code != 200 or proxied.json() != timeline_notes():
            raise BenchError(
                f"POST /api/notes/timeline through tobira answered {proxied.status_code}:"
                f" {proxied.text[:300]}"
            )
        return cookie


def lua_string(text: str) -> str:
    """`text` as a Lua string literal."""
    escaped = "".join(char if char.isprintable() and char not in '"\\' else f"\\{ord(char)}" for char in text)
    return f'"{escaped}"'


def wrk_script(headers: dict[str, str]) -> str:
    """The wrk script: the POST to send, and a done() hook printing exact results as one JSON line."""
    header_lines = "\n".join(f"wrk.headers[{lua_string(k)}] = {lua_string(v)}" for k, v in headers.items())
    return f"""
wrk.method = "POST"
wrk.body = {lua_string(BODY)}
{header_lines}

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{RESULT_MARKER}{{"requests":%.0f,"duration_us":%.0f,"p50_us":%.0f,"p99_us":%.0f,'
      .. '"status":%.0f,"socket":%.0f}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def run_wrk(name: str, url: str, connections: int, seconds: float, script: Path) -> WrkResult:
    """One wrk run of `seconds` against `url`.

    Raises BenchError if wrk fails, or if a single answer was not 2xx/3xx or a socket failed.
    """
    threads = CONNECTION_COUNTS[connections]
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if done.returncode != 0 or not lines:
        raise BenchError(f"{shlex.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    raw = json.loads(lines[-1].removeprefix(RESULT_MARKER))
    measured_seconds = raw["duration_us"] / 1e6
    result = WrkResult(
        requests=int(raw["requests"]),
        seconds=measured_seconds,
        requests_per_second=raw["requests"] / measured_seconds,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        error_status=int(raw["status"]),
        socket_errors=int(raw["socket"]),
    )
    if result.error_status or result.socket_errors or not result.requests:
        raise BenchError(
            f"{name} answered badly at {connections} connections: {result.error_status} non-2xx/3xx"
            f" answers and {result.socket_errors} socket errors in {result.requests} requests"
        )
    return result


def measure(
    name: str, url: str, args: argparse.Namespace, script: Path, say: Callable[[str], None]
) -> dict[int, WrkResult]:
    """A warm-up run at the most connections, then one measured run per connection count."""
    say(f"{name}: warm-up, {args.warmup:g} s")
    run_wrk(name, url, max(CONNECTION_COUNTS), args.warmup, script)
    runs: dict[int, WrkResult] = {}
    for connections in CONNECTION_COUNTS:
        say(f"{name}: {connections} connection(s), {args.duration:g} s")
        runs[connections] = run_wrk(name, url, connections, args.duration, script)
    return runs


def verdict(results: dict[str, dict[int, WrkResult]], workers: int) -> dict[str, object]:
    """The ratio and the added latency against the targets, or an empty dict when tobira was not measured.
    The latency target is for one process."""
    if "tobira" not in results:
        return {}
    proxy, tobira = results["proxy_pass"], results["tobira"]
    ratio = tobira[32].requests_per_second / proxy[32].requests_per_second
    extra_ms = tobira[1].p50_ms - proxy[1].p50_ms
    target = MIN_THROUGHPUT_RATIO[min(workers, 2)]
    return {
        "throughput_ratio_32": round(ratio, 4),
        "throughput_target": target,
        "throughput_ok": ratio >= target,
        "extra_median_ms_1": round(extra_ms, 4),
        "latency_ok": workers > 1 or extra_ms <= MAX_EXTRA_MEDIAN_MS,
    }


def print_report(results: dict[str, dict[int, WrkResult]], outcome: dict[str, object], command: str) -> None:
    print(f"\n{'target':<12}{'conns':>6}{'req/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'requests':>10}")
    for name, runs in results.items():
        for connections, run in runs.items():
            print(
                f"{name:<12}{connections:>6}{run.requests_per_second:>11.0f}{run.p50_ms:>9.3f}"
                f"{run.p99_ms:>9.3f}{run.requests:>10}"
            )
    if outcome:
        ok = {True: "PASS", False: "FAIL"}
        print(
            f"\nthroughput at 32 connections, tobira / proxy_pass: {outcome['throughput_ratio_32']:.3f}"
            f" (target >= {outcome['throughput_target']})  {ok[bool(outcome['throughput_ok'])]}"
        )
        print(
            f"median latency at 1 connection, tobira - proxy_pass: {outcome['extra_median_ms_1']:+.3f} ms"
            f" (target <= +{MAX_EXTRA_MEDIAN_MS} ms)  {ok[bool(outcome['latency_ok'])]}"
        )
    print(f"\nreproduce: {command}")


def tool_versions(nginx: str) -> dict[str, str]:
    nginx_version = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False).stderr.strip()
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False).stdout
    return {
        "nginx": nginx_version.removeprefix("nginx version: "),
        "wrk": wrk_version.split(" Copyright")[0].removeprefix("wrk ") or "?",
        "python": sys.version.split()[0],
        "cpus": str(os.cpu_count()),
    }


def find_nginx() -> str:
    """nginx's path (looking in /usr/sbin too, which a non-root PATH lacks).

    Raises BenchError naming what is missing when nginx or wrk is not installed.
    """
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    missing = [name for name, path in (("nginx", nginx), ("wrk", shutil.which("wrk"))) if path is None]
    if nginx is None or missing:
        raise BenchError(
            f"{' and '.join(missing)} not found: apt-get install -y nginx-light wrk (or nginx wrk)"
        )
    return nginx


def run(
    args: argparse.Namespace, say: Callable[[str], None]
) -> tuple[dict[str, dict[int, WrkResult]], dict[str, str]]:
    """Starts the servers, signs in, measures every target; everything started is stopped on return."""
    nginx = find_nginx()
    versions = tool_versions(nginx)
    say(", ".join(f"{name} {version}" for name, version in versions.items()))
    upstream_port, proxy_port, tobira_port = free_port(), free_port(), free_port()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tobira-bench-")))
        nginx_dir = work / "nginx"
        nginx_dir.mkdir()
        # nginx's workers (nobody, when we are root) must reach their temporary directories.
        nginx_dir.chmod(0o755)
        work.chmod(0o755)
        config = nginx_dir / "nginx.conf"
        config.write_text(nginx_config(nginx_dir, upstream_port, proxy_port, args.workers))
        nginx_log = nginx_dir / "nginx.out"
        server = stack.enter_context(
            running(
                [nginx, "-p", str(nginx_dir), "-e", str(nginx_dir / "error.log"), "-c", str(config)],
                nginx_log,
            )
        )
        wait_for_port(upstream_port, server, nginx_log, "nginx")
        wait_for_port(proxy_port, server, nginx_log, "nginx")
        targets = {
            "upstream": f"http://127.0.0.1:{upstream_port}/api/notes/timeline",
            "proxy_pass": f"http://127.0.0.1:{proxy_port}/api/notes/timeline",
        }
        headers = {"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{tobira_port}"}
        if not args.nginx_only:
            tobira_dir = work / "tobira"
            tobira_dir.mkdir(mode=0o700)
            tobira_log = tobira_dir / "uvicorn.out"
            command = tobira_command(tobira_port, args.workers)
            say(f"starting tobira: {shlex.join(command)}")
            tobira = stack.enter_context(
                running(command, tobira_log, tobira_env(tobira_port, upstream_port, tobira_dir))
            )
            wait_for_port(tobira_port, tobira, tobira_log, "tobira")
            try:
                cookie = sign_in(tobira_port, upstream_port)
            except (BenchError, httpx.HTTPError) as error:
                raise BenchError(f"signing in to tobira failed: {error}\n{log_tail(tobira_log)}") from error
            headers.update({"Sec-Fetch-Site": "same-origin", "Cookie": f"tobira={cookie}"})
            targets["tobira"] = f"http://127.0.0.1:{tobira_port}/api/notes/timeline"
        script = work / "post.lua"
        script.write_text(wrk_script(headers))
        results = {name: measure(name, url, args, script, say) for name, url in targets.items()}
    return results, versions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per target (default 2)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.add_argument(
        "--workers", type=int, default=1, help="tobira's worker processes and nginx's (default 1)"
    )
    parser.add_argument("--nginx-only", action="store_true", help="measure the two nginx baselines only")
    args = parser.parse_args()
    if args.duration <= 0 or args.warmup <= 0 or args.workers <= 0:
        parser.error("--duration, --warmup and --workers must be positive")
    command = shlex.join(
        [
            ".venv/bin/python",
            "bench/proxy_bench.py",
            "--duration",
            f"{args.duration:g}",
            "--warmup",
            f"{args.warmup:g}",
            "--workers",
            str(args.workers),
        ]
        + (["--nginx-only"] if args.nginx_only else [])
    )

    # A plain `kill` of this script then still stops nginx and tobira (the finally clauses run).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    def say(message: str) -> None:
        print(f"[bench] {message}", file=sys.stderr, flush=True)

    try:
        results, versions = run(args, say)
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    outcome = verdict(results, args.workers)
    if args.json:
        document = {
            "versions": versions,
            "duration_s": args.duration,
            "results": {name: {str(c): asdict(r) for c, r in runs.items()} for name, runs in results.items()},
            "workers": args.workers,
            "targets": {
                "min_throughput_ratio_32": outcome.get("throughput_target"),
                "max_extra_median_ms_1": MAX_EXTRA_MEDIAN_MS if args.workers == 1 else None,
            },
            "outcome": outcome,
            "command": command,
        }
        print(json.dumps(document, indent=2))
    else:
        print_report(results, outcome, command)
    return 0 if all(outcome.get(key, True) for key in ("throughput_ok", "latency_ok")) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Measures nginx `auth_request` through tobira's `/auth/request` against nginx `auth_request` to a
location that answers 200 itself, on this machine, in one run.

    .venv/bin/python bench/forward_bench.py [--duration 10] [--warmup 2] [--rounds 5] [--workers 1] [--json]

Needs `nginx` (with its auth_request module, as Debian's `nginx` and `nginx-light` have) and `wrk`; it
installs nothing itself. Everything listens on 127.0.0.1 and every process it starts is stopped when it ends.

One nginx (one worker, no access log) plays three parts: the fake Misskey instance of bench/proxy_bench.py
(so that tobira can be signed in to), and two protected sites serving the same small static page:

- `baseline`: `auth_request` to an internal location that answers 200 itself, the most any auth_request
  can cost here;
- `tobira`: `auth_request` to tobira's `/auth/request` (keep-alive upstream connections), as the README
  configures it, with an access rules file naming the site and the account.

tobira runs as one uvicorn process with its SQLite store; the script signs in through tobira's own pages
and sends the session cookie. wrk then GETs the page from each site at 1 connection (1 thread) and at 32
connections (2 threads), after a warm-up run per site; any answer that is not 2xx fails the run (so a 401 or
403 from tobira cannot pass for speed). On a machine shared with other work the load changes from second to
second, so each measurement is split into `--rounds` slices that alternate between the two sites: both see
the same background, and the figures are the totals over the slices (latencies: the median slice). The
target: at 32 connections, tobira's site serves at least 0.25x the baseline's requests per second.

Exit status: 0 when the target is met, 1 when it is missed, 2 when the measurement could not be made.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import statistics
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy_bench as base  # the sibling script: its servers, sign-in and wrk runner

MIN_THROUGHPUT_RATIO = 0.25
PAGE = "<!doctype html><title>protected</title><p>A protected page.</p>\n"


def nginx_config(
    prefix: Path, upstream_port: int, baseline_port: int, site_port: int, tobira_port: int
) -> str:
    """proxy_bench's nginx (the fake instance) plus the two protected sites."""
    instance = base.nginx_config(prefix, upstream_port, base.free_port()).rstrip()
    assert instance.endswith("}")
    sites = f"""
    upstream tobira {{
        server 127.0.0.1:{tobira_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{baseline_port};
        root {prefix}/site;
        location = /auth {{
            internal;
            return 200;
        }}
        location / {{
            auth_request /auth;
        }}
    }}
    server {{
        listen 127.0.0.1:{site_port};
        root {prefix}/site;
        location = /auth {{
            internal;
            proxy_pass http://tobira/auth/request;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
        }}
        location / {{
            auth_request /auth;
            auth_request_set $tobira_user $upstream_http_remote_user;
            add_header X-Signed-In-As $tobira_user;
        }}
    }}
"""
    return instance[:-1] + sites + "}\n"


def wrk_script(headers: dict[str, str]) -> str:
    """A GET with `headers`, and proxy_bench's done() hook (exact counts as one JSON line)."""
    post = base.wrk_script(headers)
    return post.replace('wrk.method = "POST"', 'wrk.method = "GET"').replace(
        f"wrk.body = {base.lua_string(base.BODY)}", "wrk.body = nil"
    )


def run(
    args: argparse.Namespace, say: Callable[[str], None]
) -> tuple[dict[str, dict[int, base.WrkResult]], dict[str, str]]:
    """Starts nginx and tobira, signs in, measures both sites; everything started is stopped on return."""
    nginx = base.find_nginx()
    versions = base.tool_versions(nginx)
    say(", ".join(f"{name} {version}" for name, version in versions.items()))
    upstream_port, baseline_port, site_port, tobira_port = (base.free_port() for _ in range(4))
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tobira-forward-bench-")))
        work.chmod(0o755)
        nginx_dir = work / "nginx"
        (nginx_dir / "site").mkdir(parents=True)
        nginx_dir.chmod(0o755)
        (nginx_dir / "site").chmod(0o755)
        (nginx_dir / "site" / "page.html").write_text(PAGE)
        config = nginx_dir / "nginx.conf"
        config.write_text(nginx_config(nginx_dir, upstream_port, baseline_port, site_port, tobira_port))
        nginx_log = nginx_dir / "nginx.out"
        server = stack.enter_context(
            base.running(
                [nginx, "-p", str(nginx_dir), "-e", str(nginx_dir / "error.log"), "-c", str(config)],
                nginx_log,
            )
        )
        for port in (upstream_port, baseline_port, site_port):
            base.wait_for_port(port, server, nginx_log, "nginx")
        tobira_dir = work / "tobira"
        tobira_dir.mkdir(mode=0o700)
        rules = tobira_dir / "rules.toml"
        rules.write_text(f'[[rules]]\nhosts = ["127.0.0.1"]\nusers = ["bench@127.0.0.1:{upstream_port}"]\n')
        env = base.tobira_env(tobira_port, upstream_port, tobira_dir)
        env.update(TOBIRA_ACCESS_RULES=str(rules))
        command = base.tobira_command(tobira_port, args.workers)
        say(f"starting tobira: {shlex.join(command)}")
        tobira = stack.enter_context(base.running(command, tobira_dir / "uvicorn.out", env))
        base.wait_for_port(tobira_port, tobira, tobira_dir / "uvicorn.out", "tobira")
        try:
            cookie = base.sign_in(tobira_port, upstream_port)
        except (base.BenchError, httpx.HTTPError) as error:
            tail = base.log_tail(tobira_dir / "uvicorn.out")
            raise base.BenchError(f"signing in to tobira failed: {error}\n{tail}") from error
        headers = {"Cookie": f"tobira={cookie}"}
        site = f"http://127.0.0.1:{site_port}/page.html"
        check = httpx.get(site, headers=headers, trust_env=False)
        expected_user = f"bench@127.0.0.1:{upstream_port}"
        if check.status_code != 200 or check.headers.get("x-signed-in-as") != expected_user:
            raise base.BenchError(f"the protected page answered {check.status_code}: {check.headers}")
        if httpx.get(site, trust_env=False).status_code != 401:
            raise base.BenchError("the protected page let a request without a cookie through")
        script = work / "get.lua"
        script.write_text(wrk_script(headers))
        targets = {"baseline": f"http://127.0.0.1:{baseline_port}/page.html", "tobira": site}
        results = measure(targets, args, script, say)
    return results, versions


def measure(
    targets: dict[str, str], args: argparse.Namespace, script: Path, say: Callable[[str], None]
) -> dict[str, dict[int, base.WrkResult]]:
    """A warm-up per site, then per connection count `args.rounds` slices alternating between the sites."""
    for name, url in targets.items():
        say(f"{name}: warm-up, {args.warmup:g} s")
        base.run_wrk(name, url, max(base.CONNECTION_COUNTS), args.warmup, script)
    results: dict[str, dict[int, base.WrkResult]] = {name: {} for name in targets}
    for connections in base.CONNECTION_COUNTS:
        slices: dict[str, list[base.WrkResult]] = {name: [] for name in targets}
        say(
            f"{connections} connection(s): {args.rounds} alternating slices of"
            f" {args.duration / args.rounds:g} s per site"
        )
        for _ in range(args.rounds):
            for name, url in targets.items():
                slices[name].append(base.run_wrk(name, url, connections, args.duration / args.rounds, script))
        for name, runs in slices.items():
            results[name][connections] = combined(runs)
    return results


def combined(runs: list[base.WrkResult]) -> base.WrkResult:
    requests, seconds = sum(run.requests for run in runs), sum(run.seconds for run in runs)
    return base.WrkResult(
        requests=requests,
        seconds=seconds,
        requests_per_second=requests / seconds,
        p50_ms=statistics.median(run.p50_ms for run in runs),
        p99_ms=statistics.median(run.p99_ms for run in runs),
        error_status=sum(run.error_status for run in runs),
        socket_errors=sum(run.socket_errors for run in runs),
    )


def verdict(results: dict[str, dict[int, base.WrkResult]]) -> dict[str, object]:
    ratio = results["tobira"][32].requests_per_second / results["baseline"][32].requests_per_second
    return {"throughput_ratio_32": round(ratio, 4), "throughput_ok": ratio >= MIN_THROUGHPUT_RATIO}


def print_report(
    results: dict[str, dict[int, base.WrkResult]], outcome: dict[str, object], command: str
) -> None:
    print(f"\n{'site':<12}{'conns':>6}{'req/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'requests':>10}")
    for name, runs in results.items():
        for connections, result in runs.items():
            print(
                f"{name:<12}{connections:>6}{result.requests_per_second:>11.0f}{result.p50_ms:>9.3f}"
                f"{result.p99_ms:>9.3f}{result.requests:>10}"
            )
    ok = "PASS" if outcome["throughput_ok"] else "FAIL"
    print(
        f"\nthroughput at 32 connections, tobira / baseline: {outcome['throughput_ratio_32']:.3f}"
        f" (target >= {MIN_THROUGHPUT_RATIO})  {ok}"
    )
    print(f"\nreproduce: {command}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per site (default 2)")
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternating slices per measurement (default 5)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="tobira's uvicorn worker processes (default 1)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    args = parser.parse_args()
    if args.duration <= 0 or args.warmup <= 0 or args.rounds <= 0 or args.workers <= 0:
        parser.error("--duration, --warmup, --rounds and --workers must be positive")
    command = shlex.join(
        [
            ".venv/bin/python",
            "bench/forward_bench.py",
            "--duration",
            f"{args.duration:g}",
            "--warmup",
            f"{args.warmup:g}",
            "--rounds",
            str(args.rounds),
            "--workers",
            str(args.workers),
        ]
    )
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    def say(message: str) -> None:
        print(f"[bench] {message}", file=sys.stderr, flush=True)

    try:
        results, versions = run(args, say)
    except base.BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    outcome = verdict(results)
    if args.json:
        document = {
            "versions": versions,
            "duration_s": args.duration,
            "results": {name: {str(c): asdict(r) for c, r in runs.items()} for name, runs in results.items()},
            "targets": {"min_throughput_ratio_32": MIN_THROUGHPUT_RATIO},
            "outcome": outcome,
            "command": command,
        }
        print(json.dumps(document, indent=2))
    else:
        print_report(results, outcome, command)
    return 0 if outcome["throughput_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

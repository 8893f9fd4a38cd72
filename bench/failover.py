"""The Sentinel failover, longer than the test suite's: a steady load on two tobira processes behind nginx,
the Redis primary killed in the middle, and what people saw.

    .venv/bin/python bench/failover.py [--threads 8] [--before-kill 20] [--after-failover 30]

Not part of the test suite (tests/test_sentinel.py runs the short variant). Everything listens on
127.0.0.0/8: Debian's redis-server and redis-sentinel (a primary, a replica, three sentinels), two tobira
processes, nginx with deploy/nginx/, the stand-in Misskey server. Every phase is bounded in time and
every process it starts is stopped when it ends. It prints the table of answers by step and status, and
exits 1 if anything happened twice, a signed-out cookie worked again, or errors came outside the
failover.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.standin import StandinConfig, run_standin_in_thread
from tests.conftest import STANDIN_HOST, free_port
from tests.failover import run_failover


def main() -> int:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--threads", type=int, default=8, help="people signing in and calling the proxy")
    options.add_argument("--before-kill", type=float, default=20.0, help="seconds of load before the kill")
    options.add_argument("--after-failover", type=float, default=30.0, help="seconds of load after it")
    args = options.parse_args()
    port = free_port(STANDIN_HOST)
    config = StandinConfig(base_url=f"http://{STANDIN_HOST}:{port}")
    with (
        tempfile.TemporaryDirectory() as directory,
        run_standin_in_thread(config, host=STANDIN_HOST, port=port) as standin,
    ):
        report = run_failover(
            Path(directory),
            standin,
            threads=args.threads,
            before_kill=args.before_kill,
            after_failover=args.after_failover,
            limit=args.before_kill + args.after_failover + 60,
        )
    print(report.table())
    errors = report.errors()
    outside = [e for e in errors if not report.killed_at <= e.at <= report.promoted_at + 3.0]
    broken = report.replays_finished or report.checks_called_twice or report.signed_out_accepted or outside
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())

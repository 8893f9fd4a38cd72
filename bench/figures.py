"""Prints the README's table of figures, taken from the scripts' own output and from nothing else.

    .venv/bin/python bench/figures.py [--soak-minutes 1] [--with-proxy-bench] [--json]

Not part of the test suite: run it by hand, then paste its Markdown into the README. It runs, one after
another and each within a time limit:

1. pytest on the security catalogue, with a JUnit report. The report gives the cases per family (hostile
   requests against the real server, faults of a misbehaving instance, the network lab, the unit tables of
   the host parser, address policy, guard, resolver, redirect check, endpoint check, cookie codec, session
   cookies, CSRF check and log redaction, the canary-token leak test, the
   schemathesis fuzzing) and each case's outcome; hypothesis's statistics in that report give how many
   inputs each property test generated. Which unit tests are properties (`@given`) is read from the source.
2. `bench/load.py --json`: the concurrent sign-ins, the soak, memory and descriptors, the slow instance.
3. With `--with-proxy-bench`, `bench/proxy_bench.py --json`: tobira's proxy next to nginx's proxy_pass.

It prints a Markdown table (family | figure | source command), the date and commit it was measured at, and
the command that reproduces it; `--json` prints everything as JSON instead, with the scripts' own documents.

Exit status: 0 when every test passed and every script met its targets; 1 when a test failed or a script
reported a failure; 2 when a figure could not be measured (a run over its time limit, a crash, output that
could not be read). The table is printed in every case, saying which figures are missing and why.
"""

from __future__ import annotations

import argparse
import ast
import base64
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ".venv/bin/python"  # how the commands are shown: run from the repository, as the README says

PYTEST_SECONDS = 900.0  # the catalogue takes about 1.5 min on 2 CPUs; pytest bounds each test at 60 s
LOAD_EXTRA_SECONDS = 480.0  # load.py: at most about six minutes more than the soak, by its own bounds
PROXY_BENCH_SECONDS = 300.0  # proxy_bench.py at its defaults: three targets x (2 s + 2 x 10 s), and start-up
STOP_GRACE_SECONDS = 30.0  # after the polite signal, before SIGKILL

GIVEN = "given"
HYPOTHESIS_STATISTICS = "hypothesis-statistics-"
PASSING_EXAMPLES = re.compile(r"(\d+) passing, (\d+) failing")
FUZZ_EXAMPLES = re.compile(r"max_examples=(\d+)")
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed")  # in the order the table gives them
BAD_OUTCOMES = ("failed", "error")
PYTEST_SUMMARY = re.compile(r"\b\d+ (?:passed|failed|errors?|skipped|xfailed|xpassed)\b.* in [\d.]+s")


class FiguresError(Exception):
    """A figure could not be measured; the message says why."""


@dataclass(frozen=True)
class Family:
    """A family of security tests: the files that make it up and how the table names it."""

    key: str
    title: str
    files: tuple[str, ...]

    def command(self) -> str:
        return shlex.join([PYTHON, "-m", "pytest", "-q", *self.files])


HOSTILE = Family("hostile", "Hostile requests", ("tests/test_hostile.py",))
FAULTS = Family("faults", "Misbehaving instance", ("tests/test_faults.py",))
UNITS = Family(
    "units",
    "Unit tables",
    (
        "tests/test_hosts.py",
        "tests/test_addresses.py",
        "tests/test_guard.py",
        "tests/test_resolver.py",
        "tests/test_redirects.py",
        "tests/test_endpoints.py",
        "tests/test_crypto.py",
        "tests/test_session.py",
        "tests/test_csrf.py",
        "tests/test_logs.py",
    ),
)
LAB = Family("lab", "Network lab", ("tests/test_lab.py",))
LEAKS = Family("leaks", "Canary-token leak", ("tests/test_leaks.py",))
OPENAPI = Family("openapi", "API fuzzing (schemathesis)", ("tests/test_openapi.py",))
FAMILIES = (HOSTILE, FAULTS, LAB, UNITS, LEAKS, OPENAPI)
PROPERTIES_TITLE = "Property tests (hypothesis)"
PYTEST_TITLES = (
    HOSTILE.title,
    FAULTS.title,
    LAB.title,
    UNITS.title,
    PROPERTIES_TITLE,
    LEAKS.title,
    OPENAPI.title,
)
SIGN_INS_TITLE = "Concurrent sign-ins"
SOAK_TITLE = "Soak"
RESOURCES_TITLE = "Memory and descriptors"
SLOW_TITLE = "Slow instance next door"
LOAD_TITLES = (SIGN_INS_TITLE, SOAK_TITLE, RESOURCES_TITLE, SLOW_TITLE)
THROUGHPUT_TITLE = "Proxy throughput"
LATENCY_TITLE = "Proxy latency"
PROXY_TITLES = (THROUGHPUT_TITLE, LATENCY_TITLE)
UNIT_NAMES = {
    "tests/test_hosts.py": "host parser",
    "tests/test_addresses.py": "address policy",
    "tests/test_guard.py": "network guard",
    "tests/test_resolver.py": "resolver",
    "tests/test_redirects.py": "redirect check",
    "tests/test_endpoints.py": "endpoint check",
    "tests/test_crypto.py": "cookie codec",
    "tests/test_session.py": "session cookies",
    "tests/test_csrf.py": "CSRF check",
    "tests/test_logs.py": "log redaction",
}


@dataclass(frozen=True)
class Row:
    """One line of the table. `ok` is None when the figure could not be measured."""

    family: str
    figure: str
    source: str
    ok: bool | None


# --- running the scripts --------------------------------------------------------------------------------


def say(message: str) -> None:
    print(f"[figures] {message}", file=sys.stderr, flush=True)


def run_bounded(command: list[str], seconds: float, stop: signal.Signals) -> tuple[int, str]:
    """Runs `command` in the repository: its exit status and stdout (its stderr goes to ours, as progress).

    Raises FiguresError when it runs longer than `seconds`. However this returns, the command is over:
    sent `stop` (the signal on which it cleans up after itself), then SIGKILL if that was not enough.
    """
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, text=True, encoding="utf-8", errors="replace"
    )
    try:
        stdout, _ = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        raise FiguresError(f"{shlex.join(command)} did not finish within {seconds:.0f} s") from None
    finally:
        if process.poll() is None:
            process.send_signal(stop)
            try:
                process.communicate(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
    return process.returncode, stdout


def run_json(command: list[str], seconds: float) -> tuple[int, dict[str, object]]:
    """Runs a bench script that prints one JSON document when it measured (exit 0 or 1).

    Raises FiguresError when it could not measure (any other exit) or printed something else.
    """
    status, stdout = run_bounded(command, seconds, signal.SIGTERM)
    if status not in (0, 1):
        raise FiguresError(f"{shlex.join(command)} exited with status {status} (its message is above)")
    try:
        document = json.loads(stdout)
    except json.JSONDecodeError as error:
        raise FiguresError(f"{shlex.join(command)} printed no JSON: {error}") from None
    if not isinstance(document, dict):
        raise FiguresError(f"{shlex.join(command)} printed JSON that is not an object")
    return status, document


def found(document: object, path: str) -> object:
    """The value at the dotted `path` in a JSON document; FiguresError when it is not there."""
    for key in path.split("."):
        if not isinstance(document, dict) or key not in document:
            raise FiguresError(f"the output has no {path!r}")
        document = document[key]
    return document


def number(document: object, path: str) -> float:
    value = found(document, path)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FiguresError(f"{path!r} in the output is not a number: {value!r}")
    return value


def count(document: object, path: str) -> int:
    value = number(document, path)
    if not isinstance(value, int):
        raise FiguresError(f"{path!r} in the output is not a whole number: {value!r}")
    return value


def flag(document: object, path: str) -> bool:
    value = found(document, path)
    if not isinstance(value, bool):
        raise FiguresError(f"{path!r} in the output is not true or false: {value!r}")
    return value


def text(document: object, path: str) -> str:
    value = found(document, path)
    if not isinstance(value, str):
        raise FiguresError(f"{path!r} in the output is not a string: {value!r}")
    return value


# --- pytest ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One test case of the JUnit report: its file, test function, parameter id and outcome."""

    file: str
    function: str
    parameter: str | None
    outcome: str  # one of OUTCOMES

    @property
    def nodeid(self) -> str:
        suffix = f"[{self.parameter}]" if self.parameter is not None else ""
        return f"{self.file}::{self.function}{suffix}"


@dataclass
class PytestRun:
    """What one pytest run over every family said: its exit status, summary line, cases and statistics."""

    status: int
    summary: str
    cases: list[Case]
    examples: dict[str, int]  # nodeid -> inputs hypothesis generated that passed, from its statistics


def outcome_of(testcase: ET.Element) -> str:
    if testcase.find("failure") is not None:
        return "failed"
    if testcase.find("error") is not None:
        return "error"
    skipped = testcase.find("skipped")
    if skipped is not None:
        return "xfailed" if skipped.get("type") == "pytest.xfail" else "skipped"
    return "passed"


def read_junit(report: Path) -> tuple[list[Case], dict[str, int]]:
    """The cases of a JUnit report (xunit1: each case names its file) and hypothesis's example counts."""
    root = ET.parse(report).getroot()
    cases: list[Case] = []
    for testcase in root.iter("testcase"):
        name = testcase.get("name", "")
        function, bracket, parameter = name.partition("[")
        cases.append(
            Case(
                file=testcase.get("file", ""),
                function=function,
                parameter=parameter.removesuffix("]") if bracket else None,
                outcome=outcome_of(testcase),
            )
        )
    examples: dict[str, int] = {}
    for prop in root.iter("property"):
        name = prop.get("name", "")
        if name.startswith(HYPOTHESIS_STATISTICS):
            statistics = base64.b64decode(prop.get("value", "")).decode("utf-8", "replace")
            # One line per phase (reuse, generate, shrink…): the inputs that passed, summed over them.
            passing = sum(int(match[1]) for match in PASSING_EXAMPLES.finditer(statistics))
            examples[name.removeprefix(HYPOTHESIS_STATISTICS)] = passing
    return cases, examples


def run_pytest() -> PytestRun:
    """Runs every family in one pytest process and reads its JUnit report.

    Raises FiguresError when pytest did not run the tests through (interrupted, internal or usage error,
    nothing collected) or left no report.
    """
    files = [path for family in FAMILIES for path in family.files]
    with tempfile.TemporaryDirectory(prefix="tobira-figures-") as work:
        report = Path(work) / "junit.xml"
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--color=no",
            "-o",
            "junit_family=xunit1",
            f"--junitxml={report}",
            *files,
        ]
        say(f"running pytest on {len(files)} files")
        # SIGINT: pytest then tears its fixtures down, stopping the servers they started.
        status, stdout = run_bounded(command, PYTEST_SECONDS, signal.SIGINT)
        summaries = [line for line in stdout.splitlines() if PYTEST_SUMMARY.search(line)]
        if status not in (0, 1) or not report.exists():
            tail = "\n".join(stdout.splitlines()[-20:])
            raise FiguresError(f"pytest exited with status {status}:\n{tail}")
        cases, examples = read_junit(report)
    for line in stdout.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            print(line, file=sys.stderr)
    summary = summaries[-1].strip("= ") if summaries else "?"
    say(f"pytest: {summary}")
    return PytestRun(status, summary, cases, examples)


def property_tests(path: Path) -> frozenset[str]:
    """The test functions in `path` decorated with hypothesis's `@given`."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if (isinstance(target, ast.Name) and target.id == GIVEN) or (
                    isinstance(target, ast.Attribute) and target.attr == GIVEN
                ):
                    names.add(node.name)
    return frozenset(names)


@dataclass
class FamilyResult:
    """One family's cases by outcome, and the ones that did not pass."""

    files: list[str]
    cases: int
    outcomes: dict[str, int]
    not_passed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.cases > 0 and not any(outcome in self.outcomes for outcome in BAD_OUTCOMES)


def tally(files: Sequence[str], cases: Sequence[Case]) -> FamilyResult:
    chosen = [case for case in cases if case.file in files]
    outcomes = Counter(case.outcome for case in chosen)
    return FamilyResult(
        files=list(files),
        cases=len(chosen),
        outcomes={outcome: outcomes[outcome] for outcome in OUTCOMES if outcome in outcomes},
        not_passed=[f"{case.nodeid} {case.outcome}" for case in chosen if case.outcome in BAD_OUTCOMES],
    )


def grand(value: int) -> str:
    return f"{value:,}"


def verdict(result: FamilyResult, noun: str) -> str:
    """ "1,061 cases, all passed", or the count of each outcome, the bad ones in bold."""
    if result.cases and result.outcomes == {"passed": result.cases}:
        return f"{grand(result.cases)} {noun}, all passed"
    parts = []
    for outcome, cases in result.outcomes.items():
        part = f"{grand(cases)} {outcome}"
        parts.append(f"**{part}**" if outcome in BAD_OUTCOMES else part)
    return f"{grand(result.cases)} {noun} ({', '.join(parts) or 'none ran'})"


def pytest_rows(run: PytestRun) -> tuple[list[Row], dict[str, object]]:
    """The table's rows for the pytest families, and their details for `--json`."""
    hostile = tally(HOSTILE.files, run.cases)
    faults = tally(FAULTS.files, run.cases)
    lab = tally(LAB.files, run.cases)
    properties = {path: property_tests(ROOT / path) for path in UNITS.files}
    is_property = [case.function in properties.get(case.file, frozenset()) for case in run.cases]
    tables = [case for case, generated in zip(run.cases, is_property, strict=True) if not generated]
    generated = [case for case, generated in zip(run.cases, is_property, strict=True) if generated]
    units = tally(UNITS.files, tables)
    per_file = {path: tally([path], tables).cases for path in UNITS.files}
    hypothesis = tally(UNITS.files, generated)
    inputs = sum(run.examples.get(case.nodeid, 0) for case in generated)
    leaks = tally(LEAKS.files, run.cases)
    openapi = tally(OPENAPI.files, run.cases)
    # The fuzzing test is parametrized by operation; the file's other tests are not.
    operations = sorted(
        case.parameter for case in run.cases if case.file in OPENAPI.files and case.parameter is not None
    )
    caps = set(FUZZ_EXAMPLES.findall((ROOT / OPENAPI.files[0]).read_text()))
    each = f", up to {caps.pop()} generated requests each" if len(caps) == 1 else ""

    rows = [
        Row(
            HOSTILE.title,
            "Attacks on the real server, each also asserting that no connection reached a canary"
            f" listener: {verdict(hostile, 'cases')}",
            HOSTILE.command(),
            hostile.ok,
        ),
        Row(
            FAULTS.title,
            "Faults of the instance at discovery, the callback and the proxy, each to end in a clear error"
            f" within the time bound, nothing stored or repeated: {verdict(faults, 'cases')}",
            FAULTS.command(),
            faults.ok,
        ),
        Row(
            LAB.title,
            "tobira in a network namespace of its own, names resolved through the tests' DNS server,"
            " https fakes behind a test CA, canaries on every forbidden address (rebinding, mixed and CNAME"
            " answers, IPv6 forms, silent DNS, wrong certificates, the hardening items):"
            f" {verdict(lab, 'cases')}",
            LAB.command(),
            lab.ok,
        ),
        Row(
            UNITS.title,
            f"{verdict(units, 'cases')}: "
            + ", ".join(f"{UNIT_NAMES[path]} {grand(cases)}" for path, cases in per_file.items()),
            UNITS.command(),
            units.ok,
        ),
        Row(
            PROPERTIES_TITLE,
            f"On the same modules, {grand(inputs)} generated inputs: {verdict(hypothesis, 'properties')}",
            UNITS.command(),
            hypothesis.ok,
        ),
        Row(
            LEAKS.title,
            "A canary token through every route at DEBUG with the access log on, to be in no answer,"
            f" header, cookie or log line: {verdict(leaks, 'test')}",
            LEAKS.command(),
            leaks.ok,
        ),
        Row(
            OPENAPI.title,
            f"{len(operations)} operations{each}, no 5xx and every answer as the schema says:"
            f" {verdict(openapi, 'cases')}",
            OPENAPI.command(),
            openapi.ok and bool(operations),
        ),
    ]
    details = {
        "exit_status": run.status,
        "summary": run.summary,
        "families": {
            "hostile": asdict(hostile),
            "faults": asdict(faults),
            "lab": asdict(lab),
            "units": {**asdict(units), "per_file": per_file},
            "properties": {
                **asdict(hypothesis),
                "generated_inputs": inputs,
                "per_test": {case.nodeid: run.examples.get(case.nodeid) for case in generated},
            },
            "leaks": asdict(leaks),
            "openapi": {**asdict(openapi), "operations": operations},
        },
    }
    return rows, details


# --- load.py and proxy_bench.py -------------------------------------------------------------------------


def load_rows(document: dict[str, object]) -> list[Row]:
    """The table's rows from `bench/load.py --json`'s report."""
    source = text(document, "command")
    attempted = count(document, "sign_ins.attempted")
    sign_ins_ok = (
        count(document, "sign_ins.signed_in") == attempted
        and count(document, "sign_ins.errors") == 0
        and count(document, "sign_ins.mixups") == 0
        and count(document, "sign_ins.check_anomalies") == 0
    )
    sign_ins = Row(
        SIGN_INS_TITLE,
        f"{grand(attempted)} at once on one process: {grand(count(document, 'sign_ins.signed_in'))} signed"
        f" in, {count(document, 'sign_ins.errors')} errors, {count(document, 'sign_ins.mixups')} mix-ups,"
        f" `/check` called exactly once for {grand(count(document, 'sign_ins.sessions_checked_once'))}"
        f" of {grand(attempted)}; p95 {number(document, 'sign_ins.p95_s'):.2f} s",
        source,
        sign_ins_ok,
    )
    soak = Row(
        SOAK_TITLE,
        f"{count(document, 'soak.clients')} clients for {number(document, 'soak.seconds'):g} s:"
        f" {grand(count(document, 'soak.requests'))} proxied calls, {count(document, 'soak.errors')}"
        f" errors; p50 / p95 / p99 {number(document, 'soak.p50_ms'):g} /"
        f" {number(document, 'soak.p95_ms'):g} / {number(document, 'soak.p99_ms'):g} ms",
        source,
        count(document, "soak.errors") == 0,
    )
    flat = flag(document, "soak.flat")
    resources = Row(
        RESOURCES_TITLE,
        f"RSS {number(document, 'soak.rss_growth_pct'):+.1f} % from the end of the warm-up to the end of"
        f" the soak, open fds at rest {count(document, 'soak.fds_at_rest_before')} before and"
        f" {count(document, 'soak.fds_at_rest_after')} after: {'flat' if flat else '**growing**'}",
        source,
        flat,
    )
    starved, bounded = flag(document, "starvation.starved"), flag(document, "starvation.bounded")
    starvation = Row(
        SLOW_TITLE,
        f"{count(document, 'starvation.slow_logins')} sign-ins held"
        f" {number(document, 'starvation.slow_delay_s'):g} s by a slow instance: at most"
        f" {count(document, 'starvation.slow_max_in_flight')} requests in flight there (bound"
        f" {count(document, 'starvation.per_host_connections')}); meanwhile"
        f" {count(document, 'starvation.healthy.signed_in')} of"
        f" {count(document, 'starvation.healthy.attempted')} sign-ins elsewhere, p95"
        f" {number(document, 'starvation.healthy.p95_s'):.2f} s (alone:"
        f" {number(document, 'starvation.healthy_alone.p95_s'):.2f} s):"
        f" {'**starved**' if starved else 'no starvation'}",
        source,
        bounded and not starved,
    )
    return [sign_ins, soak, resources, starvation]


def proxy_rows(document: dict[str, object]) -> list[Row]:
    """The table's rows from `bench/proxy_bench.py --json`'s outcome."""
    source = text(document, "command")
    cpus = text(document, "versions.cpus")
    return [
        Row(
            THROUGHPUT_TITLE,
            f"{number(document, 'outcome.throughput_ratio_32'):.2f} × nginx proxy_pass's requests/s at 32"
            f" connections, {cpus} CPUs (target ≥ {number(document, 'targets.min_throughput_ratio_32'):g})",
            source,
            flag(document, "outcome.throughput_ok"),
        ),
        Row(
            LATENCY_TITLE,
            f"median {number(document, 'outcome.extra_median_ms_1'):+.3f} ms over nginx proxy_pass at 1"
            f" connection (target ≤ +{number(document, 'targets.max_extra_median_ms_1'):g} ms)",
            source,
            flag(document, "outcome.latency_ok"),
        ),
    ]


# --- the whole run --------------------------------------------------------------------------------------


def measure(
    families: Sequence[str], source: str, step: Callable[[], tuple[list[Row], object]]
) -> tuple[list[Row], object]:
    """`step`'s rows and document; rows saying "not measured" (ok None) for `families` if it failed."""
    try:
        return step()
    except (FiguresError, OSError, ET.ParseError, SyntaxError) as error:
        say(f"not measured: {error}")
        reason = str(error).splitlines()[0]
        return [Row(family, f"**not measured**: {reason}", source, None) for family in families], {
            "error": str(error)
        }


def provenance() -> dict[str, str]:
    """The date, the commit the tree is at, and whether it has changes not committed yet."""
    date = datetime.now(UTC).date().isoformat()
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        # --no-optional-locks: reading the status must not take the index lock from someone committing.
        changes = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"date": date, "commit": "unknown"}
    return {"date": date, "commit": head + (" with uncommitted changes" if changes else "")}


def markdown(rows: Sequence[Row], facts: dict[str, str], command: str) -> str:
    def cell(value: str) -> str:
        return value.replace("|", "\\|")

    lines = [
        f"Measured on {facts['date']} at commit {facts['commit']}"
        f" ({facts['cpus']} CPUs, Python {facts['python']}).",
        "",
        "| Family | Figure | Source command |",
        "| --- | --- | --- |",
    ]
    for row in rows:
        mark = {True: "", False: " — **FAIL**", None: ""}[row.ok]
        lines.append(f"| {cell(row.family)} | {cell(row.figure)}{mark} | `{cell(row.source)}` |")
    lines += ["", f"Reproduce: `{command}`"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--soak-minutes", type=float, default=1.0, help="load.py's --soak-minutes (default 1)"
    )
    parser.add_argument(
        "--with-proxy-bench", action="store_true", help="also run bench/proxy_bench.py (needs nginx, wrk)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    args = parser.parse_args()
    if args.soak_minutes <= 0:
        parser.error("--soak-minutes must be positive")
    command = shlex.join(
        [PYTHON, "bench/figures.py", "--soak-minutes", f"{args.soak_minutes:g}"]
        + (["--with-proxy-bench"] if args.with_proxy_bench else [])
        + (["--json"] if args.json else [])
    )
    # A plain `kill` then still stops the script running (run_bounded's finally clause).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    statuses: list[int] = []

    def tests() -> tuple[list[Row], object]:
        run = run_pytest()
        statuses.append(run.status)
        return pytest_rows(run)

    def load() -> tuple[list[Row], object]:
        say(f"running bench/load.py with a {args.soak_minutes:g} min soak")
        status, document = run_json(
            [sys.executable, "bench/load.py", "--soak-minutes", f"{args.soak_minutes:g}", "--json"],
            args.soak_minutes * 60 + LOAD_EXTRA_SECONDS,
        )
        statuses.append(status)
        return load_rows(document), document

    def proxy() -> tuple[list[Row], object]:
        say("running bench/proxy_bench.py")
        status, document = run_json([sys.executable, "bench/proxy_bench.py", "--json"], PROXY_BENCH_SECONDS)
        statuses.append(status)
        return proxy_rows(document), document

    pytest_source = shlex.join([PYTHON, "-m", "pytest", "-q", *(p for f in FAMILIES for p in f.files)])
    rows, test_document = measure(PYTEST_TITLES, pytest_source, tests)
    load_source = f"{PYTHON} bench/load.py --soak-minutes {args.soak_minutes:g} --json"
    more, load_document = measure(LOAD_TITLES, load_source, load)
    rows += more
    proxy_document: object = None
    if args.with_proxy_bench:
        more, proxy_document = measure(PROXY_TITLES, f"{PYTHON} bench/proxy_bench.py --json", proxy)
        rows += more

    if any(row.ok is None for row in rows):
        status = 2
    elif any(statuses) or not all(row.ok for row in rows):
        status = 1
    else:
        status = 0
    facts = {**provenance(), "cpus": str(os.cpu_count()), "python": sys.version.split()[0]}
    if args.json:
        document = {
            **facts,
            "command": command,
            "exit_status": status,
            "rows": [asdict(row) for row in rows],
            "tests": test_document,
            "load": load_document,
            "proxy_bench": proxy_document,
        }
        print(json.dumps(document, indent=2))
    else:
        print(markdown(rows, facts, command))
    return status


if __name__ == "__main__":
    sys.exit(main())

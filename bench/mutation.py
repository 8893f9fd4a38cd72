"""Mutation testing of the security modules: does every change to their code make one of their tests fail?

    .venv/bin/python bench/mutation.py [--module redirects] [--jobs 2]

Not part of the test suite: it takes minutes. It copies `app/`, `tests/` and `pyproject.toml` into a fresh
scratch folder, adds mutmut's configuration there (below), runs `mutmut run` over the seven modules that
decide what is safe — the host parser, the address policy, the redirect check, the CSRF check, the cookie
codec, the session cookies and the endpoint policy — with their own unit tests only (no test that starts a
server), and prints how many mutants there were, how many were killed, how many survived, and the diff of
each survivor.

A survivor is a change to the code that no test notices. Each is either a gap in the tests, to be closed with
a test, or an equivalent mutant: a change that cannot alter any behaviour (a bound that the input already
meets, a check that another one already makes). Those are listed in EQUIVALENT below, each with why, and
found again by the function and the line they change rather than by mutmut's numbering or a line number,
both of which move whenever someone edits the module.

mutmut 3 mutates only code inside functions (not module-level tables such as the deny list or the salt, nor
functions under a decorator other than staticmethod/classmethod); the unit tests pin those tables directly.

Exit status: 0 when every survivor is a listed equivalent; 1 when one is not; 2 when mutmut could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# module → its own unit tests (fast, no servers).
MODULES = {
    "hosts": ("tests/test_hosts.py",),
    "addresses": ("tests/test_addresses.py",),
    "redirects": ("tests/test_redirects.py",),
    "csrf": ("tests/test_csrf.py",),
    "crypto": ("tests/test_crypto.py",),
    "session": ("tests/test_session.py",),
    "endpoints": ("tests/test_endpoints.py",),
}
# mutmut's statuses (its exit codes of the test run) that mean a test noticed the mutant.
DETECTED = {"killed", "timeout", "caught by type check"}


@dataclass(frozen=True)
class Equivalent:
    """A mutant that changes no behaviour: in `function` of `module`, the line holding `before` rewritten to
    hold `after` (each a fragment of the stripped line, as mutmut's diff shows it); `above`, when given, a
    fragment of the line just above it, for a line that occurs twice in the function."""

    module: str
    function: str
    before: str
    after: str
    why: str
    above: str = ""

    def matches(self, survivor: Survivor) -> bool:
        return (
            survivor.module == self.module
            and survivor.function == self.function
            and any(self.before in line for line in survivor.removed)
            and any(self.after in line for line in survivor.added)
            and self.above in survivor.above
        )


_CODEC_NAMES = "Python's codec names are case-insensitive: 'ASCII' is 'ascii', 'UTF-8' is 'utf-8'."
_FIRST_PIECE = "The first piece of a split is the same whatever the most splits allowed."
_PLAIN_PATH = (
    "Defence in depth that _could_leave_origin repeats: the loop's first round judges the value itself, and "
    "for printable ASCII what it sees is the value unchanged, so a backslash, a start other than one '/', a "
    "'//' start, and with it any scheme or netloc urlsplit could find, are refused there anyway."
)
_DENY_PREFIX = (
    "For a prefix pattern P/*, _DENY.match('P/*') answers as _DENY.cover_prefix('P/'): no deny pattern "
    "holds a '*', so 'P/*' is never a denied name and starts with a denied prefix exactly when 'P/' does."
)
_STD3 = (
    "idna's IDNA 2008 code point check refuses every ASCII character but letters, digits and '-', and every "
    "character UTS 46 maps to one, with STD3 rules or without; _LDH_NAME checks the result again."
)
_OPENED_CACHE = (
    "The cache of opened session cookies only saves work: a value not found in it is opened again, with "
    "the same result."
)
EQUIVALENT: tuple[Equivalent, ...] = (
    Equivalent("crypto", "_b64encode", '.decode("ascii")', '.decode("ASCII")', _CODEC_NAMES),
    Equivalent("crypto", "_info", '.encode("utf-8")', '.encode("UTF-8")', _CODEC_NAMES),
    Equivalent("crypto", "derive_key", '.encode("utf-8")', '.encode("UTF-8")', _CODEC_NAMES),
    Equivalent(
        "crypto",
        "CookieCodec.__init__",
        "seen.add(key)",
        "seen.add(None)",
        "Without it a secret listed twice puts the same key twice under its id; decoding then retries an "
        "identical key after it failed, with the same result.",
    ),
    Equivalent(
        "crypto",
        "CookieCodec._unwrap",
        "or not value.isascii()",
        "and not value.isascii()",
        "urlsafe_b64decode itself refuses a str holding non-ASCII characters (ValueError, caught below); the "
        "early test only saves that work.",
    ),
    Equivalent(
        "crypto",
        "CookieCodec._unwrap",
        '"=" * (-len(value) % 4)',
        '"=" * (+len(value) % 4)',
        "Both pad a length of 2 (mod 4) with two '='; for 3 the decoder ignores '=' beyond the one it needs, "
        "and 1 is never valid base64.",
    ),
    Equivalent(
        "crypto",
        "CookieCodec.decode",
        "len(raw) < _HEADER_LENGTH + TAG_LENGTH",
        "len(raw) <= _HEADER_LENGTH + TAG_LENGTH",
        "A value of exactly a header and a tag holds an empty plaintext, which is no JSON object and is "
        "refused after decryption anyway.",
    ),
    Equivalent(
        "endpoints",
        "_secure_endpoints",
        'name.strip("/")',
        'name.strip("XX/XX")',
        "Misskey's endpoint names are lower-case: an 'X' never stands at either end of one to be stripped.",
    ),
    Equivalent(
        "endpoints",
        "validate_patterns",
        'pattern != "*"',
        'pattern != "XX*XX"',
        "'*' is no deny pattern and starts with no denied prefix, so the deny check that follows never flags "
        "it either.",
    ),
    Equivalent(
        "endpoints", "validate_patterns", 'pattern.endswith("/*") else', '.endswith("XX/*XX")', _DENY_PREFIX
    ),
    Equivalent(
        "endpoints", "validate_patterns", 'pattern.endswith("/*") else', "and False else", _DENY_PREFIX
    ),
    Equivalent(
        "endpoints",
        "EndpointPolicy.__init__",
        '"*" in allow',
        '"XX*XX" in allow',
        "An allow list holding '*' then becomes _Patterns(['*']), whose empty prefix every name starts with: "
        "everything allowed, as with None.",
    ),
    Equivalent(
        "hosts",
        "_is_forbidden",
        'char not in "\\u200c\\u200d"',
        'char not in "XX\\u200c\\u200dXX"',
        "'X' is a letter, never of a C or Z category, so excusing it too changes nothing.",
    ),
    Equivalent(
        "hosts",
        "_is_forbidden",
        'in "CZ"',
        'in "XXCZXX"',
        "No Unicode general category starts with 'X', so the added letters never match.",
    ),
    Equivalent("hosts", "_loose_canonical", '.decode("ascii")', '.decode("ASCII")', _CODEC_NAMES),
    Equivalent("hosts", "_public_name", '.decode("ascii")', '.decode("ASCII")', _CODEC_NAMES),
    Equivalent("hosts", "_public_name", "std3_rules=True", "std3_rules=False", _STD3),
    Equivalent("hosts", "_public_name", "std3_rules=True", "std3_rules=None", _STD3),
    Equivalent("hosts", "_public_name", "std3_rules=True", "uts46=True, )", _STD3),
    Equivalent(
        "hosts",
        "_public_name",
        "len(ascii_name) > 253",
        "len(ascii_name) > 254",
        "idna.encode already refuses a name over 253 characters (254 with the trailing dot, removed next).",
    ),
    Equivalent(
        "hosts",
        "_public_instance",
        'authority.rpartition(":")[2]',
        'authority.partition(":")[2]',
        "An authority with more than one ':' was refused just before; with one, both read the same port.",
    ),
    Equivalent(
        "hosts",
        "parse_dev_origin",
        "host[1:-1].lower()",
        "host[1:-1].upper()",
        "The host is lowercased again when the DevOrigin is built.",
    ),
    Equivalent("hosts", "_check_profile_path", "same = False", "same = None", "Only its truth is read."),
    Equivalent(
        "redirects",
        "on_cookie_domain",
        'match["rest"] or "/"',
        'match["rest"] or "XX/XX"',
        'It stands only for a missing path, which then goes through the path check: "/" and "/XX/XX" '
        "both pass.",
    ),
    Equivalent("redirects", "_could_leave_origin", 'split("#", 1)[0]', 'split("#", )[0]', _FIRST_PIECE),
    Equivalent("redirects", "_could_leave_origin", 'split("#", 1)[0]', 'split("#", 2)[0]', _FIRST_PIECE),
    Equivalent("redirects", "_could_leave_origin", 'split("?", 1)[0]', 'split("?", )[0]', _FIRST_PIECE),
    Equivalent("redirects", "_could_leave_origin", 'split("?", 1)[0]', 'split("?", 2)[0]', _FIRST_PIECE),
    Equivalent(
        "redirects", "_is_plain_path", 'value.startswith("//") or', '.startswith("XX//XX")', _PLAIN_PATH
    ),
    Equivalent("redirects", "_is_plain_path", 'or "\\\\" in value', '"XX\\\\XX" in value', _PLAIN_PATH),
    Equivalent("redirects", "_is_plain_path", '"//") or "\\\\" in', '"//") and "\\\\" in', _PLAIN_PATH),
    Equivalent("redirects", "_is_plain_path", 'not value.startswith("/") or', '"/") and value', _PLAIN_PATH),
    Equivalent(
        "redirects", "_is_plain_path", "return False", "return True", _PLAIN_PATH, above='"\\\\" in value'
    ),
    Equivalent("redirects", "_is_plain_path", "urlsplit(value)", "urlsplit(None)", _PLAIN_PATH),
    Equivalent("redirects", "_is_plain_path", "not parts.scheme and", "not parts.scheme or", _PLAIN_PATH),
    Equivalent("session", "SessionCookies.read", "self._opened.get(value)", "session = None", _OPENED_CACHE),
    Equivalent(
        "session", "SessionCookies.read", "self._opened.get(value)", "._opened.get(None)", _OPENED_CACHE
    ),
    Equivalent("session", "SessionCookies.read", "self._opened[value] = session", "= None", _OPENED_CACHE),
    Equivalent(
        "session",
        "SessionCookies.read",
        "len(self._opened) >= OPENED_CACHE_ENTRIES",
        "len(self._opened) > OPENED_CACHE_ENTRIES",
        "The cache's bound moves from 4096 entries to 4097: memory, not behaviour.",
    ),
    Equivalent(
        "session",
        "SessionCookies.read_pending",
        "if value else None",
        "if (value) or True else None",
        "CookieCodec.decode answers None for an empty or absent value, as the shortcut does.",
    ),
)


@dataclass(frozen=True)
class Survivor:
    name: str  # mutmut's, e.g. "app.redirects.x__could_leave_origin__mutmut_3"
    module: str  # "redirects"
    function: str  # "_could_leave_origin", or "SessionCookies.issue" for a method
    removed: tuple[str, ...]
    added: tuple[str, ...]
    above: str  # the line just above the first one changed
    diff: str


def _config(modules: list[str]) -> str:
    """mutmut's section of pyproject.toml for a run over `modules`."""
    paths = [f"app/{module}.py" for module in modules]
    tests = sorted({test for module in modules for test in MODULES[module]})
    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["app"]\n'
        f"only_mutate = {json.dumps(paths)}\n"
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider"]\n'
    )


def _scratch(modules: list[str]) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="tobira-mutation-"))
    shutil.copytree(ROOT / "app", folder / "app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "tests", folder / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    pyproject = (ROOT / "pyproject.toml").read_text("utf-8")
    (folder / "pyproject.toml").write_text(pyproject + _config(modules), "utf-8")
    return folder


def _mutmut(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "HYPOTHESIS_STORAGE_DIRECTORY": str(folder / ".hyp")}
    return subprocess.run(
        [sys.executable, "-m", "mutmut", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def _statuses(folder: Path, modules: list[str]) -> dict[str, str]:
    """Every mutant's status, by mutmut's name, from the results mutmut keeps beside its mutants."""
    from mutmut.stats import status_by_exit_code

    statuses = {}
    for module in modules:
        meta = json.loads((folder / "mutants" / "app" / f"{module}.py.meta").read_text("utf-8"))
        for name, code in meta["exit_code_by_key"].items():
            statuses[name] = status_by_exit_code[code]
    return statuses


_NAME = re.compile(r"app\.(?P<module>\w+)\.x(?:ǁ(?P<cls>\w+)ǁ|_)(?P<function>\w+)__mutmut_\d+")


def _survivor(folder: Path, name: str) -> Survivor:
    match = _NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"unexpected mutant name {name!r}")
    function = f"{match['cls']}.{match['function']}" if match["cls"] else match["function"]
    diff = _mutmut(folder, "show", name).stdout.strip()
    lines = diff.splitlines()[3:]  # after the "# name" line and the ---/+++ header
    changed = next((i for i, line in enumerate(lines) if line.startswith("-")), 0)
    return Survivor(
        name=name,
        module=match["module"],
        function=function,
        removed=tuple(line[1:].strip() for line in lines if line.startswith("-")),
        added=tuple(line[1:].strip() for line in lines if line.startswith("+")),
        above=lines[changed - 1][1:].strip() if changed > 0 else "",
        diff=diff,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--module", action="append", choices=sorted(MODULES), help="only this (repeatable)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="mutants tested at once")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (to `mutmut browse` it)")
    args = parser.parse_args()
    modules: list[str] = args.module or list(MODULES)

    folder = _scratch(modules)
    started = time.monotonic()
    try:
        run = _mutmut(folder, "run", "--max-children", str(args.jobs))
        if run.returncode != 0 or not (folder / "mutants").is_dir():
            print(run.stdout[-4000:], run.stderr[-4000:], sep="\n", file=sys.stderr)
            print(f"mutmut failed (exit status {run.returncode})", file=sys.stderr)
            return 2
        statuses = _statuses(folder, modules)
        undetected = sorted(name for name, status in statuses.items() if status not in DETECTED)
        survivors = [_survivor(folder, name) for name in undetected]
    finally:
        if args.keep:
            print(f"scratch folder: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)

    unexplained = [s for s in survivors if not any(e.matches(s) for e in EQUIVALENT)]
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    print(f"modules: {', '.join(modules)} ({time.monotonic() - started:.0f} s)")
    print(f"mutants: {len(statuses)}")
    print(f"killed: {sum(counts.get(status, 0) for status in DETECTED)}")
    print(f"survived: {len(survivors)} ({len(survivors) - len(unexplained)} listed as equivalent)")
    for status, count in sorted(counts.items()):
        print(f"  {status}: {count}")
    for module in modules:
        mine = [name for name in statuses if name.startswith(f"app.{module}.")]
        alive = [s for s in survivors if s.module == module]
        print(
            f"  app/{module}.py: {len(mine)} mutants, {len(mine) - len(alive)} killed, {len(alive)} survived"
        )
    for survivor in survivors:
        listed = next((e for e in EQUIVALENT if e.matches(survivor)), None)
        print()
        print(f"{survivor.name}: {'equivalent: ' + listed.why if listed else 'NOT LISTED AS EQUIVALENT'}")
        print(survivor.diff)
    stale = [e for e in EQUIVALENT if e.module in modules and not any(e.matches(s) for s in survivors)]
    for entry in stale:
        print(f"\nlisted as equivalent, no longer surviving: {entry.module}.{entry.function}: {entry.before}")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())

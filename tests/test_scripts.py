"""scripts/run and the shared set-up, run against a stand-in virtualenv whose `python` and `tobira` only
write down how they were called: what each script installs, and that a second run installs nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import ROOT

RECORDER = """#!/bin/sh
echo "$(basename "$0") $*" >> "$(dirname "$0")/../calls"
"""


def checkout(tmp_path: Path) -> Path:
    """A copy of the scripts beside a pyproject.toml, and a .venv that records its calls."""
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'tobira'\n")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("python", "tobira"):
        (bin_dir / name).write_text(RECORDER)
        (bin_dir / name).chmod(0o755)
    return tmp_path


def calls(root: Path) -> list[str]:
    path = root / ".venv" / "calls"
    calls = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    return [call for call in calls if call != "python -c "]  # the "does it still run" probe


def run(root: Path, *command: str) -> str:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(root)}
    return subprocess.run(
        command, cwd=root, env=env, check=True, capture_output=True, text=True, timeout=30
    ).stdout


def test_run_installs_tobira_without_the_test_tools_once(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    run(root, "scripts/run", "--port", "8001")
    assert calls(root) == [
        f"python -m pip install --quiet --disable-pip-version-check -e {root}",
        "tobira demo --port 8001",
    ]
    run(root, "scripts/run")
    assert calls(root) == ["tobira demo"]


def test_the_test_set_up_installs_the_test_extra_once(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    ensure = "source scripts/_setup.sh && ensure_venv test"
    run(root, "bash", "-c", ensure)
    assert calls(root) == [f"python -m pip install --quiet --disable-pip-version-check -e {root}[test]"]
    run(root, "bash", "-c", ensure)
    run(root, "scripts/run")  # the test extra includes everything the demo needs
    assert calls(root) == ["tobira demo"]

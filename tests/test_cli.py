"""The `tobira` command as a person meets it: options, help, version, and ports that are taken."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import __version__
from app.cli import main, parser
from tests.conftest import ROOT, free_port

TAKEN = (
    "tobira: cannot listen on http://127.0.0.1:{port}: the port is already in use (by another tobira, or "
    "another program). Choose another port with {option}.\n"
)


def run_cli(tmp_path: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "TOBIRA_DATA_DIR": str(tmp_path / "data"), **extra_env}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another program listens on."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"tobira {__version__}\n"


@pytest.mark.parametrize("command", ["serve", "demo"])
@pytest.mark.parametrize("value", ["0", "65536", "99999", "-1", "eighty"])
def test_a_port_out_of_range_is_refused(command: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--port", value])
    assert exited.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    reason = f"{value!r} is not a port number" if value == "eighty" else f"{value} is not a port number"
    assert error.startswith(f"tobira {command}: error: argument --port: {reason}")


def test_the_demo_host_must_be_an_address(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--host", "example.com"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "tobira demo: error: argument --host: 'example.com' is not an IP address"
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_the_demo_needs_an_address_a_browser_can_open(host: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--host", host])
    assert exited.value.code == f"tobira: the demo needs an address a browser can open, not {host}"


def test_every_option_has_help() -> None:
    commands = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    options = {
        (name, action.option_strings[-1]): action.help
        for name, command in commands.choices.items()
        for action in command._actions
        if action.option_strings and action.dest != "help"
    }
    assert sorted(options) == [
        ("demo", "--host"),
        ("demo", "--port"),
        ("demo", "--standin-port"),
        ("hash-secret", "--generate"),
        ("serve", "--host"),
        ("serve", "--port"),
        ("serve", "--workers"),
    ]
    assert all(text and text.endswith("(default: %(default)s)") for text in options.values()), options


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0", "0 workers: use 1 to 256"),
        ("257", "257 workers: use 1 to 256"),
        ("two", "'two' is not a number"),
    ],
)
def test_a_worker_count_out_of_range_is_refused(
    value: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--workers", value])
    assert exited.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith(f"tobira serve: error: argument --workers: {reason}")


def test_workers_on_a_taken_port_say_so_once(tmp_path: Path, taken_port: int) -> None:
    finished = run_cli(tmp_path, "serve", "--workers", "2", "--port", str(taken_port))
    assert (finished.returncode, finished.stdout) == (1, "")
    assert finished.stderr == TAKEN.format(port=taken_port, option="--port")


def test_workers_with_a_bad_configuration_say_so_once_and_start_none(tmp_path: Path) -> None:
    finished = run_cli(
        tmp_path, "serve", "--workers", "3", "--port", str(free_port()), TOBIRA_PERMISSIONS="nope"
    )
    assert (finished.returncode, finished.stdout) == (1, "")
    assert finished.stderr.count("nope") == 1, finished.stderr
    assert "Started" not in finished.stderr


def test_serve_on_a_taken_port_says_so_once(tmp_path: Path, taken_port: int) -> None:
    finished = run_cli(tmp_path, "serve", "--port", str(taken_port))
    assert finished.returncode == 1
    assert finished.stdout == ""
    assert finished.stderr == TAKEN.format(port=taken_port, option="--port")


@pytest.mark.parametrize("taken", ["tobira", "stand-in"])
def test_the_demo_on_a_taken_port_says_so_and_prints_no_url(
    tmp_path: Path, taken_port: int, taken: str
) -> None:
    other = free_port()
    port, standin_port = (taken_port, other) if taken == "tobira" else (other, taken_port)
    finished = run_cli(tmp_path, "demo", "--port", str(port), "--standin-port", str(standin_port))
    assert finished.returncode == 1
    assert finished.stdout == ""
    option = "--port" if taken == "tobira" else "--standin-port"
    assert finished.stderr == TAKEN.format(port=taken_port, option=option)


def test_the_demo_prints_its_urls_once_both_servers_listen(tmp_path: Path) -> None:
    port, standin_port = free_port(), free_port()
    env = {"PATH": os.environ.get("PATH", ""), "TOBIRA_DATA_DIR": str(tmp_path / "data")}
    args = ["demo", "--port", str(port), "--standin-port", str(standin_port)]
    with subprocess.Popen(
        [sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    ) as demo:
        try:
            assert demo.stdout is not None
            printed = [demo.stdout.readline() for _ in range(4)]
            # No retry: what was printed must already accept connections.
            for listening in (port, standin_port):
                socket.create_connection(("127.0.0.1", listening), timeout=5).close()
        finally:
            demo.terminate()
            demo.wait(timeout=15)
    standin = f"http://127.0.0.1:{standin_port}"
    assert printed == [
        "\n",
        f"  stand-in Misskey server: {standin}  (type {standin.removeprefix('http://')} to sign in)\n",
        f"  tobira:                  http://127.0.0.1:{port}\n",
        "\n",
    ]

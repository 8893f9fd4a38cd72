"""A real nginx in front of tobira processes, run with the deployment's own configuration.

`run_nginx` takes `deploy/nginx/tobira.conf` and `deploy/nginx/upstream.conf` as they are, changing only
the listening address and the upstream servers' addresses (to loopback ports), and adds one header for the
tests: `X-Upstream`, the address of the tobira that answered. One worker process, so round robin strictly
alternates. The two files are included in the order the nginx image's `conf.d/*.conf` takes them in
compose.yaml (default.conf, then upstream.conf).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy" / "nginx"


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    assert found, "nginx not found: install Debian's nginx (scripts/test does)"
    return found


def temp_paths(directory: Path) -> str:
    """nginx's temporary folders inside `directory` (its defaults are under /var, not for tests)."""
    return "\n".join(
        f"    {kind}_temp_path {directory / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )


def wait_listening(port: int, process: subprocess.Popen[bytes], log: Path, name: str = "the proxy") -> None:
    """Return once something listens on 127.0.0.1:`port`; RuntimeError with `log` if `process` exits first
    or nothing listens within 20 s."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited:\n{log.read_text(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not start:\n{log.read_text(errors='replace')}")


def site_config(listen: str) -> str:
    """deploy/nginx/tobira.conf listening on `listen` instead of port 80."""
    text, count = re.subn(
        r"(?m)^(\s*)listen 80;$", rf"\g<1>listen {listen};", (DEPLOY / "tobira.conf").read_text()
    )
    assert count == 1
    return text


def upstream_config(servers: list[str]) -> str:
    """deploy/nginx/upstream.conf with `servers` (host:port) in place of the compose file's replicas."""
    lines = (DEPLOY / "upstream.conf").read_text().splitlines()
    template = [line for line in lines if line.strip().startswith("server ")]
    assert template, "upstream.conf names no server"
    options = template[0].split(None, 2)[2] if len(template[0].split(None, 2)) == 3 else ";"
    first = lines.index(template[0])
    kept = [line for line in lines if line not in template]
    kept[first:first] = [f"    server {server} {options}" for server in servers]
    return "\n".join(kept) + "\n"


@contextmanager
def run_nginx(directory: Path, port: int, servers: list[str], host: str = "127.0.0.1") -> Iterator[str]:
    """nginx on host:port alternating between `servers`; yields its URL."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "site.conf").write_text(site_config(f"{host}:{port}"))
    (directory / "upstream.conf").write_text(upstream_config(servers))
    temp = temp_paths(directory)
    (directory / "nginx.conf").write_text(
        f"""worker_processes 1;
daemon off;
pid {directory / "nginx.pid"};
error_log {directory / "error.log"} info;
events {{
    worker_connections 512;
}}
http {{
    access_log {directory / "access.log"};
{temp}
    add_header X-Upstream $upstream_addr always;
    include {directory / "site.conf"};
    include {directory / "upstream.conf"};
}}
"""
    )
    log = directory / "nginx.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                nginx_binary(),
                "-p",
                str(directory),
                "-c",
                str(directory / "nginx.conf"),
                "-e",
                str(directory / "error.log"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"nginx exited:\n{log.read_text()}\n{(directory / 'error.log').read_text()}"
                )
            try:
                httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

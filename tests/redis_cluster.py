"""Real Redis for the tests: Debian's `redis-server` and `redis-sentinel` on free loopback ports.

`SentinelGroup` starts a primary, a replica and three sentinels watching them (quorum 2), each in a
temporary directory, none persisting anything, and stops them all when its `with` block ends. It never
touches the machine's own Redis on 6379.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import redis

from tests.conftest import free_port

HOST = "127.0.0.1"
SERVICE = "tobira-primary"
DOWN_AFTER_MS = 1000  # how long the sentinels wait before they call the primary down
FAILOVER_TIMEOUT_MS = 5000


def binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    assert found, f"{name} not found: install Debian's redis-server and redis-sentinel (scripts/test does)"
    return found


@dataclass
class RedisProcess:
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    password: str | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(
            HOST, self.port, password=self.password, socket_timeout=2, socket_connect_timeout=2
        )

    def kill(self) -> None:
        """SIGKILL: the machine vanishes, nothing is said to anyone."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def start_redis(
    directory: Path, *options: str, sentinel_config: Path | None = None, password: str | None = None
) -> RedisProcess:
    """A `redis-server` with `options` on a free port, or a `redis-sentinel` reading `sentinel_config`."""
    port = free_port(HOST)
    directory.mkdir(parents=True, exist_ok=True)
    program = "redis-server" if sentinel_config is None else "redis-sentinel"
    log = directory / f"{program}-{port}.log"
    if sentinel_config is None:
        command = [binary(program), "--save", "", "--appendonly", "no"]
    else:
        command = [binary(program), str(sentinel_config)]
    command += ["--bind", HOST, "--port", str(port), "--dir", str(directory), *options]
    if password:
        command += ["--requirepass", password, "--masterauth", password]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    server = RedisProcess(port, process, log, password)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{program} exited:\n{log.read_text(errors='replace')}")
        try:
            if server.client().ping():
                return server
        except redis.RedisError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"{program} did not start:\n{log.read_text(errors='replace')}")


@dataclass
class SentinelGroup:
    """A primary, a replica and three sentinels, on loopback, for one test."""

    directory: Path
    password: str | None = None
    primary: RedisProcess = field(init=False)
    replica: RedisProcess = field(init=False)
    sentinels: list[RedisProcess] = field(init=False, default_factory=list)

    def __enter__(self) -> SentinelGroup:
        self.primary = start_redis(self.directory / "primary", password=self.password)
        replica_of = ("--replicaof", HOST, str(self.primary.port))
        self.replica = start_redis(self.directory / "replica", *replica_of, password=self.password)
        try:
            for number in range(3):
                config = self.directory / f"sentinel-{number}" / "sentinel.conf"
                config.parent.mkdir(parents=True)
                lines = [
                    f"sentinel monitor {SERVICE} {HOST} {self.primary.port} 2",
                    f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
                    f"sentinel parallel-syncs {SERVICE} 1",
                ]
                if self.password:
                    lines.append(f"sentinel auth-pass {SERVICE} {self.password}")
                config.write_text("\n".join(lines) + "\n")
                self.sentinels.append(start_redis(config.parent, sentinel_config=config))
            self.wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.primary]:
            server.stop()

    def url(self, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        hosts = ",".join(f"{HOST}:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{auth}{hosts}/{SERVICE}/{db}"

    def primary_port(self) -> int:
        """The primary's port as the first sentinel tells it."""
        with self.sentinels[0].client() as client:
            _, port = client.sentinel_get_master_addr_by_name(SERVICE)
            return int(port)

    def wait_until_ready(self, timeout: float = 20) -> None:
        """Until every sentinel knows the replica and the other sentinels, and the replica is in sync."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = True
            for sentinel in self.sentinels:
                with sentinel.client() as client:
                    master = client.sentinel_master(SERVICE)
                    ready &= int(master["num-slaves"]) >= 1 and int(master["num-other-sentinels"]) >= 2
            with self.replica.client() as client:
                ready &= client.info("replication").get("master_link_status") == "up"
            if ready:
                return
            time.sleep(0.1)
        raise RuntimeError("the sentinels did not see the replica and each other in time")

    def wait_for_failover(self, timeout: float = 30) -> float:
        """Seconds until the sentinels name the replica as the primary."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                if self.primary_port() == self.replica.port:
                    return time.monotonic() - started
            except redis.RedisError:
                pass
            time.sleep(0.05)
        raise RuntimeError("no failover in time")

"""Tools for the catalogue of attacks (`test_hostile.py`): a canary, a redirecting instance, fakes, raw HTTP.

- `Canary`: TCP listeners on loopback addresses and ports tobira must never connect to. Each connection it
  accepts is recorded; `hits()` first pushes a sentinel connection through every listener, so whatever
  reached the kernel before the call has been accepted and counted by the time it returns.
- `Redirector`: a tiny HTTP server that answers every request with whatever redirect a test sets, with a
  plausible Misskey JSON body, so that following it or reading it would both be visible.
- `FakeResolver` and `FakeClock`: what `app.main.create_app` accepts for tests.
- `tripwire`: refuses (ENETUNREACH) and records every socket connect to a non-loopback address, so an
  in-process tobira cannot send anything off this machine.
- `send_raw`: one HTTP/1.1 request written byte for byte, Content-Length included or not.
- `mint_session` / `mint_pending`: cookies sealed with known keys, as someone holding them could make.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from app.errors import InstanceNotFound
from app.hosts import Instance, parse_dev_origin, parse_instance
from app.session import PendingSignIn, SessionCookies

CANARY_CANDIDATES = ("127.0.0.9", "127.0.9.9", "127.9.0.9", "127.9.9.9")
CANARY_PORTS = (443, 80, 3000, 8080)
# Best effort: other addresses a confused tobira might reach for. Taken only when free on this machine.
EXTRA_CANARIES = (("127.0.0.1", 443), ("127.0.0.1", 80), ("127.0.0.2", 443), ("127.0.0.2", 80), ("::1", 443))


def pick_canary_ip() -> str:
    """The first candidate address whose port 443 is free (another run of this suite may hold 127.0.0.9)."""
    for candidate in CANARY_CANDIDATES:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((candidate, 443))
            except OSError:
                continue
            return candidate
    raise RuntimeError("no canary address is free")


def ipv4_spellings(address: str) -> dict[str, str]:
    """Every way `inet_aton` and friends read `address`: decimal, hex, octal, short forms, mixed."""
    octets = [int(part) for part in address.split(".")]
    value = int(ipaddress.IPv4Address(address))
    return {
        "decimal": str(value),
        "hex": f"0x{value:08x}",
        "hex-upper": f"0X{value:08X}",
        "octal-whole": f"0{value:o}",
        "dotted-octal": ".".join(f"0{octet:o}" for octet in octets),
        "dotted-hex": ".".join(f"0x{octet:x}" for octet in octets),
        "dotted-zero-padded": ".".join(f"{octet:03d}" for octet in octets),
        "short-a.b": f"{octets[0]}.{octets[1] << 16 | octets[2] << 8 | octets[3]}",
        "short-a.b.c": f"{octets[0]}.{octets[1]}.{octets[2] << 8 | octets[3]}",
        "mixed-hex-octal": f"0x{octets[0]:x}.0{octets[1]:o}.{octets[2]}.0{octets[3]:o}",
        "trailing-dot": address + ".",
        "mapped-v6": f"[::ffff:{address}]",
        "mapped-v6-hex": f"[::ffff:{value >> 16:x}:{value & 0xFFFF:x}]",
        "compatible-v6": f"[::{address}]",
        "nat64-v6": f"[64:ff9b::{address}]",
        "full-width-digits": address.translate(str.maketrans("0123456789.", "０１２３４５６７８９．")),
        "ideographic-dots": address.replace(".", "。"),
        "halfwidth-ideographic-dots": address.replace(".", "｡"),
    }


@dataclass(frozen=True)
class Hit:
    listener: tuple[str, int]
    peer: tuple[str, int]


class Canary:
    """Listeners that count connections; every connection they accept is a failure of tobira's guard."""

    def __init__(self, required: list[tuple[str, int]], optional: tuple[tuple[str, int], ...] = ()) -> None:
        self._selector = selectors.DefaultSelector()
        self._changed = threading.Condition()
        self._accepted: list[Hit] = []  # everything accepted, in order
        self._judged = 0  # how much of _accepted hits() has sorted into sentinels and hits
        self._hits: list[Hit] = []
        self.listeners: list[tuple[str, int]] = []
        for address, port in [*required, *optional]:
            try:
                listener = self._listen(address, port)
            except OSError:
                if (address, port) in required:
                    self.close()
                    raise
                continue
            bound = listener.getsockname()[:2]  # the real port when asked for port 0
            self._selector.register(listener, selectors.EVENT_READ, bound)
            self.listeners.append(bound)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="canary", daemon=True)
        self._thread.start()

    @staticmethod
    def _listen(address: str, port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
        # Our own closed connections linger in TIME_WAIT; a listener still in use elsewhere is refused anyway.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((address, port))
            listener.listen(64)
        except OSError:
            listener.close()
            raise
        listener.setblocking(False)
        return listener

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.05):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    conn, peer = sock.accept()
                except OSError:
                    continue
                conn.close()
                with self._changed:
                    self._accepted.append(Hit(key.data, (peer[0], peer[1])))
                    self._changed.notify_all()

    def hits(self) -> list[Hit]:
        """Every connection accepted so far that was not one of our own sentinels."""
        sentinels: set[Hit] = set()
        for address, port in self.listeners:
            with socket.create_connection((address, port), timeout=5) as sentinel:
                local = sentinel.getsockname()
                sentinels.add(Hit((address, port), (local[0], local[1])))
        with self._changed:
            # Each listener accepts in arrival order: once our sentinel is in, so is all that came before it.
            if not self._changed.wait_for(lambda: sentinels <= set(self._accepted[self._judged :]), 5):
                raise RuntimeError("the canary did not accept its own sentinel connections")
            self._hits += [hit for hit in self._accepted[self._judged :] if hit not in sentinels]
            self._judged = len(self._accepted)
            return list(self._hits)

    def close(self) -> None:
        if hasattr(self, "_stop"):
            self._stop.set()
            self._thread.join(5)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()


@dataclass
class RedirectAnswer:
    status: int = 302
    location: str = "http://127.0.0.9/"


# What a Misskey server would answer to meta, check and most API calls: if tobira ever used the body of a
# redirect, it would go on as if the call had succeeded.
PLAUSIBLE_BODY = json.dumps(
    {
        "version": "2026.5.4",
        "name": "redirector",
        "features": {"miauth": True},
        "ok": True,
        "token": "tokenFromARedirect0123456789abcd",
        "user": {"id": "9xevil0000", "username": "mallory", "host": None},
        "id": "9xevil0000",
        "username": "mallory",
    }
).encode()


class _RedirectHandler(BaseHTTPRequestHandler):
    server: _RedirectServer

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        self.server.requests.append((self.command, self.path))
        answer = self.server.answer
        self.send_response(answer.status)
        self.send_header("Location", answer.location)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(PLAUSIBLE_BODY)))
        self.end_headers()
        self.wfile.write(PLAUSIBLE_BODY)

    do_GET = do_POST = do_HEAD = do_PUT = _answer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read `requests` instead."""


class _RedirectServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _RedirectHandler)
        self.answer = RedirectAnswer()
        self.requests: list[tuple[str, str]] = []

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: tobira hangs up on a redirect before reading its body (a broken pipe here), as it should."""


class Redirector:
    """A 'Misskey server' that answers everything with the redirect in `answer`."""

    def __init__(self, host: str = "127.0.0.3") -> None:
        self._server = _RedirectServer((host, 0))
        self.port: int = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="redirector", daemon=True)
        self._thread.start()

    @property
    def answer(self) -> RedirectAnswer:
        return self._server.answer

    @property
    def requests(self) -> list[tuple[str, str]]:
        return self._server.requests

    def settle(self, quiet: float = 0.1, limit: float = 5.0) -> None:
        """Wait until no request has arrived for `quiet` seconds (at most `limit`): requests a test's
        tobira had already sent when it gave up (discovery's side requests) land before the next test."""
        deadline = time.monotonic() + limit
        seen = -1
        while time.monotonic() < deadline and seen != len(self._server.requests):
            seen = len(self._server.requests)
            time.sleep(quiet)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class FakeResolver:
    """Answers from a script {host: [answer, ...]}: each lookup takes the next answer, the last repeats."""

    def __init__(self, script: dict[str, list[list[str]]]) -> None:
        self.script = {host: [list(answer) for answer in answers] for host, answers in script.items()}
        self.calls: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        answers = self.script.get(host)
        if not answers:
            raise InstanceNotFound()
        return list(answers.pop(0) if len(answers) > 1 else answers[0])


@dataclass
class FakeClock:
    """A wall clock that moves only when told to."""

    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Tripwire:
    attempts: list[tuple[str, int]] = field(default_factory=list)


@contextmanager
def tripwire(monkeypatch: pytest.MonkeyPatch) -> Iterator[Tripwire]:
    """Record every IP connect in this process; non-loopback ones fail at once without leaving the machine."""
    seen = Tripwire()
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            seen.attempts.append((address[0], address[1]))
            if not ipaddress.ip_address(address[0]).is_loopback:
                raise OSError(errno.ENETUNREACH, "tripwire: nothing leaves this machine")

    def connect(sock: socket.socket, address: Any) -> None:
        check(sock, address)
        real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        check(sock, address)
        return real_connect_ex(sock, address)

    with monkeypatch.context() as patch:
        patch.setattr(socket.socket, "connect", connect)
        patch.setattr(socket.socket, "connect_ex", connect_ex)
        yield seen


def send_raw(base_url: str, head: list[str], body: bytes = b"") -> tuple[int, bytes]:
    """Send the request line and headers in `head` exactly as given (no Content-Length added) and `body`.

    Returns (status, body of the answer). `Host` and `Connection: close` are added.
    """
    parts = urlsplit(base_url)
    lines = [head[0], f"Host: {parts.netloc}", "Connection: close", *head[1:]]
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        answer = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def dev_instance(origin: str) -> Instance:
    """The Instance tobira makes of a TOBIRA_DEV_INSTANCES origin."""
    return parse_instance(origin, (parse_dev_origin(origin),))


def mint_session(
    keys: list[str],
    instance: Instance,
    token: str,
    *,
    username: str = "alice",
    max_age: int = 3600,
    secure: bool = False,
) -> str:
    """A session cookie value sealed with `keys`, as tobira itself would issue it."""
    cookies = SessionCookies(keys, secure=secure, max_age=max_age)
    _, value = cookies.issue(
        instance, token=token, user={"id": f"id-{username}", "username": username}, method="miauth"
    )
    return value


def mint_pending(keys: list[str], instance: Instance, session: str, return_to: str = "/") -> str:
    """A sign-in cookie value sealed with `keys` that lists one MiAuth session."""
    cookies = SessionCookies(keys, secure=False, max_age=3600)
    item: PendingSignIn = cookies.new_pending(instance, session, return_to, "miauth")
    return cookies.write_pending([item])

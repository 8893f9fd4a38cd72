"""Hostile https servers for the network lab, written at the byte level where no web framework would go.

`RawTLSServer` listens on (address, 443) with a certificate of the lab's CA and hands each connection, once
the request head has arrived, to a behaviour in a thread of its own:

- `endless_header`: a status line, then one header line that never ends;
- `gzip_then_endless`: a gzip-encoded Misskey `meta`, then bytes after the end of the gzip stream that never
  end (a client that keeps what zlib leaves over grows without bound);
- `redirect_echo`: a 302 whose `Location` repeats the request's target, query string (and token) included,
  on an https URL, as a misconfigured proxy in front of `/streaming` would.

Every load is bounded: an endless answer stops after `MAX_BYTES` or `MAX_SECONDS`, or as soon as the client
hangs up. `requests` keeps each request line received, `sent` the bytes written to each connection.
"""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_BYTES = 128 * 1024 * 1024
MAX_SECONDS = 20.0
MAX_HEAD = 64 * 1024
CHUNK = 64 * 1024

Behaviour = Callable[[ssl.SSLSocket, str, "RawTLSServer"], None]


@dataclass
class RawTLSServer:
    """A TLS listener that answers every request with `behaviour`; `start()`, then `close()`."""

    address: str
    host: str  # the name it is reached by (for absolute URLs it sends)
    context: ssl.SSLContext
    behaviour: Behaviour
    requests: list[str] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.address, 443))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self._thread = threading.Thread(target=self._accept, name=f"raw-{self.host}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()

    def stopping(self) -> bool:
        return self._stop.is_set()

    def count(self, sent: int) -> None:
        with self._lock:
            self.sent.append(sent)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(
                target=self._handle, args=(conn,), name=f"raw-{self.host}-conn", daemon=True
            ).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                head = b""
                while b"\r\n\r\n" not in head and len(head) < MAX_HEAD:
                    chunk = tls.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
                with self._lock:
                    self.requests.append(request_line)
                self.behaviour(tls, request_line, self)
        except (OSError, ssl.SSLError):
            pass  # the client hung up or refused our certificate: nothing more to send
        finally:
            conn.close()


def _send_endless(tls: ssl.SSLSocket, server: RawTLSServer, start: bytes, filler: bytes) -> None:
    """Write `start`, then `filler` again and again until the client leaves or a bound is reached."""
    sent = 0
    deadline = time.monotonic() + MAX_SECONDS
    try:
        tls.sendall(start)
        sent += len(start)
        while sent < MAX_BYTES and time.monotonic() < deadline and not server.stopping():
            tls.sendall(filler)
            sent += len(filler)
    finally:
        server.count(sent)


def endless_header(tls: ssl.SSLSocket, request_line: str, server: RawTLSServer) -> None:
    start = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Endless: "
    _send_endless(tls, server, start, b"a" * CHUNK)


MISSKEY_META = json.dumps({"name": "Gzip tail", "version": "2026.5.4", "features": {"miauth": True}}).encode()


def gzip_then_endless(tls: ssl.SSLSocket, request_line: str, server: RawTLSServer) -> None:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        b"Connection: close\r\n\r\n"
    )
    _send_endless(tls, server, head + gzip.compress(MISSKEY_META), b"\0" * CHUNK)


def redirect_echo(tls: ssl.SSLSocket, request_line: str, server: RawTLSServer) -> None:
    parts = request_line.split(" ")
    target = parts[1] if len(parts) == 3 else "/"
    answer = (
        f"HTTP/1.1 302 Found\r\nLocation: https://{server.host}{target}\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    tls.sendall(answer)
    server.count(len(answer))

"""Serve a stand-in over real HTTP from a background thread, for tests and `tobira demo`.

The socket is bound here before uvicorn starts, so port 0 picks a free port that is known at once (and an
empty `base_url` becomes the bound address). uvicorn runs in its own thread with its own event loop and no
signal handlers, behind the `FaultLayer` that lets tests switch faults on (`app.standin.faults`). Given a
certificate and key it serves https (the network lab runs stand-ins on port 443 behind a test CA). Leaving
the context stops it: requests left hanging (a non-string `i`) and faults holding a connection end, and a
client that still holds a connection open after that is not waited for more than a few seconds.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace
from types import TracebackType

import uvicorn

from app.standin.config import StandinConfig
from app.standin.faults import FaultLayer
from app.standin.server import create_standin_app
from app.standin.state import StandinState

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


class RunningStandin:
    """A started stand-in: its `url`, `port` and live `state`. Use as a context manager.

    `certfile`/`keyfile` (PEM): serve https instead of http. `keep_alive`: seconds an idle connection is kept
    before the server closes it (uvicorn's default is 5; a large value plays a server that never does).
    """

    def __init__(
        self,
        config: StandinConfig,
        host: str,
        port: int,
        *,
        certfile: str | None = None,
        keyfile: str | None = None,
        keep_alive: int = 5,
    ) -> None:
        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        scheme = "https" if certfile else "http"
        authority = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self.url = f"{scheme}://{authority}"
        app = create_standin_app(config if config.base_url else replace(config, base_url=self.url))
        self.state: StandinState = app.state.standin
        self.config = self.state.config
        self._server = uvicorn.Server(
            uvicorn.Config(
                FaultLayer(app, self.state),
                host=host,
                port=self.port,
                log_level="warning",
                lifespan="on",
                ws="websockets-sansio",
                ssl_certfile=certfile,
                ssl_keyfile=keyfile,
                timeout_keep_alive=keep_alive,
            )
        )
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"standin-{self.port}",
            daemon=True,
        )

    def start(self) -> None:
        """Start serving; returns once the server accepts connections. Raises RuntimeError if it cannot."""
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the stand-in Misskey server did not start on {self.url}")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving and release the port; idempotent."""
        self.state.stopping = True
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT)
        if self._thread.is_alive():  # a client keeping its connection open: do not wait for it
            self._server.force_exit = True
            self._thread.join(STOP_TIMEOUT)
        self._socket.close()

    def __enter__(self) -> RunningStandin:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def run_standin_in_thread(
    config: StandinConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
    keep_alive: int = 5,
) -> RunningStandin:
    """A stand-in bound to `host:port` (0: any free port), started when its context is entered; https when
    given a certificate and key (see `RunningStandin`)."""
    return RunningStandin(config, host, port, certfile=certfile, keyfile=keyfile, keep_alive=keep_alive)

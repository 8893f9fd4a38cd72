"""The `tobira` command: `tobira serve` runs tobira; `tobira demo` runs it beside a stand-in Misskey.

Every port is bound before anything is announced: a port that is taken ends the command with one line on
stderr and exit status 1, and the URLs printed are ones that already accept connections. The configuration
is checked once, before any worker starts, so a bad one is one message, not one crash per worker.

`tobira serve --workers N` runs N processes (uvicorn's supervisor, which replaces a worker that dies) on the
one listening socket; each builds its own app from the environment (`app.main:create_app`) and they share
state through the store (`TOBIRA_STORE_URL`), so they behave as one.
"""

from __future__ import annotations

import argparse
import errno
import getpass
import ipaddress
import os
import secrets
import socket
import sys
from typing import Any, NoReturn

import uvicorn

from app import __version__
from app.config import ConfigError, Settings, load_settings
from app.lanes import LaneProtocol
from app.main import create_app

DEFAULT_HOST = "127.0.0.1"
GRACEFUL_SECONDS = 10  # on SIGTERM, requests under way get this long to finish (SPEC: "up to 10 s")
MAX_WORKERS = 256


def port_number(text: str) -> int:
    """argparse type: a TCP port, 1 to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number: use 1 to 65535")
    return port


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port, or exit with one line saying why it cannot be."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restarts need no wait
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        cannot_listen(exc, host, port, "--port")
    return sock


def cannot_listen(error: OSError, host: str, port: int, option: str) -> NoReturn:
    """Exit with one line: which address, why, and the option that chooses another port."""
    if error.errno == errno.EADDRINUSE:
        reason = "the port is already in use (by another tobira, or another program)"
    else:
        reason = error.strerror or str(error)
    sys.exit(f"tobira: cannot listen on {url(host, port)}: {reason}. Choose another port with {option}.")


def url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        sys.exit(str(exc))


def worker_count(text: str) -> int:
    """argparse type: a number of worker processes, 1 to MAX_WORKERS."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of workers") from None
    if not 1 <= count <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"{count} workers: use 1 to {MAX_WORKERS}")
    return count


def run(sock: socket.socket, settings: Settings, workers: int = 1) -> None:
    """Run tobira on an already listening socket, in this process or in `workers` worker processes."""
    if workers == 1:
        uvicorn.Server(_config(settings, create_app(settings))).run(sockets=[sock])
        return
    # Workers are separate (spawned) processes: each builds the app from the environment, as `settings`
    # was built, which is why the app is named by its import string here.
    from uvicorn.supervisors import Multiprocess

    config = _config(settings, "app.main:create_app", factory=True, workers=workers)
    Multiprocess(config, sockets=[sock]).run()


def _config(settings: Settings, app: Any, **processes: Any) -> uvicorn.Config:
    """uvicorn's configuration for tobira, in one process or several."""
    return uvicorn.Config(
        app,
        # tobira believes X-Forwarded-* itself (app.forwarded): uvicorn must leave the client address alone.
        proxy_headers=False,
        access_log=False,
        log_level="info",
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        http=LaneProtocol,  # the hot paths below uvicorn's request-response cycle
        # No per-message compression on the browsers' streams, as Misskey's own server offers none: its
        # state costs ~40 KiB an idle stream (README, "Capacity of one process").
        ws_per_message_deflate=False,
        **processes,
    )


def serve(host: str, port: int, workers: int = 1) -> None:
    settings = settings_or_exit()  # every worker loads the same: a bad configuration stops here, once
    sock = listen(host, port)
    processes = f", {workers} worker processes" if workers > 1 else ""
    print(f"tobira: listening on {url(host, port)}{processes} (Ctrl+C to stop)", flush=True)
    run(sock, settings, workers)


def demo(host: str, port: int, standin_port: int) -> None:
    """Start the stand-in and tobira, which is allowed to use it; no network needed."""
    from app.standin import StandinConfig, run_standin_in_thread  # the demo alone may import it

    if ipaddress.ip_address(host).is_unspecified:
        sys.exit(f"tobira: the demo needs an address a browser can open, not {host}")
    tobira_url, standin_url = url(host, port), url(host, standin_port)
    with listen(host, port) as sock:
        try:
            standin = run_standin_in_thread(StandinConfig(base_url=standin_url), host=host, port=standin_port)
        except OSError as exc:
            cannot_listen(exc, host, standin_port, "--standin-port")
        os.environ.setdefault("TOBIRA_PUBLIC_URL", tobira_url)
        os.environ["TOBIRA_DEV_INSTANCES"] = ",".join(
            filter(None, [os.environ.get("TOBIRA_DEV_INSTANCES"), standin_url])
        )
        os.environ.setdefault("TOBIRA_PERMISSIONS", "read:account,write:notes,write:drive")
        settings = settings_or_exit()  # before anything starts: a bad configuration prints no URL
        with standin:
            typed = standin_url.removeprefix("http://")
            print(f"\n  stand-in Misskey server: {standin_url}  (type {typed} to sign in)")
            print(f"  tobira:                  {tobira_url}\n", flush=True)
            run(sock, settings)


def ip_literal(text: str) -> str:
    """argparse type: an IPv4 or IPv6 address, as written canonically."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="tobira", description="Sign in with Misskey.")
    top.add_argument("--version", action="version", version=f"tobira {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_parser = commands.add_parser(
        "serve",
        help="run tobira, configured from TOBIRA_* variables",
        description="Run tobira, configured from TOBIRA_* environment variables (and a .env file).",
    )
    serve_parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on; 0.0.0.0 for every interface (default: %(default)s)",
    )
    serve_parser.add_argument(
        "--port", type=port_number, default=8000, help="TCP port to listen on (default: %(default)s)"
    )
    serve_parser.add_argument(
        "--workers",
        type=worker_count,
        default=1,
        help="worker processes sharing the port and the store, e.g. one per core (default: %(default)s)",
    )
    demo_parser = commands.add_parser(
        "demo",
        help="run tobira with a local stand-in Misskey server",
        description="Run tobira and a stand-in Misskey server side by side; no network needed.",
    )
    demo_parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        type=ip_literal,
        help="IP address both servers listen on and the browser opens (default: %(default)s)",
    )
    demo_parser.add_argument(
        "--port", type=port_number, default=8000, help="tobira's TCP port (default: %(default)s)"
    )
    demo_parser.add_argument(
        "--standin-port",
        type=port_number,
        default=3000,
        help="the stand-in Misskey server's TCP port (default: %(default)s)",
    )
    hash_parser = commands.add_parser(
        "hash-secret",
        help="hash an OpenID client secret for the clients file",
        description=(
            "Read a client secret (from standard input, or asked for on a terminal) and print its argon2id "
            "hash, for client_secret_hash in the TOBIRA_OIDC_CLIENTS file. Without a secret, make a random "
            "one and print it first."
        ),
    )
    hash_parser.add_argument(
        "--generate",
        action="store_true",
        help="make a random secret, print it, then its hash (default: %(default)s)",
    )
    return top


def hash_secret(generate: bool) -> None:
    """Print the argon2id hash of a secret read from stdin (or a new random secret and its hash)."""
    from app.oidc.clients import MIN_SECRET_LENGTH
    from app.oidc.clients import hash_secret as argon2_hash

    if generate:
        secret = secrets.token_urlsafe(32)
        print(f"client_secret (give it to the app): {secret}")
    elif sys.stdin.isatty():
        secret = getpass.getpass("client secret: ")
    else:
        secret = sys.stdin.readline().rstrip("\r\n")
    if len(secret) < MIN_SECRET_LENGTH:
        sys.exit(f"tobira: a client secret must be at least {MIN_SECRET_LENGTH} characters")
    print(argon2_hash(secret))


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.command == "serve":
        serve(args.host, args.port, args.workers)
    elif args.command == "hash-secret":
        hash_secret(args.generate)
    else:
        demo(args.host, args.port, args.standin_port)


if __name__ == "__main__":
    main()

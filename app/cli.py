"""The `tobira` command: `tobira serve` runs tobira; `tobira demo` runs it beside a stand-in Misskey."""

from __future__ import annotations

import argparse
import os
import sys

import uvicorn

from app.config import ConfigError, load_settings
from app.main import create_app


def serve(host: str, port: int) -> None:
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.exit(str(exc))
    uvicorn.run(create_app(settings), host=host, port=port, proxy_headers=True, access_log=False)


def demo(port: int, standin_port: int) -> None:
    """Start the stand-in on loopback and tobira allowed to use it; no network needed."""
    from app.standin import StandinConfig, run_standin_in_thread  # the demo alone may import it

    standin_url = f"http://127.0.0.1:{standin_port}"
    os.environ.setdefault("TOBIRA_PUBLIC_URL", f"http://127.0.0.1:{port}")
    os.environ["TOBIRA_DEV_INSTANCES"] = ",".join(
        filter(None, [os.environ.get("TOBIRA_DEV_INSTANCES"), standin_url])
    )
    os.environ.setdefault("TOBIRA_PERMISSIONS", "read:account,write:notes,write:drive")
    with run_standin_in_thread(StandinConfig(base_url=standin_url), port=standin_port):
        print(f"\n  stand-in Misskey server: {standin_url}  (type 127.0.0.1:{standin_port} to sign in)")
        print(f"  tobira:                  http://127.0.0.1:{port}\n", flush=True)
        serve("127.0.0.1", port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tobira", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run tobira, configured from TOBIRA_* variables")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8000)
    demo_parser = commands.add_parser("demo", help="run tobira with a local stand-in Misskey server")
    demo_parser.add_argument("--port", type=int, default=8000)
    demo_parser.add_argument("--standin-port", type=int, default=3000)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.host, args.port)
    else:
        demo(args.port, args.standin_port)


if __name__ == "__main__":
    main()

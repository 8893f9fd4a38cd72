"""`python -m app.standin --port 3000`: run a stand-in Misskey server in the foreground."""

from __future__ import annotations

import argparse

import uvicorn

from app.standin.config import StandinConfig
from app.standin.server import create_standin_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.standin", description="A stand-in Misskey server.")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--name", default=StandinConfig.name, help="the server's name")
    parser.add_argument("--software", default=StandinConfig.software, help="nodeinfo software.name")
    parser.add_argument("--server-version", default=StandinConfig.version, help="the version it reports")
    parser.add_argument("--federation", action="store_true", help="answer /.well-known/nodeinfo")
    parser.add_argument("--no-miauth", dest="miauth", action="store_false", help="a server without MiAuth")
    parser.add_argument("--revoke-token-self", action="store_true", help="let app tokens revoke themselves")
    parser.add_argument("--rate-limit-notes-create", type=int, default=None, metavar="PER_HOUR")
    args = parser.parse_args(argv)
    config = StandinConfig(
        base_url=f"http://{args.host}:{args.port}",
        name=args.name,
        version=args.server_version,
        software=args.software,
        miauth=args.miauth,
        federation=args.federation,
        revoke_token_self=args.revoke_token_self,
        rate_limit_notes_create=args.rate_limit_notes_create,
    )
    print(f"Stand-in Misskey server at {config.base_url} (accounts: alice, bob)", flush=True)
    uvicorn.run(create_standin_app(config), host=args.host, port=args.port, log_level="info", ws="none")


if __name__ == "__main__":
    main()

"""Helpers for the OpenID provider's tests: a clients file, a relying party built on Authlib's Starlette
client (a real peer: it fetches discovery and JWKS, checks `state`, `iss`, the nonce and the ID token's
signature), and a browser walk through tobira's page and the stand-in's consent screen."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import uvicorn

from tests.conftest import STANDIN_HOST, Browser, free_port

SECRET = "wiki-secret-0123456789abcdef"
APP_SECRET = "notes-secret-0123456789abcdef"


def clients_file(tmp_path: Path, rp_url: str, extra: str = "") -> Path:
    """Three clients: a confidential identity-only wiki (the Authlib RP), a public SPA with PKCE, and a
    confidential app with Misskey permissions (ES256 ID tokens)."""
    path = tmp_path / "clients.toml"
    path.write_text(
        f"""
[[clients]]
client_id = "wiki"
client_name = "Team wiki"
redirect_uris = ["{rp_url}/callback", "http://127.0.0.1:9/cb?x=1"]
post_logout_redirect_uris = ["{rp_url}/bye"]
client_secret = "{SECRET}"

[[clients]]
client_id = "spa"
client_name = "Single page app"
redirect_uris = ["http://127.0.0.1:9/spa/cb"]

[[clients]]
client_id = "notes"
client_name = "Notes Helper"
logo_uri = "https://notes.example/logo.png"
redirect_uris = ["http://127.0.0.1:9/notes/cb"]
client_secret = "{APP_SECRET}"
permissions = ["read:account", "write:notes"]
id_token_signed_response_alg = "ES256"
{extra}
"""
    )
    return path


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def query(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


def standin_text(browser: Browser) -> str:
    return f"{STANDIN_HOST}:{browser.standin.port}"


def authorize(browser: Browser, **params: str) -> httpx.Response:
    """GET the authorize endpoint as the browser (no redirect followed)."""
    return browser.client.get(browser.tobira + "/oidc/authorize?" + urlencode(params))


def to_page(browser: Browser, answer: httpx.Response) -> tuple[str, str]:
    """From authorize's 303 to tobira's page: (the authorization id, the page's HTML)."""
    assert answer.status_code == 303, answer.text
    location = answer.headers["location"]
    assert location.startswith("/oidc/authorize/page?authorization="), location
    page = browser.client.get(browser.tobira + location)
    assert page.status_code == 200, page.text
    return query(location)["authorization"], page.text


def sign_in_on_page(browser: Browser, authorization: str, user: str = "alice") -> httpx.Response:
    """Type the stand-in on tobira's page, approve on its consent screen: the callback's answer."""
    started = browser.post_form(
        "/oidc/authorize/login", {"authorization": authorization, "instance": standin_text(browser)}
    )
    assert started.status_code == 303, started.text
    return browser.callback(browser.approve(started.headers["location"], user))


def code_flow(browser: Browser, client_id: str, redirect_uri: str, **extra: str) -> dict[str, str]:
    """A whole authorization from a browser signed out of tobira: the app's callback query."""
    params = {"client_id": client_id, "redirect_uri": redirect_uri, "response_type": "code"}
    params |= {"scope": "openid profile", "state": "st-" + secrets.token_hex(4), **extra}
    authorization, _ = to_page(browser, authorize(browser, **params))
    back = sign_in_on_page(browser, authorization)
    assert back.status_code == 303, back.text
    assert back.headers["location"].startswith(redirect_uri.split("?")[0]), back.headers["location"]
    answer = query(back.headers["location"])
    assert answer["state"] == params["state"]
    return answer


def token_request(tobira: str, data: dict[str, str], auth: tuple[str, str] | None = None) -> httpx.Response:
    return httpx.post(tobira + "/oidc/token", data=data, auth=auth, timeout=20)


# --- the relying party: Authlib's Starlette client -------------------------------------------------------


def relying_party(tobira: str, rp_url: str) -> Any:
    """A small Starlette app that signs people in with tobira through Authlib."""
    from authlib.integrations.starlette_client import OAuth
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.sessions import SessionMiddleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, RedirectResponse, Response
    from starlette.routing import Route

    oauth = OAuth()
    oauth.register(
        "tobira",
        client_id="wiki",
        client_secret=SECRET,
        server_metadata_url=tobira + "/.well-known/openid-configuration",
        client_kwargs={"scope": "openid profile", "code_challenge_method": "S256"},
    )

    async def login(request: Request) -> Response:
        response: Response = await oauth.tobira.authorize_redirect(request, rp_url + "/callback")
        return response

    async def callback(request: Request) -> Response:
        token = await oauth.tobira.authorize_access_token(request)  # validates the ID token (and its nonce)
        userinfo = await oauth.tobira.userinfo(token=token)
        request.session["id_token"] = token["id_token"]
        return JSONResponse({"id_token_claims": dict(token["userinfo"]), "userinfo": dict(userinfo)})

    async def logout(request: Request) -> Response:
        metadata = await oauth.tobira.load_server_metadata()
        params = {
            "id_token_hint": request.session.get("id_token", ""),
            "post_logout_redirect_uri": rp_url + "/bye",
            "state": "bye-state",
        }
        return RedirectResponse(metadata["end_session_endpoint"] + "?" + urlencode(params), status_code=303)

    async def bye(request: Request) -> Response:
        return JSONResponse({"signed_out": True, "state": request.query_params.get("state")})

    routes = [
        Route("/login", login),
        Route("/callback", callback),
        Route("/logout", logout),
        Route("/bye", bye),
    ]
    return Starlette(routes=routes, middleware=[Middleware(SessionMiddleware, secret_key="rp-" * 12)])


@dataclass
class RunningApp:
    url: str
    port: int


def reserve_rp() -> RunningApp:
    port = free_port()
    return RunningApp(f"http://127.0.0.1:{port}", port)


@contextmanager
def serve_in_thread(app: Any, port: int) -> Iterator[None]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)

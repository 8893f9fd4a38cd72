"""The web layer's shared pieces: templates, error responses, security headers, the services dependency."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import BadRequest, ErrorCode, RateLimited, TobiraError
from app.services import Services

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"
JSON_PREFIXES = ("/api/", "/session")

log = logging.getLogger("tobira")
templates = Jinja2Templates(directory=TEMPLATES_DIR)


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_json(error: TobiraError) -> dict[str, Any]:
    """Misskey's own error shape, so clients written for Misskey handle tobira's errors alike."""
    return {"error": {"code": str(error.code), "message": error.message, "id": error.code.id}}


def error_json_response(error: TobiraError) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after)} if isinstance(error, RateLimited) else None
    return JSONResponse(error_json(error), status_code=error.status, headers=headers)


def render_page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    services: Services = request.app.state.services
    base = {"request": request, "settings": services.settings}
    return templates.TemplateResponse(request, template, {**base, **context}, status_code=status_code)


def error_response(request: Request, error: TobiraError, **context: Any) -> Response:
    """JSON for API routes, an HTML page for everything a browser navigates to."""
    if request.url.path.startswith(JSON_PREFIXES):
        return error_json_response(error)
    headers = {"Retry-After": str(error.retry_after)} if isinstance(error, RateLimited) else None
    response = render_page(request, "error.html", error.status, error=error, **context)
    if headers:
        response.headers.update(headers)
    return response


async def handle_tobira_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TobiraError)
    return error_response(request, exc)


HTTP_ERRORS = {
    404: (ErrorCode.NOT_FOUND, "There is nothing here."),
    405: (ErrorCode.METHOD_NOT_ALLOWED, "That method is not allowed here."),
}


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code, message = HTTP_ERRORS.get(exc.status_code, (ErrorCode.INVALID_BODY, "The request is not valid."))
    error = TobiraError(message, code=code)
    error.status = exc.status_code
    response = error_response(request, error)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def handle_validation_error(request: Request, exc: Exception) -> Response:
    return error_response(request, BadRequest("The request is not valid."))


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    # Log the type only: an exception's text may quote a token or a URL with one in it.
    log.error("unexpected error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return error_response(request, TobiraError())


EXCEPTION_HANDLERS = {
    TobiraError: handle_tobira_error,
    HTTPException: handle_http_exception,
    RequestValidationError: handle_validation_error,
    Exception: handle_unexpected,
}


# Nothing goes to other sites. Not "no-referrer" everywhere: under it, browsers send `Origin: null` with
# same-origin form posts, and sign-out could no longer tell them from cross-site ones. The callback, whose
# URL carries the session id, sets "no-referrer" itself.
DEFAULT_REFERRER_POLICY = (b"referrer-policy", b"same-origin")


HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")


def api_headers(*, hsts: bool) -> list[tuple[bytes, bytes]]:
    """What JSON answers carry: a page policy means nothing to JSON, but sniffing and referrers do."""
    return [(b"x-content-type-options", b"nosniff"), DEFAULT_REFERRER_POLICY, *([HSTS] if hsts else [])]


class SecurityHeaders:
    """Adds the headers every answer carries; pages also get a strict Content-Security-Policy."""

    def __init__(self, app: ASGIApp, *, instance_sources: str, hsts: bool) -> None:
        self.app = app
        # Instances' icons and avatars are shown, and the sign-in form's 303 goes to an instance:
        # browsers apply form-action to that redirect too.
        csp = "; ".join(
            [
                "default-src 'self'",
                f"img-src 'self' data: {instance_sources}",
                f"form-action 'self' {instance_sources}",
                "frame-ancestors 'none'",
                "base-uri 'none'",
                "object-src 'none'",
            ]
        )
        self.headers = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"content-security-policy", csp.encode()),
        ]
        if hsts:
            self.headers.append(HSTS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), *self.headers]
                if not any(name == b"referrer-policy" for name, _ in headers):
                    headers.append(DEFAULT_REFERRER_POLICY)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)

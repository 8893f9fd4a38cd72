"""The web layer's shared pieces: templates, error responses, security headers, the services dependency.

Pages are rendered in the person's language (app/i18n.py): Jinja's i18n extension, whose `_()` and
`{% trans %}` look the language up in each page's own context, so concurrent pages never share one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import orjson
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, pass_context, select_autoescape
from jinja2.runtime import Context
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import i18n, recent
from app.csrf import is_same_origin
from app.errors import (
    BadRequest,
    CrossSiteRequest,
    InstanceError,
    MethodNotAllowed,
    NotFound,
    RateLimited,
    TobiraError,
    misskey_shape,
)
from app.lanes import header_lines
from app.metrics import METRICS
from app.paths import route_path
from app.services import Services

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"
JSON_PREFIXES = ("/api/", "/session", "/lookup")
# JSON routes that serve tobira's own pages: their error messages are in the page's language.
PAGE_JSON_PREFIXES = ("/lookup",)
# Query parameters a language switch link keeps: none of them starts anything or carries a secret.
KEPT_PARAMETERS = ("return_to", "rd", "authorization")  # an OpenID request waiting on its page

log = logging.getLogger("tobira")


@pass_context
def _gettext(context: Context, message: str) -> str:
    localizer: i18n.Localizer = context["i18n"]
    return localizer.gettext(message)


@pass_context
def _ngettext(context: Context, singular: str, plural: str, count: int) -> str:
    localizer: i18n.Localizer = context["i18n"]
    return localizer.ngettext(singular, plural, count)


def build_environment() -> Environment:
    """Jinja with autoescaping and the i18n extension; messages are trimmed like the extractor trims them."""
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(default=True),
        extensions=["jinja2.ext.i18n"],
    )
    environment.policies["ext.i18n.trimmed"] = True
    environment.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=_gettext, ngettext=_ngettext, newstyle=True
    )
    return environment


templates = Jinja2Templates(env=build_environment())


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_json_response(error: TobiraError) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after)} if isinstance(error, RateLimited) else None
    return JSONResponse(misskey_shape(error), status_code=error.status, headers=headers)


def request_localizer(request: Request) -> i18n.Localizer:
    """The language this request gets: `?lang=`, the `tobira-lang` cookie, `Accept-Language`, English."""
    tag = i18n.choose_language(
        request.query_params.get("lang"),
        request.cookies.get(i18n.COOKIE),
        request.headers.get("accept-language"),
    )
    return i18n.localizer(tag)


def language_links(request: Request, current: str) -> list[dict[str, Any]]:
    """The language switch: this page again in each language, keeping only harmless parameters.

    A page that answered a form post or a callback links to the sign-in form instead: following a
    callback's link again would replay its one-shot session, and a post cannot be repeated by a link.
    """
    path = request.url.path  # the whole path, prefix included: the links are absolute
    if request.method != "GET" or "callback" in route_path(request.scope):
        path = request.app.state.settings.base_path + "/login"
    kept = [(name, value) for name, value in request.query_params.multi_items() if name in KEPT_PARAMETERS]
    return [
        {
            "tag": language.tag,
            "name": language.name,
            "url": f"{path}?{urlencode([*kept, ('lang', language.tag)])}",
            "current": language.tag == current,
        }
        for language in i18n.LANGUAGES
    ]


def render_page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page in the person's language; a valid `?lang=` is also remembered in the `tobira-lang` cookie."""
    services: Services = request.app.state.services
    settings = services.settings
    localizer = request_localizer(request)
    base = {
        "request": request,
        "settings": settings,
        "i18n": localizer,
        "lang": localizer.tag,
        "languages": language_links(request, localizer.tag),
        "permissions": [localizer.permission(name) for name in settings.permissions],
        "recent": recent.read(request.cookies.get(services.cookies.recent_name), settings.dev_origins),
        # Pages shown on another site's origin (forward authentication's refusals) load tobira's assets
        # from tobira's own origin.
        "asset_base": settings.base_path,
        "base": settings.base_path,  # tobira's path prefix: every link of a page starts with it
    }
    response = templates.TemplateResponse(request, template, {**base, **context}, status_code=status_code)
    response.headers["Content-Language"] = localizer.tag
    response.headers["Vary"] = "Accept-Language, Cookie"
    chosen = i18n.match_language(request.query_params.get("lang"))
    if chosen is not None:
        response.set_cookie(
            i18n.COOKIE,
            chosen,
            max_age=i18n.COOKIE_MAX_AGE,
            path=services.cookies.path,
            secure=services.cookies.secure,
            httponly=True,
            samesite="lax",
        )
    return response


def page_error_json(request: Request, error: TobiraError) -> JSONResponse:
    """Misskey's error shape with the message in the page's language, for a page's own JSON helper."""
    body = misskey_shape(error)
    body["error"]["message"] = request_localizer(request).error_message(error)
    headers = {"Retry-After": str(error.retry_after)} if isinstance(error, RateLimited) else None
    return JSONResponse(body, status_code=error.status, headers=headers)


def error_response(request: Request, error: TobiraError, **context: Any) -> Response:
    """JSON for API routes, an HTML page in the person's language for everything a browser navigates to.

    The page shows the error's code beside the message, so that a person asking for help can quote it.
    """
    if isinstance(error, InstanceError):
        METRICS.instance_errors.labels(str(error.code)).inc()
    path = route_path(request.scope)
    if path.startswith(PAGE_JSON_PREFIXES):
        return page_error_json(request, error)
    if path.startswith(JSON_PREFIXES):
        return error_json_response(error)
    response = render_page(request, error.page, error.status, error=error, **context)
    if isinstance(error, RateLimited):
        response.headers["Retry-After"] = str(error.retry_after)
    return response


# Starlette's own refusals (no route, wrong method), as tobira's errors.
HTTP_ERRORS: dict[int, type[TobiraError]] = {404: NotFound, 405: MethodNotAllowed}


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error = HTTP_ERRORS.get(exc.status_code, BadRequest)()
    response = error_response(request, error)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def handle_validation_error(request: Request, exc: Exception) -> Response:
    return error_response(request, BadRequest("The request is not valid."))


def exception_response(request: Request, exc: Exception) -> Response:
    """The answer to any exception, for FastAPI's handlers and for the proxy alike: tobira's own errors as
    they say, anything else as an internal error whose type alone is logged (its text may quote a token)."""
    if isinstance(exc, TobiraError):
        return error_response(request, exc)
    log.error("unexpected error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return error_response(request, TobiraError())


async def handle_exception(request: Request, exc: Exception) -> Response:
    return exception_response(request, exc)


def set_cookie(response: Response, services: Services, name: str, value: str, max_age: int) -> None:
    """One of tobira's cookies: HttpOnly, SameSite=Lax, for tobira's path (the whole site at the root),
    Secure over https; the session cookie for TOBIRA_COOKIE_DOMAIN when one is set."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=cookie_path(services, name),
        domain=cookie_domain(services, name),
        secure=services.cookies.secure,
        httponly=True,
        samesite="lax",
    )


def delete_cookie(response: Response, services: Services, name: str) -> None:
    response.delete_cookie(
        name,
        path=cookie_path(services, name),
        domain=cookie_domain(services, name),
        secure=services.cookies.secure,
        httponly=True,
        samesite="lax",
    )


def cookie_domain(services: Services, name: str) -> str | None:
    cookies = services.cookies
    return cookies.domain if name == cookies.session_name else None


def cookie_path(services: Services, name: str) -> str:
    """tobira's path prefix ("/" at the root). A session cookie shared with TOBIRA_COOKIE_DOMAIN is for
    every path: the browser sends it to other sites' pages, whose forward authentication reads it."""
    cookies = services.cookies
    return "/" if cookie_domain(services, name) else cookies.path


def require_same_origin(request: Request, services: Services) -> None:
    """Raise CrossSiteRequest unless the browser says the request comes from tobira's own pages."""
    if not is_same_origin(request.headers, services.settings.public_origin):
        raise CrossSiteRequest()


EXCEPTION_HANDLERS = {
    TobiraError: handle_exception,
    HTTPException: handle_http_exception,
    RequestValidationError: handle_validation_error,
    Exception: handle_exception,
}


# Nothing goes to other sites. Not "no-referrer" everywhere: under it, browsers send `Origin: null` with
# same-origin form posts, and sign-out could no longer tell them from cross-site ones. The callback, whose
# URL carries the session id, sets "no-referrer" itself.
DEFAULT_REFERRER_POLICY = (b"referrer-policy", b"same-origin")


# The button's files are loaded by other sites' pages, including cross-origin-isolated ones (COEP
# require-corp) and ones that pin them with integrity=…: public files, sent without cookies.
EMBEDDABLE_PATHS = frozenset(("/static/button.js", "/static/button.css"))
EMBEDDABLE_HEADERS = [
    (b"cross-origin-resource-policy", b"cross-origin"),
    (b"access-control-allow-origin", b"*"),
    (b"cache-control", b"public, max-age=3600"),
]
HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")


def content_security_policy(instance_sources: str, form_targets: str = "", own_origin: str = "") -> str:
    """The pages' Content-Security-Policy. Instances' icons and avatars are shown, and the sign-in form's 303
    goes to an instance: browsers apply form-action to that redirect too (and to an OpenID page's redirect
    to the app, named in `form_targets`). `own_origin` (tobira's) is for pages a reverse proxy shows on
    another site's origin, which load tobira's assets from there."""
    own = f" {own_origin}" if own_origin else ""
    return "; ".join(
        [
            f"default-src 'self'{own}",
            f"img-src 'self'{own} data: {instance_sources}",
            f"form-action 'self' {instance_sources} {form_targets}".rstrip(),
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "object-src 'none'",
        ]
    )


class SecurityHeaders:
    """Adds the headers every answer carries; pages also get a strict Content-Security-Policy."""

    def __init__(self, app: ASGIApp, *, instance_sources: str, hsts: bool, own_origin: str = "") -> None:
        """`own_origin`: tobira's, for pages a proxy shows on another origin (they load its assets)."""
        self.app = app
        self.instance_sources = instance_sources
        csp = content_security_policy(instance_sources, own_origin=own_origin)
        self.headers = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"content-security-policy", csp.encode()),
        ]
        if hsts:
            self.headers.append(HSTS)

    def json_lines(self) -> bytes:
        """The headers it adds to an answer with none of these of its own (the proxy's), as app.lanes
        writes them."""
        return header_lines([*self.headers, DEFAULT_REFERRER_POLICY])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                own = list(message.get("headers", ()))
                # A page with a policy of its own (an OpenID page naming the app's origin) keeps it.
                mine = any(name.lower() == b"content-security-policy" for name, _ in own)
                headers = [
                    *own,
                    *(h for h in self.headers if not (mine and h[0] == b"content-security-policy")),
                ]
                if not any(name == b"referrer-policy" for name, _ in headers):
                    headers.append(DEFAULT_REFERRER_POLICY)
                if route_path(scope) in EMBEDDABLE_PATHS:
                    headers.extend(EMBEDDABLE_HEADERS)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)

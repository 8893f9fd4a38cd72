"""Forward authentication: `GET /auth/request` (nginx `auth_request`) and `GET /auth/forward` (Caddy
`forward_auth`, Traefik `forwardAuth`). Both answer 200 with the identity headers for a live sign-in the
access rules let through for the visited host, 403 for one they refuse; a person not signed in gets 401
from the first (with the sign-in URL in `Location`, for nginx's `error_page`) and a 302 to it from the
second. The logic is in `app.forward`.

A reverse proxy asks before every request to the app it protects, so this is a plain ASGI app that skips
FastAPI's routing and dependencies, as the API proxy does, and a pass is answered without building a
request or response object (bench/forward_bench.py measures it). Refusals are pages, with the security
headers every page carries. Any method is answered alike: nginx's `auth_request` asks with the method of the
request it protects, and the body is never read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.account import current_session
from app.errors import SignedOut, SiteNotAllowed
from app.forward import Verdict, Visit, decide, identity_headers, sign_in_url, visit
from app.forwarded import trusted_peer
from app.lanes import HotAnswer, header_lines, receiving, run_asgi
from app.paths import route_path
from app.services import Services
from app.session import Session
from app.web import error_response, exception_response

# Each path, and whether a person not signed in is sent to sign in (302) rather than told so (401).
PATHS = {"/auth/request": False, "/auth/forward": True}
READ_HEADERS = frozenset(
    (b"cookie", b"x-original-url", b"x-forwarded-host", b"x-forwarded-proto", b"x-forwarded-uri")
)
NO_STORE = {"Cache-Control": "no-store"}
IDENTITY_CACHE_ENTRIES = 4096
CONTENT_LENGTH_0 = (b"content-length", b"0")


class ForwardAuthApp:
    """Both endpoints. `services` is called per request (they exist once the lifespan has started);
    `pages` wraps the answers that are pages (tobira's security headers)."""

    def __init__(self, services: Callable[[], Services], pages: Callable[[ASGIApp], ASGIApp]) -> None:
        self.services = services
        self.pages = pages
        # By session id (sessions never change): the pass's headers, and as lines.
        self._identities: dict[str, tuple[list[tuple[bytes, bytes]], bytes]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        outcome = await self.outcome(
            scope, receive, trusted=trusted_peer(scope), redirect=PATHS[route_path(scope)]
        )
        if isinstance(outcome, Response):
            await self.pages(outcome)(scope, receive, send)
            return
        headers = [*self.identity(outcome), CONTENT_LENGTH_0]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def hot(self, scope: Scope, *, redirect: bool) -> HotAnswer:
        """The same answer, for app.lanes."""
        outcome = await self.outcome(scope, receiving(b""), trusted=trusted_peer(scope), redirect=redirect)
        if isinstance(outcome, Response):
            return await run_asgi(self.pages(outcome), scope, b"")
        return 200, self.identity_lines(outcome), b""

    async def outcome(
        self, scope: Scope, receive: Receive, *, trusted: bool, redirect: bool
    ) -> Session | Response:
        """The session of a pass, else the answer: not signed in, refused, or an error."""
        try:
            verdict, session, visited = await self.judge(scope["headers"], trusted, redirect)
            if verdict is Verdict.PASS:
                assert session is not None
                return session
            return refusal(Request(scope, receive), self.services(), verdict, visited, redirect=redirect)
        except Exception as exc:
            return exception_response(Request(scope, receive), exc)

    async def judge(
        self, raw_headers: Iterable[tuple[bytes, bytes]], trusted: bool, redirect: bool
    ) -> tuple[Verdict, Session | None, Visit]:
        """The verdict on a request with these headers, the session it was made for and the visit."""
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in raw_headers
            if name in READ_HEADERS
        }
        visited = visit(headers, trusted=trusted, original_first=not redirect)
        services = self.services()
        name = services.cookies.session_name
        session = await current_session(services, {name: cookie(headers.get("cookie"), name)})
        return decide(session, services.access, visited.host), session, visited

    def identity(self, session: Session) -> list[tuple[bytes, bytes]]:
        """The pass's headers (no length), made once per session."""
        return self._identity(session)[0]

    def identity_lines(self, session: Session) -> bytes:
        """The same, as the lines app.lanes writes."""
        return self._identity(session)[1]

    def _identity(self, session: Session) -> tuple[list[tuple[bytes, bytes]], bytes]:
        found = self._identities.get(session.sid)
        if found is None:
            if len(self._identities) >= IDENTITY_CACHE_ENTRIES:
                self._identities.clear()
            pairs = {**NO_STORE, **identity_headers(session)}.items()
            headers = [(key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in pairs]
            found = self._identities[session.sid] = (headers, header_lines(headers))
        return found


def cookie(header: str | None, name: str) -> str:
    """The value of cookie `name` in a Cookie header ("" when absent), read as Starlette reads it."""
    found = ""
    for part in (header or "").split(";"):
        key, _, value = part.partition("=")
        if key.strip() == name:
            found = value.strip()  # the last one wins, as in Starlette's parser
    return found


def refusal(
    request: Request, services: Services, verdict: Verdict, visited: Visit, *, redirect: bool
) -> Response:
    """Not signed in (401, or a 302 to the sign-in for `redirect`) or refused (403): the answer."""
    settings = services.settings
    signin = sign_in_url(settings.public_base, visited.return_to(settings.cookie_domain))
    if verdict is Verdict.SIGNED_OUT and redirect:
        return RedirectResponse(signin, status_code=302, headers=NO_STORE)
    error = SignedOut() if verdict is Verdict.SIGNED_OUT else SiteNotAllowed()
    # Caddy and Traefik show this page on the app's own origin: its assets and links name tobira's.
    page = {"sign_in_url": signin, "asset_base": settings.public_base, "languages": []}
    response = error_response(request, error, **page)
    response.headers.update(NO_STORE)
    if verdict is Verdict.SIGNED_OUT:
        response.headers["Location"] = signin  # nginx: auth_request_set $signin $upstream_http_location
    return response

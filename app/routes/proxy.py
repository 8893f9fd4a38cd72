"""The API proxy: `POST /api/{endpoint}` with the session's token set as `i`.

Refused before anything goes upstream: cross-site requests, malformed or denied endpoint names, a missing
session, the wrong content type, oversized bodies. The client's own `i`, `Authorization` and cookies are
never forwarded. Only the status, a JSON body and `Retry-After` come back.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Sequence
from typing import Any

import httpx
import orjson
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app import http1
from app.account import current_session
from app.csrf import is_same_origin
from app.errors import (
    BadRequest,
    CrossSiteRequest,
    InstanceBadAnswer,
    InstanceRefused,
    MethodNotAllowed,
    PayloadTooLarge,
    SignedOut,
    UnsupportedMediaType,
    misskey_shape,
)
from app.lanes import HotAnswer, header_lines, receiving
from app.metrics import METRICS, status_class
from app.paths import raw_route_path
from app.services import Services
from app.web import exception_response

UPLOAD_ENDPOINT = "drive/files/create"
UPLOAD_MAX_FIELDS = 16
JSON_TYPE = "application/json"
Headers = Sequence[tuple[str, str]]
JSON_HEADERS: Headers = (("Content-Type", JSON_TYPE),)
JSON_START = re.compile(rb'\s*[\[{"0-9tfn-]')
RETRY_AFTER = re.compile(r"[\x20-\x7e]{1,64}")  # seconds or an HTTP date


def check_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise PayloadTooLarge()


async def limited_body(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    """The request body as it arrives, refused with 413 as soon as it passes `limit` bytes."""
    check_declared_length(request, limit)
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge()
        yield chunk


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


async def json_body(request: Request, token: str, limit: int) -> bytes:
    """The client's JSON object with `i` replaced by the session's token."""
    if media_type(request.headers.get("content-type")) != JSON_TYPE:
        raise UnsupportedMediaType("Send the body as application/json.")
    if "content-length" in request.headers:
        check_declared_length(request, limit)
        raw = await request.body()  # no more than the declared length, which was just checked
    else:
        raw = b"".join([chunk async for chunk in limited_body(request, limit)])
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        raise BadRequest("The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.")
    body["i"] = token
    return orjson.dumps(body)


async def upload_body(request: Request, token: str, limit: int) -> tuple[Headers, AsyncIterable[bytes]]:
    """The upload re-encoded for the instance: (its headers, its multipart body as a stream), with the
    client's own `i` dropped and the token set."""
    if media_type(request.headers.get("content-type")) != "multipart/form-data":
        raise UnsupportedMediaType("Upload files as multipart/form-data.")
    parser = MultiPartParser(
        request.headers,
        limited_body(request, limit),
        max_files=1,
        max_fields=UPLOAD_MAX_FIELDS,
        max_part_size=limit,
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        too_many = "Too many" in exc.message
        raise (PayloadTooLarge("Too many parts.") if too_many else BadRequest("Malformed upload.")) from None
    fields = {key: value for key, value in form.multi_items() if isinstance(value, str) and key != "i"}
    files = [
        (key, (value.filename or "file", value.file, value.content_type or "application/octet-stream"))
        for key, value in form.multi_items()
        if isinstance(value, UploadFile)
    ]
    fields["i"] = token
    # httpx only encodes here (nothing is sent through it): the guard carries the stream like any other body.
    encoded = httpx.Request("POST", "https://instance.invalid/", data=fields, files=files)
    headers = [(name, encoded.headers[name]) for name in ("content-type", "content-length")]
    assert isinstance(encoded.stream, AsyncIterable)
    return headers, encoded.stream


async def proxy(request: Request, services: Services) -> Response:
    """Forward one API call for the signed-in person; raises TobiraError for everything refused."""
    settings = services.settings
    if not is_same_origin(request.headers, settings.public_origin):
        raise CrossSiteRequest("Requests to the proxy must come from this site.")
    # The name as sent, not as decoded: "notes%2Fcreate" must not become "notes/create".
    endpoint = raw_route_path(request.scope).decode("latin-1").removeprefix("/api/")
    services.endpoints.check(endpoint)
    session = await current_session(services, request.cookies)
    if session is None:
        raise SignedOut()
    headers: Headers
    body: bytes | AsyncIterable[bytes]
    if endpoint == UPLOAD_ENDPOINT:
        headers, body = await upload_body(request, session.token, settings.max_upload_bytes)
    else:
        headers, body = JSON_HEADERS, await json_body(request, session.token, settings.max_body_bytes)
    with METRICS.instance_duration.time():
        answer = await services.guard.request(
            "POST", session.instance.url(f"/api/{endpoint}"), headers=headers, body=body
        )
    return relay(answer)


def relay(answer: http1.Answer) -> Response:
    """The instance's answer as the browser gets it: status, a JSON body and `Retry-After`, nothing else."""
    status, content = answer.status, answer.body
    if 300 <= status < 400 or status < 200:
        raise InstanceBadAnswer("The server answered with a redirect.")
    content_type = _text(answer.header(b"content-type"))
    retry_after = _text(answer.header(b"retry-after"))
    headers = {"retry-after": retry_after} if retry_after and RETRY_AFTER.fullmatch(retry_after) else None
    if status >= 400:
        return relay_error(status, content_type, content, headers)
    if not content:
        return Response(status_code=status, headers=headers)
    # The label and the first character, not a full parse: that would cost as much as all the rest of
    # the proxy's own work, and the browser parses the body anyway.
    if media_type(content_type) != JSON_TYPE or not JSON_START.match(content):
        raise InstanceBadAnswer("The server answered something other than JSON.")
    return Response(content, status_code=status, headers=headers, media_type=JSON_TYPE)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def relay_error(
    status: int, content_type: str | None, content: bytes, headers: dict[str, str] | None
) -> Response:
    """An error answer in Misskey's shape: relayed when it has it, else reshaped (the web framework's own
    404 and 400 answers, an empty 405), so clients handle every error one way."""
    body: Any = None
    if media_type(content_type) == JSON_TYPE:
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise InstanceBadAnswer("The server answered something other than JSON.") from None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return Response(content, status_code=status, headers=headers, media_type=JSON_TYPE)
    if not content or body is not None:
        error = InstanceRefused(status)
        return Response(
            orjson.dumps(misskey_shape(error)), status_code=status, headers=headers, media_type=JSON_TYPE
        )
    raise InstanceBadAnswer("The server answered something other than JSON.")


class ProxyApp:
    """`POST /api/{endpoint}` as a plain ASGI app: the hot path skips FastAPI's routing and dependencies.

    `services` is called per request, since the services only exist once the lifespan has started. Errors
    become answers in the same function as everywhere else (`app.web.exception_response`).
    """

    def __init__(self, services: Callable[[], Services]) -> None:
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.answer(Request(scope, receive))
        await response(scope, receive, send)

    async def hot(self, scope: Scope, body: bytes) -> HotAnswer:
        """The same, for a request app.lanes has read whole."""
        response = await self.answer(Request(scope, receiving(body)))
        headers = [(name, value) for name, value in response.raw_headers if name != b"content-length"]
        return response.status_code, header_lines(headers), bytes(response.body)

    async def answer(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            if request.method != "POST":
                raise MethodNotAllowed()
            response = await proxy(request, self.services())
        except Exception as exc:
            response = exception_response(request, exc)
        METRICS.proxy_requests.labels(status_class(response.status_code)).inc()
        METRICS.proxy_duration.observe(time.perf_counter() - started)
        return response

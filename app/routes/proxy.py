"""The API proxy: `POST /api/{endpoint}` with the session's token set as `i`.

Refused before anything goes upstream: cross-site requests, malformed or denied endpoint names, a missing
session, the wrong content type, oversized bodies. The client's own `i`, `Authorization` and cookies are
never forwarded. Only the status, a JSON body and `Retry-After` come back.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.responses import Response

from app.csrf import is_same_origin
from app.errors import (
    BadRequest,
    ErrorCode,
    Forbidden,
    InstanceBadAnswer,
    PayloadTooLarge,
    SignedOut,
    UnsupportedMediaType,
)
from app.routes.auth import current_session
from app.services import Services

router = APIRouter()
UPLOAD_ENDPOINT = "drive/files/create"
UPLOAD_MAX_FIELDS = 16
JSON_TYPE = "application/json"
RELAYED_HEADERS = ("retry-after",)


async def limited_body(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    """The request body as it arrives, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise PayloadTooLarge()
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
    raw = b"".join([chunk async for chunk in limited_body(request, limit)])
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        raise BadRequest("The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.")
    body["i"] = token
    return orjson.dumps(body)


async def upload_parts(
    request: Request, token: str, limit: int
) -> tuple[dict[str, str], list[tuple[str, tuple[str, Any, str]]]]:
    """The multipart form of an upload, the client's own `i` dropped and the token set."""
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
    return fields, files


@router.post("/api/{endpoint:path}")
async def proxy(request: Request) -> Response:
    services: Services = request.app.state.services
    settings = services.settings
    if not is_same_origin(request.headers, settings.public_origin):
        raise Forbidden("Requests to the proxy must come from this site.", code=ErrorCode.CROSS_SITE_REQUEST)
    # The name as sent, not as decoded: "notes%2Fcreate" must not become "notes/create".
    endpoint = request.scope.get("raw_path", b"").decode("latin-1").removeprefix("/api/")
    services.endpoints.check(endpoint)
    session = await current_session(services, request)
    if session is None:
        raise SignedOut()
    url = session.instance.url(f"/api/{endpoint}")
    if endpoint == UPLOAD_ENDPOINT:
        fields, files = await upload_parts(request, session.token, settings.max_upload_bytes)
        answer = await services.client.post(url, data=fields, files=files)
    else:
        content = await json_body(request, session.token, settings.max_body_bytes)
        answer = await services.client.post(url, content=content, headers={"content-type": JSON_TYPE})
    if 300 <= answer.status_code < 400:
        raise InstanceBadAnswer("The server answered with a redirect.")
    headers = {name: answer.headers[name] for name in RELAYED_HEADERS if name in answer.headers}
    if not answer.content:
        return Response(status_code=answer.status_code, headers=headers)
    if media_type(answer.headers.get("content-type")) != JSON_TYPE:
        raise InstanceBadAnswer("The server answered something other than JSON.")
    try:
        orjson.loads(answer.content)
    except orjson.JSONDecodeError:
        raise InstanceBadAnswer("The server answered something other than JSON.") from None
    return Response(answer.content, status_code=answer.status_code, headers=headers, media_type=JSON_TYPE)

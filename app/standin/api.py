"""The stand-in's `/api/…`: Misskey's request pipeline, then the endpoints it implements for real.

The pipeline follows Fastify and `ApiCallService` step by step, so errors come in the real order:

1. routing: an unknown endpoint is Fastify's 404 (a GET, Misskey's UNKNOWN_API_ENDPOINT); a GET on a
   POST-only endpoint an empty 405;
2. body parsing (Fastify): JSON up to 1 MiB, text/plain, and multipart for `drive/files/create`; an empty or
   invalid JSON body is a 400, any other content type a 415;
3. the credential: `Authorization: Bearer T`, else the body's `i`. A non-string `i` never gets an answer (the
   real server forgets to reply), so the request waits until the client gives up;
4. authentication (unknown or revoked token: 401), then `secure` (400 ACCESS_DENIED: the stand-in has no
   web-session tokens, so every caller fails it), the rate limit, the credential requirement (401), the
   moderator role for `admin/*` (403), the token's permission (403), then the endpoint's own validation.

Implemented for real: `meta`, `i`, `notes/create`, `notes/timeline`, `drive/files/create` and
`i/revoke-token` (when `revoke_token_self`). Every other known endpoint passes the same checks and then
answers the right empty shape from the real server's schema: `[]`, `{}` or 204. Every request is recorded in
`StandinState.calls`.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from app.standin import catalog, entities, legacy
from app.standin.catalog import Endpoint
from app.standin.responses import (
    ACCESS_DENIED,
    AUTHENTICATION_FAILED,
    CANNOT_CAST,
    CREDENTIAL_REQUIRED,
    INVALID_FILE_NAME,
    NO_SUCH_FILE,
    NO_SUCH_RENOTE_TARGET,
    NO_SUCH_REPLY_TARGET,
    NOT_MODERATOR,
    PERMISSION_DENIED,
    RATE_LIMIT_EXCEEDED,
    UNKNOWN_API_ENDPOINT,
    ApiError,
    api_error_response,
    body_too_large,
    empty_json_body,
    empty_response,
    fastify_not_found,
    invalid_json_body,
    invalid_param,
    json_response,
    unsupported_media_type,
)
from app.standin.state import AccessToken, DriveFileRecord, NoteRecord, RecordedCall, StandinState

MAX_JSON_BODY = 1024 * 1024  # Fastify's bodyLimit on Misskey's JSON endpoints
RATE_LIMIT_WINDOW = 3600.0  # notes/create: so many calls per hour
HANG_POLL_SECONDS = 0.05
ALLOWED_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@dataclass(frozen=True)
class Upload:
    """The file part of a multipart request."""

    filename: str | None
    content: bytes


@dataclass(frozen=True)
class Parsed:
    """A request body as Fastify hands it on: any JSON value (None when absent), and the uploaded file."""

    body: object
    upload: Upload | None = None


@dataclass(frozen=True)
class Call:
    """What an endpoint implementation gets: who calls, with what."""

    state: StandinState
    token: AccessToken | None
    params: dict[str, object]
    upload: Upload | None


async def handle_api(request: Request) -> Response:
    """Any request under /api/ except the MiAuth check."""
    state: StandinState = request.app.state.standin
    name: str = request.path_params["endpoint"]
    endpoint = catalog.endpoints().get(name)
    if request.method == "OPTIONS":
        return _preflight(request)
    if endpoint is None:
        _record(state, request, name, None)
        if request.method in ("GET", "HEAD"):
            return api_error_response(UNKNOWN_API_ENDPOINT, state.clock() * 1000)
        return fastify_not_found(request.method, _raw_url(request))
    if request.method in ("GET", "HEAD"):
        if not endpoint.allow_get:
            _record(state, request, name, None)
            return empty_response(405)
        parsed: Parsed | Response = Parsed(dict(request.query_params))
    else:
        parsed = await read_body(request, takes_file=endpoint.takes_file)
    if isinstance(parsed, Response):
        _record(state, request, name, None)
        return parsed
    credential = _credential(request, parsed.body)
    _record(state, request, name, parsed.body)
    if credential is not None and not isinstance(credential, str):
        await _hang(request, state)
        return empty_response(400)  # Misskey's unsent `reply.code(400)`; the client has normally gone
    try:
        result = _run(state, request, endpoint, credential, parsed)
    except ApiError as error:
        return api_error_response(error, state.clock() * 1000)
    return empty_response(204) if result is None else json_response(result)


async def handle_check(request: Request) -> Response:
    """`POST /api/miauth/{session}/check`: the token and profile once, `{"ok": false}` otherwise."""
    state: StandinState = request.app.state.standin
    session: str = request.path_params["session"]
    parsed = await read_body(request, takes_file=False)
    _record(state, request, f"miauth/{session}/check", None if isinstance(parsed, Response) else parsed.body)
    if isinstance(parsed, Response):
        return parsed
    token = state.fetch_session_token(session)
    if token is None:
        return json_response({"ok": False})
    profile = entities.user_detailed_not_me(state.config, token.user, state.notes_count(token.user))
    return json_response({"ok": True, "token": token.token, "user": profile})


async def read_body(request: Request, *, takes_file: bool) -> Parsed | Response:
    """Parse the body as Fastify's content-type parsers do, or answer the error they would."""
    raw = await request.body()
    content_type = request.headers.get("content-type")
    media_type = content_type.split(";", 1)[0].strip().lower() if content_type is not None else None
    if not takes_file and len(raw) > MAX_JSON_BODY:
        return body_too_large()
    if media_type is None:
        body: object = None
        if raw:
            return unsupported_media_type("")
    elif media_type == "application/json":
        if not raw:
            return empty_json_body()
        try:
            body = _parse_json(raw)
        except ValueError:
            return invalid_json_body()
    elif media_type == "text/plain":
        body = raw.decode("utf-8", errors="replace")
    elif media_type == "multipart/form-data":
        if takes_file:
            return await _read_multipart(request)
        body = None  # @fastify/multipart leaves the body unset unless the handler asks for the file
    else:
        return unsupported_media_type(content_type or "")
    if takes_file:
        return empty_response(400)  # the handler's request.file() throws: not a multipart request
    return Parsed(body)


def _parse_json(raw: bytes) -> object:
    """JSON.parse behind secure-json-parse: no NaN/Infinity, no `__proto__` keys."""

    def refuse_constant(name: str) -> object:
        raise ValueError(name)

    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        if any(key == "__proto__" for key, _ in items):
            raise ValueError("__proto__")
        return dict(items)

    return json.loads(raw.decode("utf-8"), parse_constant=refuse_constant, object_pairs_hook=pairs)


async def _read_multipart(request: Request) -> Parsed | Response:
    """The first file part and the text fields sent before it (Fastify's `request.file()` sees no more)."""
    try:
        async with request.form(max_files=16, max_fields=1000) as form:
            fields: dict[str, object] = {}
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    return Parsed(fields, Upload(value.filename, await value.read()))
                fields.setdefault(key, value)
    except HTTPException:  # Starlette's answer to a malformed multipart body
        pass
    return empty_response(400)


def _credential(request: Request, body: object) -> object:
    authorization = request.headers.get("authorization")
    if authorization is not None and authorization.startswith("Bearer "):  # case-sensitive, as in Misskey
        return authorization[len("Bearer ") :]
    return body.get("i") if isinstance(body, dict) else None


def _record(state: StandinState, request: Request, endpoint: str, body: object) -> None:
    state.calls.append(
        RecordedCall(
            method=request.method,
            endpoint=endpoint,
            token=_credential(request, body),
            headers={key: ", ".join(request.headers.getlist(key)) for key in request.headers},
            body_keys=tuple(body) if isinstance(body, dict) else (),
        )
    )


async def _hang(request: Request, state: StandinState) -> None:
    """Wait until the client gives up, or the stand-in stops (which then sends the empty 400)."""
    # Polled: `stopping` is set from the runner's thread and Starlette only offers a polling disconnect check.
    while not state.stopping and not await request.is_disconnected():  # noqa: ASYNC110
        await anyio.sleep(HANG_POLL_SECONDS)


def _raw_url(request: Request) -> str:
    path: bytes = request.scope.get("raw_path") or request.url.path.encode()
    query: bytes = request.scope.get("query_string", b"")
    return (path + (b"?" + query if query else b"")).decode("latin-1")


def _preflight(request: Request) -> Response:
    """@fastify/cors with `origin: '*'`."""
    headers = {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": "GET,HEAD,PUT,PATCH,POST,DELETE",
        "Vary": "Access-Control-Request-Headers",
    }
    requested = request.headers.get("access-control-request-headers")
    if requested:
        headers["Access-Control-Allow-Headers"] = requested
    return Response(status_code=204, headers=headers)


def _run(
    state: StandinState, request: Request, endpoint: Endpoint, credential: str | None, parsed: Parsed
) -> object:
    """Authenticate and authorise like `ApiCallService.call`, then run the endpoint; raises ApiError."""
    config = state.config
    token = None if credential is None else state.authenticate(credential)
    if credential is not None and token is None:
        raise AUTHENTICATION_FAILED
    self_revocation = endpoint.name == "i/revoke-token" and config.revoke_token_self
    if endpoint.secure and not self_revocation:
        raise ACCESS_DENIED
    if endpoint.name == "notes/create" and config.rate_limit_notes_create is not None:
        actor = token.user.id if token else f"ip:{request.client.host if request.client else ''}"
        info = state.count_call(endpoint.name, actor, config.rate_limit_notes_create, RATE_LIMIT_WINDOW)
        if info is not None:
            raise RATE_LIMIT_EXCEEDED.with_info(
                remaining=info.remaining, reset=info.reset, resetMs=info.reset_ms, total=info.total
            )
    if endpoint.credential and token is None:
        raise CREDENTIAL_REQUIRED
    if token is not None and endpoint.needs_moderator and not token.user.is_moderator:
        raise NOT_MODERATOR
    if token is not None and endpoint.permission and endpoint.permission not in token.permissions:
        raise PERMISSION_DENIED
    params = parsed.body
    if not isinstance(params, dict):
        raise invalid_param("#/type", "must be object")
    if endpoint.takes_file:
        _cast_booleans(params, ("isSensitive", "force"))
    implementation = _IMPLEMENTED.get(endpoint.name)
    if implementation is None:
        return {"array": [], "object": {}, "none": None}[endpoint.result_kind]
    return implementation(Call(state, token, params, parsed.upload))


def _cast_booleans(params: dict[str, object], names: tuple[str, ...]) -> None:
    """Multipart fields are strings; Misskey JSON-parses the boolean ones."""
    for name in names:
        value = params.get(name)
        if isinstance(value, str):
            try:
                params[name] = json.loads(value)
            except ValueError:
                raise CANNOT_CAST.with_info(param=name, reason="cannot cast to boolean") from None
        if name in params and not isinstance(params[name], bool):
            raise invalid_param(f"#/properties/{name}/type", "must be boolean")


def _meta(call: Call) -> object:
    detail = call.params.get("detail", True)
    if not isinstance(detail, bool):
        raise invalid_param("#/properties/detail/type", "must be boolean")
    return entities.meta(call.state.config, detail)


def _i(call: Call) -> object:
    assert call.token is not None  # the endpoint requires a credential
    user = call.token.user
    return entities.me_detailed(call.state.config, user, call.state.notes_count(user))


def _notes_create(call: Call) -> object:
    assert call.token is not None
    params, state = call.params, call.state
    _validate_note(params)
    listed = params.get("fileIds")
    file_ids = tuple(str(file_id) for file_id in listed) if isinstance(listed, list) else ()
    files = [state.files.get(file_id) for file_id in file_ids]
    if any(file is None or file.user.id != call.token.user.id for file in files):
        raise NO_SUCH_FILE
    known_notes = {note.id for note in state.notes}
    reply_id, renote_id = params.get("replyId"), params.get("renoteId")
    if reply_id is not None and reply_id not in known_notes:
        raise NO_SUCH_REPLY_TARGET
    if renote_id is not None and renote_id not in known_notes:
        raise NO_SUCH_RENOTE_TARGET
    text, cw = params.get("text"), params.get("cw")
    record = NoteRecord(
        id=state.new_id(),
        created_at=state.now(),
        user=call.token.user,
        text=(text.strip() or None) if isinstance(text, str) else None,
        cw=cw if isinstance(cw, str) else None,
        visibility=str(params.get("visibility", "public")),
        local_only=params.get("localOnly") is True,
        file_ids=file_ids,
        reply_id=reply_id if isinstance(reply_id, str) else None,
        renote_id=renote_id if isinstance(renote_id, str) else None,
    )
    state.add_note(record)
    return {"createdNote": entities.note(state.config, record, [file for file in files if file is not None])}


def _validate_note(params: dict[str, object]) -> None:
    """notes/create's schema, checked in the order Ajv reports: the if/then pair first, then properties."""
    if all(params.get(key) is None for key in ("renoteId", "fileIds", "mediaIds", "poll")):
        if "text" not in params:
            raise invalid_param("#/then/required", "must have required property 'text'")
        text = params["text"]
        if not isinstance(text, str):
            raise invalid_param("#/then/properties/text/type", "must be string")
        _check_length("#/then/properties/text", text, 1, entities.MAX_NOTE_TEXT_LENGTH)
        if not re.search(r"[^\s]", text):
            raise invalid_param("#/then/properties/text/pattern", 'must match pattern "[^\\s]+"')
    visibility = params.get("visibility", "public")
    if visibility not in ("public", "home", "followers", "specified"):
        raise invalid_param("#/properties/visibility/enum", "must be equal to one of the allowed values")
    for name, maximum in (("cw", 100), ("text", entities.MAX_NOTE_TEXT_LENGTH)):
        value = params.get(name)
        if value is not None:
            if not isinstance(value, str):
                raise invalid_param(f"#/properties/{name}/type", "must be string,null")
            _check_length(f"#/properties/{name}", value, 1, maximum)
    if "localOnly" in params and not isinstance(params["localOnly"], bool):
        raise invalid_param("#/properties/localOnly/type", "must be boolean")
    for name in ("replyId", "renoteId"):
        if params.get(name) is not None and not isinstance(params[name], str):
            raise invalid_param(f"#/properties/{name}/type", "must be string,null")
    if "fileIds" in params:
        _check_id_list("#/properties/fileIds", params["fileIds"])


def _check_length(path: str, text: str, minimum: int, maximum: int) -> None:
    length = len(text.encode("utf-16-le")) // 2  # JavaScript counts UTF-16 code units
    if length > maximum:
        raise invalid_param(f"{path}/maxLength", f"must NOT have more than {maximum} characters")
    if length < minimum:
        raise invalid_param(f"{path}/minLength", f"must NOT have fewer than {minimum} characters")


def _check_id_list(path: str, value: object) -> None:
    if not isinstance(value, list):
        raise invalid_param(f"{path}/type", "must be array")
    if len(value) > 16:
        raise invalid_param(f"{path}/maxItems", "must NOT have more than 16 items")
    if len(value) < 1:
        raise invalid_param(f"{path}/minItems", "must NOT have fewer than 1 items")
    if not all(isinstance(item, str) for item in value):
        raise invalid_param(f"{path}/items/type", "must be string")
    if len(set(value)) != len(value):
        raise invalid_param(f"{path}/uniqueItems", "must NOT have duplicate items")


def _notes_timeline(call: Call) -> object:
    limit = call.params.get("limit", 10)
    if isinstance(limit, bool) or not isinstance(limit, int | float) or limit != int(limit):
        raise invalid_param("#/properties/limit/type", "must be integer")
    if limit > 100:
        raise invalid_param("#/properties/limit/maximum", "must be <= 100")
    if limit < 1:
        raise invalid_param("#/properties/limit/minimum", "must be >= 1")
    since_id, until_id = call.params.get("sinceId"), call.params.get("untilId")
    notes = [
        note
        for note in reversed(call.state.notes)
        if (not isinstance(since_id, str) or note.id > since_id)
        and (not isinstance(until_id, str) or note.id < until_id)
    ]
    files = call.state.files
    return [
        entities.note(
            call.state.config, note, [files[file_id] for file_id in note.file_ids if file_id in files]
        )
        for note in notes[: int(limit)]
    ]


def _drive_files_create(call: Call) -> object:
    assert call.token is not None and call.upload is not None  # credential and file are required
    params, state, upload = call.params, call.state, call.upload
    comment = params.get("comment")
    if comment is not None and len(str(comment)) > 512:
        raise invalid_param("#/properties/comment/maxLength", "must NOT have more than 512 characters")
    name = params.get("name") or upload.filename
    name = str(name).strip() if name is not None else None
    if name in ("", "blob"):
        name = None
    if name is not None and (len(name) > 200 or "\\" in name or "/" in name or ".." in name):
        raise INVALID_FILE_NAME
    mime, extension, properties = _sniff(upload.content)
    record = DriveFileRecord(
        id=state.new_id(),
        created_at=state.now(),
        user=call.token.user,
        name=name or f"untitled{extension}",
        type=mime,
        md5=hashlib.md5(upload.content, usedforsecurity=False).hexdigest(),
        content=upload.content,
        comment=str(comment) if comment is not None else None,
        is_sensitive=params.get("isSensitive") is True,
        properties=properties,
    )
    state.files[record.id] = record
    return entities.drive_file(state.config, record)


def _sniff(content: bytes) -> tuple[str, str, dict[str, int]]:
    """The type Misskey detects from the bytes (it ignores what the client claims), with PNG dimensions."""
    if content.startswith(b"\x89PNG\r\n\x1a\n") and len(content) >= 24:
        width, height = struct.unpack(">II", content[16:24])
        return "image/png", ".png", {"width": width, "height": height}
    if content.startswith(b"\xff\xd8\xff"):
        return "image/jpeg", ".jpg", {}
    if content.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif", ".gif", {}
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp", ".webp", {}
    return "application/octet-stream", "", {}


def _revoke_token(call: Call) -> object:
    """The newer `i/revoke-token`: `tokenId` or `token`, only among the caller's own tokens; always 204."""
    assert call.token is not None
    params, owner = call.params, call.token.user
    if "tokenId" in params:
        if not isinstance(params["tokenId"], str):
            raise invalid_param("#/anyOf/0/properties/tokenId/type", "must be string")
        matches = [
            t for t in call.state.tokens.values() if t.id == params["tokenId"] and t.user.id == owner.id
        ]
    elif "token" in params:
        matches = [
            t for t in call.state.tokens.values() if t.token == params["token"] and t.user.id == owner.id
        ]
    else:
        raise invalid_param("#/anyOf/0/required", "must have required property 'tokenId'")
    for match in matches:
        call.state.revoke(match.token)
    return None


_IMPLEMENTED: dict[str, Callable[[Call], object]] = {
    "meta": _meta,
    "i": _i,
    "notes/create": _notes_create,
    "notes/timeline": _notes_timeline,
    "drive/files/create": _drive_files_create,
    "i/revoke-token": _revoke_token,
    "app/create": lambda call: legacy.app_create(call.state, call.params),
    "auth/session/generate": lambda call: legacy.session_generate(call.state, call.params),
    "auth/session/userkey": lambda call: legacy.session_userkey(call.state, call.params),
}

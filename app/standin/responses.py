"""The answers a Misskey server gives besides success: its own API errors and its web framework's errors.

Misskey answers `{"error": {"message", "code", "id", "kind", "info"?}}`; the status and the
`WWW-Authenticate` or `Retry-After` header follow from the error's kind exactly as in Misskey's
`ApiCallService#sendApiError`. Errors raised before Misskey's code runs (unknown route, unparsable or
unsupported body) come in Fastify's own shapes instead. Ids are Misskey's real ones.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Literal

from starlette.responses import Response

JSON_TYPE = "application/json; charset=utf-8"
API_HEADERS = {"Cache-Control": "private, max-age=0, must-revalidate", "Access-Control-Allow-Origin": "*"}


@dataclass
class ApiError(Exception):
    """One of Misskey's API errors; raise it from an endpoint, `api_error_response` turns it into HTTP.

    Not frozen: contextlib and anyio assign `__traceback__` to exceptions passing through them.
    """

    message: str
    code: str
    id: str
    kind: Literal["client", "server", "permission"] = "client"
    status: int | None = None  # None: 400 for client errors, 403 for permission errors
    info: dict[str, object] | None = None

    def with_info(self, **info: object) -> ApiError:
        return ApiError(self.message, self.code, self.id, self.kind, self.status, info)


ACCESS_DENIED = ApiError("Access denied.", "ACCESS_DENIED", "56f35758-7dd5-468b-8439-5d6fb8ec9b8e")
AUTHENTICATION_FAILED = ApiError(
    "Authentication failed. Please ensure your token is correct.",
    "AUTHENTICATION_FAILED",
    "b0a7f5f8-dc2f-4171-b91f-de88ad238e14",
    status=401,
)
CREDENTIAL_REQUIRED = ApiError(
    "Credential required.", "CREDENTIAL_REQUIRED", "1384574d-a912-4b81-8601-c7b1c4085df1", status=401
)
PERMISSION_DENIED = ApiError(
    "Your app does not have the necessary permissions to use this endpoint.",
    "PERMISSION_DENIED",
    "1370e5b7-d4eb-4566-bb1d-7748ee6a1838",
    kind="permission",
)
NOT_MODERATOR = ApiError(
    "You are not assigned to a moderator role.",
    "ROLE_PERMISSION_DENIED",
    "d33d5333-db36-423d-a8f9-1a2b9549da41",
    kind="permission",
)
RATE_LIMIT_EXCEEDED = ApiError(
    "Rate limit exceeded. Please try again later.",
    "RATE_LIMIT_EXCEEDED",
    "d5826d14-3982-4d2e-8011-b9e9f02499ef",
    status=429,
)
INVALID_PARAM = ApiError("Invalid param.", "INVALID_PARAM", "3d81ceae-475f-4600-b2a8-2bc116157532")
CANNOT_CAST = ApiError("Invalid param.", "INVALID_PARAM", "0b5f1631-7c1a-41a6-b399-cce335f34d85")
NO_SUCH_FILE = ApiError("Some files are not found.", "NO_SUCH_FILE", "b6992544-63e7-67f0-fa7f-32444b1b5306")
NO_SUCH_RENOTE_TARGET = ApiError(
    "No such renote target.", "NO_SUCH_RENOTE_TARGET", "b5c90186-4ab0-49c8-9bba-a1f76c282ba4"
)
NO_SUCH_REPLY_TARGET = ApiError(
    "No such reply target.", "NO_SUCH_REPLY_TARGET", "749ee0f6-d3da-459a-bf02-282e2da4292c"
)
INVALID_FILE_NAME = ApiError(
    "Invalid file name.", "INVALID_FILE_NAME", "f449b209-0c60-4e51-84d5-29486263bfd4"
)
UNKNOWN_API_ENDPOINT = ApiError(
    "Unknown API endpoint.", "UNKNOWN_API_ENDPOINT", "2ca3b769-540a-4f08-9dd5-b5a825b6d0f1", status=404
)


def invalid_param(param: str, reason: str) -> ApiError:
    """Misskey's schema-validation failure: `param` is the JSON-schema path Ajv reports."""
    return INVALID_PARAM.with_info(param=param, reason=reason)


def encode_json(content: object) -> bytes:
    """Compact UTF-8 JSON, as Fastify serialises."""
    return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def json_response(content: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """An API answer: JSON with the API's no-cache and CORS headers."""
    return Response(encode_json(content), status, {**API_HEADERS, **(headers or {})}, media_type=JSON_TYPE)


def empty_response(status: int) -> Response:
    """A bodiless answer (204, the 405 for GET, the 400 for a bad multipart body)."""
    return Response(status_code=status, headers=API_HEADERS)


def api_error_response(error: ApiError, now_ms: float) -> Response:
    """Status and headers as `ApiCallService#sendApiError` chooses them."""
    headers: dict[str, str] = {}
    status = error.status
    if error.code == "AUTHENTICATION_FAILED":
        headers["WWW-Authenticate"] = (
            f'Bearer realm="Misskey", error="invalid_token", error_description="{error.message}"'
        )
    elif status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="Misskey"'
    elif error.code == "RATE_LIMIT_EXCEEDED":
        reset_ms = (error.info or {}).get("resetMs")
        if isinstance(reset_ms, int | float):
            headers["Retry-After"] = str(max(0, math.ceil((reset_ms - now_ms) / 1000)))
    elif error.kind == "client":
        headers["WWW-Authenticate"] = (
            f'Bearer realm="Misskey", error="invalid_request", error_description="{error.message}"'
        )
    elif error.kind == "permission" and error.code == "PERMISSION_DENIED":
        headers["WWW-Authenticate"] = (
            f'Bearer realm="Misskey", error="insufficient_scope", error_description="{error.message}"'
        )
    if status is None:
        status = {"client": 400, "permission": 403}.get(error.kind, 500)
    body: dict[str, object] = {
        "message": error.message,
        "code": error.code,
        "id": error.id,
        "kind": error.kind,
    }
    if error.info:
        body["info"] = error.info
    return json_response({"error": body}, status, headers)


def fastify_error(status: int, code: str, error: str, message: str) -> Response:
    """An error Fastify raises itself while parsing a request body."""
    return json_response({"statusCode": status, "code": code, "error": error, "message": message}, status)


def fastify_not_found(method: str, url: str) -> Response:
    """Fastify's default 404 for a route nobody registered (`url` is path plus query, as received)."""
    return json_response(
        {"message": f"Route {method}:{url} not found", "error": "Not Found", "statusCode": 404}, 404
    )


def empty_json_body() -> Response:
    return fastify_error(
        400,
        "FST_ERR_CTP_EMPTY_JSON_BODY",
        "Bad Request",
        "Body cannot be empty when content-type is set to 'application/json'",
    )


def invalid_json_body() -> Response:
    return fastify_error(
        400,
        "FST_ERR_CTP_INVALID_JSON_BODY",
        "Bad Request",
        "Body is not valid JSON but content-type is set to 'application/json'",
    )


def unsupported_media_type(content_type: str) -> Response:
    return fastify_error(
        415,
        "FST_ERR_CTP_INVALID_MEDIA_TYPE",
        "Unsupported Media Type",
        f"Unsupported Media Type: {content_type}",
    )


def body_too_large() -> Response:
    return fastify_error(413, "FST_ERR_CTP_BODY_TOO_LARGE", "Payload Too Large", "Request body is too large")

"""tobira's own OpenAPI document: the pages as HTML, `/session` and the proxy in Misskey's error shape.

FastAPI describes the routes it serves; this adds what it cannot know: which answers are HTML pages,
every error status with its body, and the proxy, which is served before FastAPI's routing. The JSON answers'
schemas come from their models (`app.answers`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.answers import Health, ServerPreview, SessionAnswer

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "id"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "id": {"type": "string"},
            },
        }
    },
}
# tobira's JSON answers (app/answers.py), as components the responses refer to.
_, _MODELS = models_json_schema(
    [(model, "serialization") for model in (ServerPreview, SessionAnswer, Health)],
    by_alias=True,
    ref_template="#/components/schemas/{model}",
)
COMPONENTS: dict[str, Any] = _MODELS["$defs"]


def ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


REASONS = {
    200: "OK",
    204: "No content",
    302: "Not signed in: to tobira's sign-in form, coming back afterwards",
    303: "Redirect",
    400: "Bad input",
    401: "Signed out",
    403: "Refused",
    404: "Unknown",
    405: "Method not allowed",
    413: "Too large",
    415: "Wrong content type",
    429: "Rate limited",
    500: "tobira failed",
    503: "tobira's store does not answer",
    502: "The instance answered something unusable",
    504: "The instance was too slow",
}


def answers(media_type: str, schema: dict[str, Any], *statuses: int) -> dict[str, Any]:
    return {
        str(s): {"description": REASONS[s], "content": {media_type: {"schema": schema}}} for s in statuses
    }


def html(*statuses: int) -> dict[str, Any]:
    return answers("text/html", {"type": "string"}, *statuses)


def json_errors(*statuses: int) -> dict[str, Any]:
    return answers("application/json", ERROR, *statuses)


REDIRECT = {"303": {"description": REASONS[303]}}
PAGE_ERRORS = html(400, 404, 405, 500)
FORWARD_HEADERS = {
    name: {"description": meaning, "schema": {"type": "string"}}
    for name, meaning in (
        ("Remote-User", "the account, alice@misskey.io"),
        ("Remote-Name", "its display name (UTF-8), or the username"),
        ("X-Tobira-Instance", "the account's server"),
        ("X-Tobira-User-Id", "the account's id on that server"),
    )
}
FORWARD_PASS = {"200": {"description": "Signed in and let through", "headers": FORWARD_HEADERS}}
FORWARD_SIGN_IN = {"302": {"description": REASONS[302]}}

# The statuses each route answers, by path and method.
RESPONSES: dict[tuple[str, str], dict[str, Any]] = {
    ("/", "get"): {**PAGE_ERRORS, **html(200, 503)},
    ("/healthz", "get"): answers("application/json", ref(Health), 200),
    ("/readyz", "get"): answers("application/json", ref(Health), 200, 503),
    ("/session", "get"): {
        **answers("application/json", ref(SessionAnswer), 200),
        **json_errors(400, 401, 404, 405, 500, 503),
    },
    ("/login", "get"): {**PAGE_ERRORS, **html(200, 403, 429, 502, 503, 504), **REDIRECT},
    ("/login", "post"): {**PAGE_ERRORS, **html(200, 403, 429, 502, 503, 504), **REDIRECT},
    ("/callback", "get"): {**PAGE_ERRORS, **html(403, 502, 503, 504), **REDIRECT},
    ("/callback/legacy", "get"): {**PAGE_ERRORS, **html(403, 502, 503, 504), **REDIRECT},
    ("/callback/oauth2", "get"): {**PAGE_ERRORS, **html(403, 502, 503, 504), **REDIRECT},
    ("/client", "get"): {
        **PAGE_ERRORS,
        "200": {
            "description": REASONS[200],
            "content": {
                "text/html": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "object"}},
            },
        },
    },
    ("/logout", "post"): {**PAGE_ERRORS, **html(403, 503), **REDIRECT},
    ("/forget-recent", "post"): {**PAGE_ERRORS, **html(403), **REDIRECT},
    ("/signed-out", "get"): {**PAGE_ERRORS, **html(200)},
    ("/button", "get"): {**PAGE_ERRORS, **html(200)},
    ("/lookup", "get"): {
        **answers("application/json", ref(ServerPreview), 200),
        **json_errors(400, 403, 404, 405, 429, 500, 502, 503, 504),
    },
}
PROXY = {
    "post": {
        "summary": "Call the instance's API for the signed-in person",
        "description": "Forwarded to https://HOST/api/{endpoint} with `i` set to the session's token.",
        "operationId": "proxy",
        "parameters": [
            {
                "name": "endpoint",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": "^[a-z0-9_-]+(/[a-z0-9_-]+)*$", "maxLength": 128},
            }
        ],
        "requestBody": {
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "multipart/form-data": {"schema": {"type": "object"}},
            }
        },
        "responses": {
            "200": {"description": "The instance's answer", "content": {"application/json": {}}},
            "204": {"description": REASONS[204]},
            **json_errors(400, 401, 403, 404, 405, 413, 415, 429, 500, 502, 503, 504),
        },
    }
}


def forward_operation(summary: str, operation_id: str, responses: dict[str, Any]) -> dict[str, Any]:
    """A forward-auth endpoint (served before FastAPI's routing, like the proxy)."""
    description = (
        "Asked by a reverse proxy before each request to an app it protects. The visited host comes from "
        "X-Forwarded-Host or X-Original-URL, believed only from FORWARDED_ALLOW_IPS."
    )
    return {
        "get": {
            "summary": summary,
            "description": description,
            "operationId": operation_id,
            "responses": {**responses, **html(500, 503)},
        }
    }


FORWARD = {
    "/auth/request": forward_operation(
        "Forward authentication for nginx auth_request", "authRequest", {**FORWARD_PASS, **html(401, 403)}
    ),
    "/auth/forward": forward_operation(
        "Forward authentication for Caddy forward_auth and Traefik forwardAuth",
        "authForward",
        {**FORWARD_PASS, **FORWARD_SIGN_IN, **html(403)},
    ),
}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The document served at /openapi.json (built once)."""
    if app.openapi_schema is None:
        # Under a path prefix every path below is relative to it (FastAPI would add the same from the
        # request's root_path; said here, the document is one whoever asks).
        base_path = app.state.settings.base_path
        servers = [{"url": base_path}] if base_path else None
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes, servers=servers)
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                operation["responses"] = RESPONSES.get((path, method), operation["responses"])
        schema["paths"]["/api/{endpoint}"] = PROXY
        schema["paths"].update(FORWARD)
        schema.setdefault("components", {}).setdefault("schemas", {}).update(COMPONENTS)
        app.openapi_schema = schema
    return app.openapi_schema

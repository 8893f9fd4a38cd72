"""`GET /metrics`: Prometheus text for the operator (see `app.metrics`), only with `TOBIRA_METRICS_TOKEN`.

Without the setting the route does not exist (404, as any unknown path). With it, a request must carry
`Authorization: Bearer <token>` (compared in constant time); any other gets 401. It is left out of the
OpenAPI document: it is no part of the API that sites and browsers use, and its format is Prometheus's own.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app import metrics
from app.errors import NotFound, SignedOut
from app.web import ServicesDep, error_json_response

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics_text(request: Request, services: ServicesDep) -> Response:
    settings = services.settings
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    if not token:
        raise NotFound()
    if not metrics.authorized(request.headers.get("authorization"), token):
        refused = error_json_response(SignedOut("This route needs the metrics token."))
        refused.headers["WWW-Authenticate"] = 'Bearer realm="tobira metrics"'
        return refused
    body = metrics.render(settings.prometheus_multiproc_dir)
    return Response(body, media_type=metrics.CONTENT_TYPE, headers={"Cache-Control": "no-store"})

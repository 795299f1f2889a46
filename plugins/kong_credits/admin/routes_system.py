"""What runs beside the API: health, Prometheus metrics, and the interactive docs.

`/healthz`, `/docs` and its assets are open (a browser loads them before it has a token);
`/metrics` needs an admin token. The docs' Swagger UI is served from the
swagger-ui-bundle-v2 package's files: no CDN, so they work offline.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .auth import require_admin
from .openapi import errors
from .problems import problem_response

__all__ = ["DOCS_ASSETS", "router"]

DOCS_ASSETS = "/docs/assets"
router = APIRouter(tags=["system"])


@router.get("/healthz", summary="Redis (and the usage store) reachable",
            responses=errors(503))
def healthz(request: Request) -> JSONResponse:
    checks: dict[str, Any] = {}
    try:
        request.app.state.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:  # any failure means unhealthy; the kind, never the URL
        checks["redis"] = f"unavailable: {type(exc).__name__}"
    store_check = request.app.state.store_check
    if store_check is not None:
        try:
            store_check()
            checks["store"] = "ok"
        except Exception as exc:
            checks["store"] = f"unavailable: {type(exc).__name__}"
    failed = [name for name, state in checks.items() if state != "ok"]
    if failed:
        return problem_response(503, "; ".join(f"{n} {checks[n]}" for n in failed))
    return JSONResponse({"status": "ok", **checks})


@router.get("/metrics", dependencies=[Depends(require_admin)], response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}},
                             "description": "Prometheus text format."},
                       **errors(401, 403)},
            summary="Prometheus metrics: requests by endpoint and status, latency")
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry),
                    media_type=CONTENT_TYPE_LATEST)


@router.get("/docs", include_in_schema=False)
def docs(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json", title=f"{request.app.title} - API docs",
        swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        swagger_ui_parameters={"persistAuthorization": False})

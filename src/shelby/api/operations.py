"""Self-description: ``/metrics`` (admin token), ``/openapi.json``, ``/docs`` (Swagger UI
from the installed ``swagger-ui-bundle`` package) and ``/redoc`` (Redoc's standalone
bundle, vendored in ``api/assets``). Nothing here reaches the internet."""

from __future__ import annotations

from importlib.metadata import version as package_version
from pathlib import Path

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from shelby.api import views
from shelby.api.auth import Access
from shelby.api.endpoint import Call, Endpoint, Raw
from shelby.api.metrics import CONTENT_TYPE, Metrics
from shelby.api.openapi import openapi_document

__all__ = ["ENDPOINTS", "doc_routes"]

ASSETS = Path(__file__).parent / "assets"


async def metrics(call: Call) -> Raw:
    service = call.service
    registry: Metrics = call.scope["app"].state.metrics
    counts = await views.job_counts(service.store)
    active = await views.count_active_nodes(
        service.store, now=service.now(), lease_seconds=service.settings.lease_seconds
    )
    return Raw(registry.render(counts, active), CONTENT_TYPE)


ENDPOINTS = [
    Endpoint(
        "GET",
        "/metrics",
        Access.ADMIN,
        "Prometheus metrics: requests, latencies, events appended, jobs, active nodes",
        metrics,
        str,
        errors=(401, 403),
        tag="operations",
        media_types=("text/plain",),
    ),
]

_SWAGGER_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Shelby API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", validatorUrl: null,
  deepLinking: true, persistAuthorization: true});
</script></body></html>
"""

_REDOC_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Shelby API</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><redoc spec-url="/openapi.json" hide-download-button="false"></redoc>
<script src="/redoc/redoc.standalone.js"></script></body></html>
"""


def doc_routes(endpoints: list[Endpoint]) -> list[BaseRoute]:
    """The document is built once, when the app is made: it depends on code only."""
    document = msgspec.json.encode(openapi_document(endpoints, version=package_version("shelby")))

    async def openapi_json(request: Request) -> Response:
        return Response(document, media_type="application/json")

    async def docs(request: Request) -> Response:
        return HTMLResponse(_SWAGGER_HTML)

    async def redoc(request: Request) -> Response:
        return HTMLResponse(_REDOC_HTML)

    return [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Mount("/docs/assets", StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui"),
        Route("/redoc", redoc, methods=["GET"]),
        Mount("/redoc", StaticFiles(directory=str(ASSETS)), name="redoc-assets"),
    ]

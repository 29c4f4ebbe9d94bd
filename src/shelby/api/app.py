"""The app factory: ``create_app(settings)`` gives the whole HTTP server as one
Starlette app, with the ``Service`` on ``app.state.service``."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute

from shelby.api import agents, audit, frontend, operations, transparency
from shelby.api.endpoint import Endpoint, endpoint_route
from shelby.api.errors import http_exception_handler
from shelby.api.metrics import Metrics
from shelby.api.middleware import RequestLogMiddleware
from shelby.api.ratelimit import RateLimit
from shelby.clock import Clock
from shelby.events.store import EventStore
from shelby.scheduler import Scheduler
from shelby.service import Service
from shelby.settings import Settings, parse_rate_limit
from shelby.sweeper import LeaseSweeper

__all__ = ["ENDPOINTS", "create_app"]

ENDPOINTS: list[Endpoint] = [
    *frontend.ENDPOINTS,
    *agents.ENDPOINTS,
    *audit.ENDPOINTS,
    *transparency.ENDPOINTS,
    *operations.ENDPOINTS,
]


def _realtime_routes() -> list[BaseRoute]:
    # ==== Real time and the dashboard web app (owned by the dashboard engineer) =====
    # Websocket routes come from ``shelby.api.realtime.routes()``; add the static web
    # app's routes (``src/shelby/web/``) here too, after the websockets. They come after
    # every API route, so a catch-all mount at "/" cannot shadow the API.
    routes: list[BaseRoute] = []
    if importlib.util.find_spec("shelby.api.realtime") is not None:
        from shelby.api import realtime

        routes.extend(realtime.routes())
        routes.extend(realtime.web_routes())
    # ==== end of the dashboard engineer's spot ======================================
    return routes


def create_app(
    settings: Settings,
    *,
    store: EventStore | None = None,
    clock: Clock | None = None,
) -> Starlette:
    service = Service(settings, store=store, clock=clock)
    metrics = Metrics()
    sweeper = LeaseSweeper(service)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        transparency.signing_key(service)  # made at first start, not at first use
        unsubscribe = service.store.subscribe(metrics.on_committed)
        sweeper.start()
        try:
            yield
        finally:
            await sweeper.stop()
            unsubscribe()
            await service.close()

    routes: list[BaseRoute] = [endpoint_route(ep) for ep in ENDPOINTS]
    routes += operations.doc_routes(ENDPOINTS)
    routes += _realtime_routes()

    middleware = [Middleware(RequestLogMiddleware, metrics=metrics)]
    origins = settings.effective_cors_origins
    if origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(origins),
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                # Credentials travel in the Authorization header, never in cookies.
                allow_credentials=False,
                expose_headers=["X-Request-ID", "Retry-After"],
            )
        )
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_exception_handler},
    )
    app.state.service = service
    app.state.scheduler = Scheduler(service)
    app.state.sweeper = sweeper
    app.state.metrics = metrics
    app.state.rate_limit = RateLimit(parse_rate_limit(settings.rate_limit))
    app.state.endpoints = ENDPOINTS
    return app

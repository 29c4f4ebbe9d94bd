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
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from shelby.api import agents, audit, frontend, operations, transparency
from shelby.api.deadlines import Deadlines
from shelby.api.endpoint import Endpoint, endpoint_route
from shelby.api.errors import http_exception_handler, http_exception_response
from shelby.api.metrics import Metrics
from shelby.api.middleware import RequestLogMiddleware
from shelby.api.ratelimit import RateLimit
from shelby.clock import Clock
from shelby.events.store import EventStore
from shelby.retention import Retention
from shelby.scheduler import Scheduler
from shelby.service import Service
from shelby.settings import Settings, parse_rate_limit
from shelby.sweeper import LeaseSweeper

__all__ = ["ENDPOINTS", "create_app"]

# The router tries routes in order: the agents' endpoints, which every node calls every
# few seconds, come first.
ENDPOINTS: list[Endpoint] = [
    *agents.ENDPOINTS,
    *frontend.ENDPOINTS,
    *audit.ENDPOINTS,
    *transparency.ENDPOINTS,
    *operations.ENDPOINTS,
]


class _ShelbyApp(Starlette):
    """Starlette with a leaner stack for HTTP requests.

    Starlette wraps every request in ``ServerErrorMiddleware`` and
    ``ExceptionMiddleware``; here ``RequestLogMiddleware`` already turns anything that
    escapes into a JSON 500, and the only exceptions left to translate are the router's
    own 404 and 405, which ``_RouterErrors`` renders as ``{"detail": …}``. Websockets
    keep Starlette's exception handling.
    """

    def build_middleware_stack(self) -> ASGIApp:
        websocket_app = ExceptionMiddleware(self.router, handlers=self.exception_handlers)
        app: ASGIApp = _RouterErrors(self.router, websocket_app)
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return app


class _RouterErrors:
    def __init__(self, router: ASGIApp, websocket_app: ASGIApp) -> None:
        self.router = router
        self.websocket_app = websocket_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.websocket_app(scope, receive, send)
            return
        try:
            await self.router(scope, receive, send)
        except HTTPException as exc:
            await http_exception_response(scope, exc, send)


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
    retention = Retention(service) if settings.retention_days > 0 else None
    body_deadlines = Deadlines(settings.body_timeout_seconds)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        transparency.signing_key(service)  # made at first start, not at first use
        unsubscribe = service.store.subscribe(metrics.on_committed)
        sweeper.start()
        if retention is not None:
            retention.start()
        try:
            yield
        finally:
            if retention is not None:
                await retention.stop()
            await sweeper.stop()
            body_deadlines.close()
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
    app = _ShelbyApp(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_exception_handler},
    )
    app.state.service = service
    app.state.scheduler = Scheduler(service)
    app.state.sweeper = sweeper
    app.state.retention = retention
    app.state.metrics = metrics
    app.state.body_deadlines = body_deadlines
    app.state.rate_limit = RateLimit(parse_rate_limit(settings.rate_limit))
    app.state.endpoints = ENDPOINTS
    return app

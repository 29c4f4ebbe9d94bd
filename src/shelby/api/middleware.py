"""The outermost layer of every HTTP request: a request id, one structlog line with the
route, status and duration, the Prometheus request metrics, and a JSON 500 for
anything that escaped the endpoints.

Plain ASGI rather than ``BaseHTTPMiddleware``, which would cost a task and a stream
per request on the heartbeat path. Nothing of the body, the query string or the
``Authorization`` header is logged: those carry scripts and tokens.
"""

from __future__ import annotations

import itertools
import re
import secrets
import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shelby.api.endpoint import send_json
from shelby.api.errors import error_body
from shelby.api.metrics import Metrics

__all__ = ["RequestLogMiddleware"]

log = structlog.get_logger("shelby.http")

_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._-]{1,64}$")


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # A random prefix per process and a counter: unique, and without a getrandom()
        # system call on every request.
        prefix = secrets.token_hex(4)
        self._ids = (f"{prefix}-{n:x}".encode() for n in itertools.count(1))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = None
        for key, value in scope["headers"]:
            if key == b"x-request-id" and _REQUEST_ID.match(value):
                request_id = value
                break
        if request_id is None:
            request_id = next(self._ids)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id.decode())
        status = 500
        responded = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status = message["status"]
                responded = True
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error")
            if not responded:
                await send_json(send_with_id, 500, error_body("internal server error"))
        finally:
            duration = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(template, scope["method"], status, duration)
            log.info(
                "request",
                method=scope["method"],
                route=template,
                status=status,
                duration_ms=round(duration * 1000, 3),
            )

"""Every error answer is ``{"detail": …}``: the API's own refusals, the domain's, the
store's, the router's (unknown routes and methods), and anything unexpected (500,
without a traceback; the traceback goes to the server's log only)."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Scope, Send

from shelby.domain.errors import DomainError
from shelby.events.store import ConcurrencyError, StoreUnavailable

__all__ = [
    "ApiError",
    "error_body",
    "error_for",
    "http_exception_handler",
]

log = structlog.get_logger("shelby.api")

_REASONS = {
    400: "bad request",
    401: "missing or unknown token",
    403: "this token may not do that",
    404: "not found",
    405: "method not allowed",
    409: "conflict",
    413: "request too large",
    422: "unprocessable",
    429: "too many requests",
    500: "internal server error",
    503: "service unavailable",
}


class ApiError(Exception):
    def __init__(self, status: int, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})


_encoder = msgspec.json.Encoder()


def error_body(detail: str) -> bytes:
    return _encoder.encode({"detail": detail})


def error_for(exc: BaseException) -> ApiError:
    """The answer for an exception raised while handling a request."""
    match exc:
        case ApiError():
            return exc
        case DomainError():
            return ApiError(exc.status_code, str(exc))
        case StoreUnavailable():
            return ApiError(503, f"the event store is unavailable: {exc}")
        case ConcurrencyError():
            # Retried many times already: some stream is being fought over.
            return ApiError(503, "the request kept conflicting with concurrent writes; retry")
        case HTTPException():
            detail = exc.detail if exc.detail else _REASONS.get(exc.status_code, "error")
            return ApiError(exc.status_code, str(detail), exc.headers)
        case _:
            return ApiError(500, "internal server error")


def _router_error(method: str, path: str, exc: Exception) -> Response:
    err = error_for(exc)
    detail = err.detail
    if isinstance(exc, HTTPException):
        if exc.status_code == 404:
            detail = f"no route for {path}"
        elif exc.status_code == 405:
            detail = f"method {method} is not allowed on {path}"
    return Response(
        error_body(detail),
        status_code=err.status,
        headers=err.headers,
        media_type="application/json",
    )


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """For the router's own 404 and 405 (Starlette raises ``HTTPException``)."""
    return _router_error(request.method, request.url.path, exc)


async def http_exception_response(scope: Scope, exc: Exception, send: Send) -> None:
    """The same answer, sent from plain ASGI."""
    response = _router_error(scope["method"], scope["path"], exc)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}

"""One endpoint = one ``Endpoint`` record: its path, its token, its msgspec request and
response types, and an async function. The same records build the routes and the
OpenAPI document, so the document cannot drift from what the server does.

Each route is a plain ASGI app rather than a Starlette ``Request`` handler: the body
is read with its size limit, decoded by a typed msgspec decoder, and the answer
encoded by msgspec, with nothing in between that the heartbeat path would pay for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

import msgspec
import structlog
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from shelby.api.auth import Access, Principal, authorize, bearer_token
from shelby.api.errors import ApiError, error_body, error_for
from shelby.api.ratelimit import RateLimit
from shelby.service import Service, token_hash

__all__ = ["Call", "Endpoint", "Raw", "endpoint_route", "send_json"]

log = structlog.get_logger("shelby.api")


class Raw(msgspec.Struct, frozen=True):
    """An answer that is not JSON (``/metrics``)."""

    body: bytes
    content_type: str
    status: int = 200


@dataclass(slots=True)
class Call:
    """What an endpoint function gets: the service, who asks, and the decoded input."""

    service: Service
    principal: Principal
    body: Any
    query: Any
    params: dict[str, str]
    scope: Scope

    def act_for(self, node_id: str) -> None:
        self.principal.act_for(node_id)


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    access: Access
    summary: str
    func: Callable[[Call], Awaitable[Any]]
    response: Any
    body: Any = None  # a msgspec type, or None for no body
    query: Any = None  # a msgspec Struct of the query parameters
    errors: tuple[int, ...] = ()
    tag: str = "frontend"
    # The settings attribute that bounds the body: scripts may be larger than the rest.
    body_limit: Literal["max_body_bytes", "max_script_bytes"] = "max_body_bytes"
    description: str = ""
    name: str = field(default="")

    @property
    def operation_id(self) -> str:
        return self.name or self.func.__name__


_encoder = msgspec.json.Encoder()


async def send_json(
    send: Send, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if headers:
        raw_headers.extend((k.lower().encode(), v.encode()) for k, v in headers.items())
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    declared = _header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _field_of(err: msgspec.ValidationError) -> str:
    """msgspec says where: ``Expected `int`, got `str` - at `$.limit` ``."""
    text = str(err)
    if " - at `$." in text:
        message, _, where = text.rpartition(" - at `$.")
        return f"{where.rstrip('`')}: {message}"
    return text


class EndpointApp:
    """The ASGI app behind one route."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._body_decoder = None if endpoint.body is None else msgspec.json.Decoder(endpoint.body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._handle(scope, receive, send)
        except Exception as exc:
            err = error_for(exc)
            if err.status >= 500:
                if err.status == 500:
                    log.exception("request failed", route=self.endpoint.path)
                else:
                    log.warning("store unavailable", error=err.detail)
            await send_json(send, err.status, error_body(err.detail), err.headers)

    async def _authorize(self, service: Service, token: str | None) -> Principal:
        try:
            return authorize(service, self.endpoint.access, token)
        except ApiError as refused:
            # An unknown token may be a node that registered through another replica
            # a moment ago; ask the projection once before refusing.
            if refused.status != 401 or token is None:
                raise
            if not await service.learn_token(token_hash(token)):
                raise
            return authorize(service, self.endpoint.access, token)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        ep = self.endpoint
        service: Service = scope["app"].state.service
        limiter: RateLimit = scope["app"].state.rate_limit
        token = bearer_token(_header(scope, b"authorization"))
        try:
            principal = await self._authorize(service, token)
        except ApiError:
            # Refused requests count against the client's address: inventing a new
            # token per request must not buy a fresh allowance each time.
            if limiter.enabled:
                client = scope.get("client")
                limiter.check("a:" + (client[0] if client else "?"))
            raise
        if limiter.enabled:
            if token is not None and principal.kind != "anonymous":
                limiter.check("t:" + token_hash(token))
            else:
                client = scope.get("client")
                limiter.check("a:" + (client[0] if client else "?"))
        if principal.node_id is not None:
            structlog.contextvars.bind_contextvars(node_id=principal.node_id)
        query = None
        if ep.query is not None:
            pairs = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
            try:
                query = msgspec.convert(pairs, ep.query, strict=False)
            except msgspec.ValidationError as exc:
                raise ApiError(422, _field_of(exc)) from None
        body = None
        if self._body_decoder is not None:
            limit = getattr(service.settings, ep.body_limit)
            raw = await _read_body(scope, receive, limit)
            try:
                body = self._body_decoder.decode(raw)
            except msgspec.ValidationError as exc:
                raise ApiError(422, _field_of(exc)) from None
            except msgspec.DecodeError as exc:
                raise ApiError(400, f"malformed JSON: {exc}") from None
        params = scope["path_params"]
        job_id = (
            params.get("job_id") or getattr(body, "job_id", None) or getattr(query, "job_id", None)
        )
        if job_id is not None:
            structlog.contextvars.bind_contextvars(job_id=job_id)
        result = await ep.func(Call(service, principal, body, query, params, scope))
        if isinstance(result, Raw):
            headers = [
                (b"content-type", result.content_type.encode()),
                (b"content-length", str(len(result.body)).encode()),
            ]
            await send({"type": "http.response.start", "status": result.status, "headers": headers})
            await send({"type": "http.response.body", "body": result.body})
            return
        await send_json(send, 200, _encoder.encode(result))


def endpoint_route(endpoint: Endpoint) -> Route:
    return Route(endpoint.path, EndpointApp(endpoint), methods=[endpoint.method])

"""One endpoint = one ``Endpoint`` record: its path, its token, its msgspec request and
response types, and an async function. The same records build the routes and the
OpenAPI document, so the document cannot drift from what the server does.

Each route is a plain ASGI app rather than a Starlette ``Request`` handler: the body
is read with its size limit, decoded by a typed msgspec decoder, and the answer
encoded by msgspec, with nothing in between that the heartbeat path would pay for.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

import msgspec
import structlog
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from shelby.api.auth import Access, Principal, authorize, bearer_token
from shelby.api.deadlines import Deadlines
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
    # What a 200 may be: JSON of ``response``, or text (a ``Raw`` answer), or either.
    media_types: tuple[str, ...] = ("application/json",)
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


async def _read_body(scope: Scope, receive: Receive, limit: int, deadlines: Deadlines) -> bytes:
    """The whole body, at most ``limit`` bytes (else 413), within the deadlines' timeout
    (else 408): a client trickling a body would otherwise hold its request for ever."""
    declared = _header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is larger than {limit} bytes")
    task = deadlines.start()
    try:
        body = await _receive_body(receive, limit)
    except asyncio.CancelledError:
        if deadlines.ended(task):
            within = deadlines.timeout
            raise ApiError(408, f"the request body did not arrive within {within:g} s") from None
        raise
    except BaseException:
        deadlines.ended(task)
        raise
    deadlines.ended(task)
    return body


async def _receive_body(receive: Receive, limit: int) -> bytes:
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


_WHOLE_FLOAT = re.compile(
    r"^Expected `int(?: \| null)?`, got `float` - at `\$((?:\.\w+|\[\d+\])*)`$"
)
_STEP = re.compile(r"\.(\w+)|\[(\d+)\]")


def _whole_floats_as_ints(raw: bytes, type_: Any, refusal: msgspec.ValidationError) -> Any:
    """The body, when the strict decoder's only complaint is ``2.0`` where an integer belongs.

    JSON Schema, and so the OpenAPI document, counts ``2.0`` as the integer 2 (a client
    that computes a number in floating point writes it so); msgspec's strict decoder does
    not. Only on that refusal, the body is decoded untyped, the value at the place the
    refusal names becomes an ``int`` if it is whole, and the result is converted again,
    place by place. Free-form fields (``meta``) are never touched: msgspec names only
    typed integer fields.
    """
    data = msgspec.json.decode(raw)
    for _ in range(256):
        match = _WHOLE_FLOAT.match(str(refusal))
        if match is None:
            raise refusal
        holder: Any = None
        key: str | int | None = None
        value: Any = data
        for name, index in _STEP.findall(match.group(1)):
            holder, key = value, (name if name else int(index))
            value = holder[key]
        if holder is None or not (isinstance(value, float) and value.is_integer()):
            raise refusal
        holder[key] = int(value)
        try:
            return msgspec.convert(data, type_, strict=True)
        except msgspec.ValidationError as again:
            refusal = again
    raise refusal


def _decode_body(decoder: msgspec.json.Decoder[Any], type_: Any, raw: bytes) -> Any:
    try:
        try:
            return decoder.decode(raw)
        except msgspec.ValidationError as exc:
            return _whole_floats_as_ints(raw, type_, exc)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if "out of range - at `$[" in text:
            where = _out_of_range_at(raw)
            if where is not None:
                raise ApiError(422, f"{where}: {text.partition(' - at ')[0]}") from None
        raise ApiError(422, _field_of(exc)) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"malformed JSON: {exc}") from None
    except RecursionError:
        # msgspec refuses to go deeper than the interpreter's stack allows (about a
        # thousand levels); anything that deep is no body of ours.
        raise ApiError(400, "malformed JSON: nested too deeply") from None


class _OutOfRange:
    pass


def _out_of_range_at(raw: bytes) -> str | None:
    """Where the first number too large to hold is, as ``meta.lr`` or ``lines[2].timestamp``.

    msgspec checks a number's range while it parses, where it does not know the field
    yet (``at `$[...]```); this second reading, only on that refusal, finds it.
    """

    def integer(text: str) -> int | _OutOfRange:
        try:
            return int(text)
        except ValueError:  # past the interpreter's digit limit, as for msgspec
            return _OutOfRange()

    def number(text: str) -> float | _OutOfRange:
        value = float(text)
        return _OutOfRange() if math.isinf(value) else value

    try:
        data = json.loads(raw, parse_int=integer, parse_float=number)
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, _OutOfRange):
            return where or "$"
        if isinstance(value, dict):
            items = [(f"{where}.{k}" if where else k, v) for k, v in value.items()]
        elif isinstance(value, list):
            items = [(f"{where}[{i}]", v) for i, v in enumerate(value)]
        else:
            continue
        stack.extend(reversed(items))
    return None


def _decode_query(type_: Any, query_string: bytes) -> Any:
    """The query string as ``type_``: each parameter at most once, and with a value.

    Lax conversion turns text into numbers, but also ``null`` (or an empty value) into
    ``None``; a parameter that is there stands for a value, so that is refused, as a
    parameter given twice is (the document describes one value each).
    """
    known = {f.encode_name for f in msgspec.structs.fields(type_)}
    pairs: dict[str, str] = {}
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name in pairs and name in known:  # an unknown one is ignored, however given
            raise ApiError(422, f"{name}: given more than once")
        pairs[name] = value
    try:
        query = msgspec.convert(pairs, type_, strict=False)
    except msgspec.ValidationError as exc:
        raise ApiError(422, _field_of(exc)) from None
    for f in msgspec.structs.fields(type_):
        if f.encode_name in pairs and getattr(query, f.name) is None:
            raise ApiError(422, f"{f.encode_name}: expected a value, got {pairs[f.encode_name]!r}")
    return query


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

    async def _authorize(
        self, service: Service, token: str | None, hashed: str | None
    ) -> Principal:
        try:
            return authorize(service, self.endpoint.access, token, hashed)
        except ApiError as refused:
            # An unknown token may be a node that registered through another replica
            # a moment ago; ask the projection once before refusing.
            if refused.status != 401 or token is None or hashed is None:
                raise
            if not await service.learn_token(hashed):
                raise
            return authorize(service, self.endpoint.access, token, hashed)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        ep = self.endpoint
        service: Service = scope["app"].state.service
        limiter: RateLimit = scope["app"].state.rate_limit
        token = bearer_token(_header(scope, b"authorization"))
        # Hashed once: authorizing and the rate limit's key both use it.
        hashed = None if token is None else token_hash(token)
        try:
            principal = await self._authorize(service, token, hashed)
        except ApiError:
            # Refused requests count against the client's address: inventing a new
            # token per request must not buy a fresh allowance each time.
            if limiter.enabled:
                client = scope.get("client")
                limiter.check("a:" + (client[0] if client else "?"))
            raise
        if limiter.enabled:
            if hashed is not None and principal.kind != "anonymous":
                limiter.check("t:" + hashed)
            else:
                client = scope.get("client")
                limiter.check("a:" + (client[0] if client else "?"))
        if principal.node_id is not None:
            structlog.contextvars.bind_contextvars(node_id=principal.node_id)
        query = None if ep.query is None else _decode_query(ep.query, scope["query_string"])
        body = None
        if self._body_decoder is not None:
            limit = getattr(service.settings, ep.body_limit)
            raw = await _read_body(scope, receive, limit, scope["app"].state.body_deadlines)
            body = _decode_body(self._body_decoder, ep.body, raw)
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

"""The OpenAPI document, generated from the ``Endpoint`` records and the msgspec types
they decode and encode with (``msgspec.json.schema_components``): nothing in it is
written by hand, so it cannot disagree with the server."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from shelby.api.auth import Access
from shelby.api.endpoint import Endpoint
from shelby.api.schemas import ErrorResponse

__all__ = ["openapi_document"]

_REF = "#/components/schemas/{name}"

_SECURITY: dict[Access, list[dict[str, list[str]]]] = {
    Access.ADMIN: [{"adminToken": []}],
    Access.JOIN: [{"joinToken": []}],
    Access.NODE: [{"nodeToken": []}],
    Access.PUBLIC: [],
}

_ERROR_TEXT = {
    400: "Malformed JSON",
    401: "Missing or unknown token",
    403: "A valid token used outside its scope",
    404: "Not found",
    408: "The body did not arrive in time",
    409: "The request conflicts with the current state",
    413: "The request is too large",
    422: "The body or query does not fit the schema; `detail` names the field",
    429: "Rate limited; see Retry-After",
    503: "The event store is unavailable",
}


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema without msgspec's ``null`` for an optional field: a
    query cannot carry a null, and leaving the parameter out is how to say none."""
    options = schema.get("anyOf")
    if options is None or {"type": "null"} not in options:
        return schema
    rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
    kept = [o for o in options if o != {"type": "null"}]
    return {**rest, **kept[0]} if len(kept) == 1 else {**rest, "anyOf": kept}


def openapi_document(endpoints: Sequence[Endpoint], *, version: str) -> dict[str, Any]:
    types: list[Any] = [ErrorResponse]
    for ep in endpoints:
        for t in (ep.body, ep.query, ep.response):
            if t is not None and t not in types:
                types.append(t)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of = dict(zip(types, schemas, strict=True))
    query_names = {ep.query.__name__ for ep in endpoints if ep.query is not None}

    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        operation: dict[str, Any] = {
            "operationId": ep.operation_id,
            "summary": ep.summary,
            "tags": [ep.tag],
            "security": _SECURITY[ep.access],
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in re.findall(r"{(\w+)}", ep.path)
            ],
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {
                        media_type: {
                            "schema": schema_of[ep.response]
                            if media_type == "application/json"
                            else {"type": "string"}
                        }
                        for media_type in ep.media_types
                    },
                },
            },
        }
        if ep.query is not None:
            query_schema = components[ep.query.__name__]
            required = set(query_schema.get("required", ()))
            for name, prop in query_schema.get("properties", {}).items():
                operation["parameters"].append(
                    {
                        "name": name,
                        "in": "query",
                        "required": name in required,
                        "schema": _without_null(prop),
                    }
                )
        if ep.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema_of[ep.body]}},
            }
        errors = set(ep.errors) | {429, 500}
        if ep.body is not None:
            errors |= {408}
        if ep.access is not Access.PUBLIC:
            errors |= {401}
        for code in sorted(errors):
            operation["responses"][str(code)] = {
                "description": _ERROR_TEXT.get(code, "Internal server error (no traceback)"),
                "content": {"application/json": {"schema": schema_of[ErrorResponse]}},
            }
        paths.setdefault(ep.path, {})[ep.method.lower()] = operation

    # A query's fields became parameters; its object schema is referenced nowhere.
    for name in query_names:
        components.pop(name, None)
    bearer = {"type": "http", "scheme": "bearer"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Shelby",
            "version": version,
            "description": "An event-sourced coordinator for ML training jobs.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "adminToken": {**bearer, "description": "The admin token (frontend, jobs)"},
                "joinToken": {**bearer, "description": "The join token (registering a node)"},
                "nodeToken": {**bearer, "description": "A node token from /api/nodes/register"},
            },
        },
    }

"""The raw log for auditors: rows of the ``events`` table as stored, with their hashes.

These read the log itself, not a projection: an audit must not trust derived data,
and a deleted job's history is only there. Events retention archived are read from
their segments, so the answers are the whole log, as if nothing had moved.
"""

from __future__ import annotations

from typing import Any

import msgspec

from shelby.api.auth import Access
from shelby.api.endpoint import Call, Endpoint
from shelby.api.errors import ApiError
from shelby.api.schemas import AuditEvent, AuditEvents, AuditQuery
from shelby.events.store import ArchiveUnavailable, EventStore
from shelby.events.types import job_stream

__all__ = ["ENDPOINTS", "job_rows"]


def _events(rows: list[tuple[Any, ...]]) -> AuditEvents:
    return AuditEvents(
        events=[
            AuditEvent(
                seq=seq,
                stream=stream,
                version=version,
                type=type_,
                timestamp=timestamp,
                data=msgspec.Raw(data.encode()),
                prev_hash=prev_hash,
                hash=hash_,
            )
            for seq, stream, version, type_, timestamp, data, prev_hash, hash_ in rows
        ]
    )


async def audit_log(call: Call) -> AuditEvents:
    q: AuditQuery = call.query
    try:
        rows = await call.service.store.read_raw(q.after, q.limit)
    except ArchiveUnavailable as exc:
        raise ApiError(404, f"archived events cannot be read: {exc}") from None
    return _events(rows)


async def job_rows(store: EventStore, job_id: str) -> list[tuple[Any, ...]]:
    """One job's raw rows, in stream order, deleted or not, archived or not; 404 when
    it never existed, or when rows it archived cannot be read (naming the segment)."""
    try:
        rows = await store.read_raw_stream(job_stream(job_id))
    except ArchiveUnavailable as exc:
        raise ApiError(404, f"archived events of job {job_id!r} cannot be read: {exc}") from None
    if not rows:
        raise ApiError(404, f"job {job_id!r} has no events")
    return rows


async def audit_job(call: Call) -> AuditEvents:
    return _events(await job_rows(call.service.store, call.params["job_id"]))


ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/audit/log",
        Access.ADMIN,
        "Raw events after `after`, in log order, with their hash chain",
        audit_log,
        AuditEvents,
        query=AuditQuery,
        errors=(401, 403, 404, 422),
        tag="audit",
    ),
    Endpoint(
        "GET",
        "/api/audit/jobs/{job_id}",
        Access.ADMIN,
        "Every raw event of one job, log lines included, also after it was deleted",
        audit_job,
        AuditEvents,
        errors=(401, 403, 404),
        tag="audit",
    ),
]

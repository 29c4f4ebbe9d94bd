"""The agent protocol (API.md, "Agent protocol"): register with the join token, then
heartbeat, poll, ack, fetch the script, stream the log, report usage and finish with
the node token, each for the node the token belongs to. An agent going away hands its
attempts back with release, so that they need not wait for the lease to expire."""

from __future__ import annotations

import secrets

from shelby.api.auth import Access
from shelby.api.endpoint import Call, Endpoint
from shelby.api.errors import ApiError
from shelby.api.schemas import (
    AckRequest,
    AckResponse,
    FetchScriptQuery,
    FetchScriptResponse,
    FinishBody,
    FinishRequest,
    FinishResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    OkResponse,
    PollQuery,
    PollResponse,
    RegisterRequest,
    RegisterResponse,
    ReleaseRequest,
    ReleaseResponse,
    StreamLogBody,
    StreamLogRequest,
    StreamLogResponse,
    UsageReportRequest,
)
from shelby.domain import JOBS, NODES
from shelby.domain.jobs import (
    AckJob,
    AppendLogLines,
    FinishJob,
    JobState,
    ReleaseJob,
    ReportJobUsage,
    require_held,
)
from shelby.domain.nodes import Heartbeat, RegisterNode, ReportNodeUsage
from shelby.events.types import LogLine, LogLinesAppended, job_stream, node_stream
from shelby.scheduler import Scheduler
from shelby.service import token_hash
from shelby.settings import heartbeat_interval

__all__ = ["ENDPOINTS", "MAX_LINES", "MAX_LINE_BYTES", "truncate_line"]

MAX_LINES = 1000
MAX_LINE_BYTES = 16 * 1024

_NODE_ERRORS = (400, 401, 403, 404, 409, 413, 422)


def truncate_line(line: str) -> tuple[str, bool]:
    """A line cut to 16 KiB of UTF-8, never through the middle of a character."""
    encoded = line.encode()
    if len(encoded) <= MAX_LINE_BYTES:
        return line, False
    return encoded[:MAX_LINE_BYTES].decode(errors="ignore"), True


def _scheduler(call: Call) -> Scheduler:
    scheduler: Scheduler = call.scope["app"].state.scheduler
    return scheduler


async def register(call: Call) -> RegisterResponse:
    body: RegisterRequest = call.body
    node_id = body.node_id or f"node-{secrets.token_hex(6)}"
    token = secrets.token_urlsafe(32)
    await call.service.handler.handle(
        node_stream(node_id),
        NODES,
        RegisterNode(
            node_id=node_id,
            name=body.name or node_id,
            token_hash=token_hash(token),
            specs=body.specs,
            labels=body.labels,
            max_concurrent_jobs=body.max_concurrent_jobs,
        ),
    )
    lease = call.service.settings.lease_seconds
    return RegisterResponse(
        node_id=node_id,
        token=token,
        heartbeat_interval_seconds=heartbeat_interval(lease),
        lease_seconds=lease,
    )


async def heartbeat(call: Call) -> HeartbeatResponse:
    body: HeartbeatRequest = call.body
    call.act_for(body.node_id)
    await call.service.handler.handle(
        node_stream(body.node_id),
        NODES,
        Heartbeat(node_id=body.node_id, specs=body.specs, running_jobs=body.running_jobs),
    )
    cancel: list[str] = []
    if body.running_jobs:
        wanted = list(dict.fromkeys(body.running_jobs))
        marks = ",".join("?" * len(wanted))
        rows = await call.service.store.fetchall(
            f"SELECT job_id, status, assigned_node FROM jobs WHERE job_id IN ({marks})",
            wanted,
        )
        held = {
            job_id
            for job_id, status, node in rows
            if status in ("assigned", "running") and node == body.node_id
        }
        # Deleted, restarted, ended or handed to another node: this node must stop it.
        cancel = [job_id for job_id in wanted if job_id not in held]
    return HeartbeatResponse(ok=True, cancel_jobs=cancel)


async def poll(call: Call) -> PollResponse:
    q: PollQuery = call.query
    call.act_for(q.node_id)
    job = await _scheduler(call).poll(q.node_id, q.wait)
    return PollResponse(job=job)


async def ack(call: Call) -> AckResponse:
    body: AckRequest = call.body
    call.act_for(body.node_id)
    outcome = await call.service.handler.handle(
        job_stream(body.job_id),
        JOBS,
        AckJob(job_id=body.job_id, node_id=body.node_id, attempt=body.attempt),
    )
    if outcome.recorded:
        started_at: float | None = outcome.recorded[-1].timestamp
    else:  # a repeated ack: the first one's time
        row = await call.service.store.fetchone(
            "SELECT started_at FROM jobs WHERE job_id = ?", (body.job_id,)
        )
        started_at = None if row is None else row[0]
    return AckResponse(
        job_id=body.job_id,
        status=str(outcome.state.status),
        started_at=started_at,
        attempt=outcome.state.attempt,
    )


async def _held_by(call: Call, job_id: str, node_id: str) -> JobState:
    state, _version = await call.service.handler.state(job_stream(job_id), JOBS)
    require_held(state, job_id, node_id)
    return state


async def fetch_script(call: Call) -> FetchScriptResponse:
    q: FetchScriptQuery = call.query
    call.act_for(q.node_id)
    await _held_by(call, q.job_id, q.node_id)
    row = await call.service.store.fetchone(
        "SELECT script, requirements, entrypoint, script_hash FROM scripts WHERE job_id = ?",
        (q.job_id,),
    )
    if row is None:
        raise ApiError(404, f"job {q.job_id!r} has no script")
    return FetchScriptResponse(
        job_id=q.job_id, script=row[0], requirements=row[1], entrypoint=row[2], script_hash=row[3]
    )


async def stream_log(call: Call) -> StreamLogResponse:
    body: StreamLogRequest = call.body
    call.act_for(body.node_id)
    if body.lines is not None:
        incoming = [(ln.line, ln.timestamp, ln.stream) for ln in body.lines]
    else:
        stamp = body.timestamp if body.timestamp is not None else call.service.now()
        incoming = [(body.line or "", stamp, body.stream)]
    if len(incoming) > MAX_LINES:
        raise ApiError(413, f"at most {MAX_LINES} lines a request, got {len(incoming)}")
    lines = []
    for text, stamp, stream in incoming:
        cut, truncated = truncate_line(text)
        lines.append(LogLine(line=cut, timestamp=stamp, stream=stream, truncated=truncated))
    outcome = await call.service.handler.handle(
        job_stream(body.job_id),
        JOBS,
        AppendLogLines(
            job_id=body.job_id,
            node_id=body.node_id,
            attempt=body.attempt,
            offset=body.offset,
            lines=lines,
        ),
    )
    accepted = sum(
        len(rec.event.lines) for rec in outcome.recorded if isinstance(rec.event, LogLinesAppended)
    )
    return StreamLogResponse(accepted=accepted, next_offset=outcome.state.next_offset)


async def usage_report(call: Call) -> OkResponse:
    body: UsageReportRequest = call.body
    call.act_for(body.node_id)
    if body.job_id is not None:
        await call.service.handler.handle(
            job_stream(body.job_id),
            JOBS,
            ReportJobUsage(
                job_id=body.job_id,
                node_id=body.node_id,
                attempt=body.attempt,
                cpu_seconds=body.cpu_seconds,
                wall_seconds=body.wall_seconds,
                peak_ram_mb=body.peak_ram_mb,
                gpu_seconds=body.gpu_seconds,
                report_id=body.report_id,
            ),
        )
    else:
        await call.service.handler.handle(
            node_stream(body.node_id),
            NODES,
            ReportNodeUsage(
                node_id=body.node_id,
                cpu_seconds=body.cpu_seconds,
                wall_seconds=body.wall_seconds,
                peak_ram_mb=body.peak_ram_mb,
                gpu_seconds=body.gpu_seconds,
            ),
        )
    return OkResponse(ok=True)


async def finish(call: Call) -> FinishResponse:
    body: FinishRequest = call.body
    call.act_for(body.node_id)
    outcome = await call.service.handler.handle(
        job_stream(body.job_id),
        JOBS,
        FinishJob(
            job_id=body.job_id,
            node_id=body.node_id,
            attempt=body.attempt,
            status=body.status,
            model_hash=body.model_hash,
            exit_code=body.exit_code,
            error=body.error,
            metadata=body.metadata,
        ),
    )
    return FinishResponse(job_id=body.job_id, status=str(outcome.state.status))


async def release(call: Call) -> ReleaseResponse:
    body: ReleaseRequest = call.body
    call.act_for(body.node_id)
    outcome = await call.service.handler.handle(
        job_stream(body.job_id),
        JOBS,
        ReleaseJob(
            job_id=body.job_id,
            node_id=body.node_id,
            attempt=body.attempt,
            reason=body.reason or "no reason given",
        ),
    )
    return ReleaseResponse(
        job_id=body.job_id, status=str(outcome.state.status), attempt=outcome.state.attempt
    )


ENDPOINTS = [
    Endpoint(
        "POST",
        "/api/nodes/register",
        Access.JOIN,
        "Register a node (again): returns its node token; a previous token stops working",
        register,
        RegisterResponse,
        body=RegisterRequest,
        errors=(400, 401, 413, 422),
        tag="agents",
    ),
    Endpoint(
        "POST",
        "/api/nodes/heartbeat",
        Access.NODE,
        "Tell the server the node is alive; answers the jobs it must stop",
        heartbeat,
        HeartbeatResponse,
        body=HeartbeatRequest,
        errors=(400, 401, 403, 404, 413, 422),
        tag="agents",
    ),
    Endpoint(
        "GET",
        "/api/jobs/poll",
        Access.NODE,
        "Take the oldest runnable job this node can run, waiting up to `wait` seconds",
        poll,
        PollResponse,
        query=PollQuery,
        errors=(401, 403, 404, 422),
        tag="agents",
    ),
    Endpoint(
        "POST",
        "/api/jobs/ack",
        Access.NODE,
        "Confirm that the node started the job it was given",
        ack,
        AckResponse,
        body=AckRequest,
        errors=_NODE_ERRORS,
        tag="agents",
    ),
    Endpoint(
        "GET",
        "/api/jobs/fetch-script",
        Access.NODE,
        "The script of a job assigned to this node",
        fetch_script,
        FetchScriptResponse,
        query=FetchScriptQuery,
        errors=(401, 403, 404, 409, 422),
        tag="agents",
    ),
    Endpoint(
        "POST",
        "/api/jobs/stream-log",
        Access.NODE,
        "Append log lines of the current attempt; lines already stored are dropped",
        stream_log,
        StreamLogResponse,
        body=StreamLogBody,
        errors=_NODE_ERRORS,
        tag="agents",
    ),
    Endpoint(
        "POST",
        "/api/usage-report",
        Access.NODE,
        "Report resources spent by a job's attempt, or by the node",
        usage_report,
        OkResponse,
        body=UsageReportRequest,
        errors=_NODE_ERRORS,
        tag="agents",
    ),
    Endpoint(
        "POST",
        "/api/jobs/finish",
        Access.NODE,
        "End the current attempt as finished or failed (repeating it changes nothing)",
        finish,
        FinishResponse,
        body=FinishBody,
        errors=_NODE_ERRORS,
        tag="agents",
    ),
    Endpoint(
        "POST",
        "/api/jobs/release",
        Access.NODE,
        "Hand back the current attempt unfinished (the node is going away): the job is"
        " requeued at once as the next attempt, or fails when it was the last"
        " (repeating it changes nothing)",
        release,
        ReleaseResponse,
        body=ReleaseRequest,
        errors=_NODE_ERRORS,
        tag="agents",
    ),
]

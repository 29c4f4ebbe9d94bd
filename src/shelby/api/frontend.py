"""The frontend's endpoints (admin token): dashboard, health, jobs, nodes, logs, and
creating, scripting, restarting and deleting jobs. Reads come from ``views``."""

from __future__ import annotations

import secrets

import msgspec
import structlog

from shelby.api import views
from shelby.api.auth import Access
from shelby.api.endpoint import Call, Endpoint, Raw
from shelby.api.errors import ApiError
from shelby.api.schemas import (
    CreateJobRequest,
    DeleteResponse,
    JobList,
    JobListQuery,
    LogsQuery,
    LogsResponse,
    NodeList,
    UploadScriptRequest,
    UploadScriptResponse,
)
from shelby.domain import JOBS
from shelby.domain.jobs import CreateJob, DeleteJob, RestartJob, UploadScript
from shelby.events.store import StoreUnavailable
from shelby.events.types import Resources, ScriptUploaded, job_stream

__all__ = ["ENDPOINTS"]

_encoder = msgspec.json.Encoder()
log = structlog.get_logger("shelby.api")


def _view_args(call: Call) -> dict[str, float]:
    return {"now": call.service.now(), "lease_seconds": call.service.settings.lease_seconds}


async def _job_or_404(call: Call, job_id: str) -> views.JobView:
    view = await views.job_view(call.service.store, job_id, **_view_args(call))
    if view is None:
        raise ApiError(404, f"job {job_id!r} not found")
    return view


async def dashboard(call: Call) -> views.Dashboard:
    return await views.dashboard_view(call.service.store, **_view_args(call))


async def health(call: Call) -> views.Health | Raw:
    try:
        view = await views.health_view(call.service.store, **_view_args(call))
    except Exception as exc:  # whatever the driver says, the database is not usable
        detail = str(exc)
        if not isinstance(exc, StoreUnavailable):
            log.warning("health check failed", error=repr(exc))
            detail = "the event store cannot be read"  # the driver's words stay in the log
        view = views.unhealthy(call.service.now(), detail)
    if view.status == "healthy":
        return view
    return Raw(_encoder.encode(view), "application/json", 503)


async def list_jobs(call: Call) -> JobList:
    q: JobListQuery = call.query
    jobs = await views.job_list_view(
        call.service.store, status=q.status, limit=q.limit, **_view_args(call)
    )
    return JobList(jobs=jobs, count=len(jobs))


async def get_job(call: Call) -> views.JobDetail:
    job_id = call.params["job_id"]
    detail = await views.job_detail_view(call.service.store, job_id, **_view_args(call))
    if detail is None:
        raise ApiError(404, f"job {job_id!r} not found")
    return detail


async def delete_job(call: Call) -> DeleteResponse:
    job_id = call.params["job_id"]
    await call.service.handler.handle(job_stream(job_id), JOBS, DeleteJob(job_id=job_id))
    return DeleteResponse(job_id=job_id, deleted=True)


async def restart_job(call: Call) -> views.JobView:
    job_id = call.params["job_id"]
    await call.service.handler.handle(job_stream(job_id), JOBS, RestartJob(job_id=job_id))
    return await _job_or_404(call, job_id)


async def list_nodes(call: Call) -> NodeList:
    nodes = await views.node_list_view(call.service.store, **_view_args(call))
    return NodeList(nodes=nodes, count=len(nodes))


async def job_logs(call: Call) -> LogsResponse:
    q: LogsQuery = call.query
    job_id = call.params["job_id"]
    row = await call.service.store.fetchone("SELECT attempt FROM jobs WHERE job_id = ?", (job_id,))
    if row is None:
        raise ApiError(404, f"job {job_id!r} not found")
    attempt = q.attempt if q.attempt is not None else row[0]
    lines = await views.log_lines_view(
        call.service.store, job_id, attempt, limit=q.limit, after=q.after
    )
    archived = await views.archived_lines_view(call.service.store, job_id, attempt)
    return LogsResponse(
        job_id=job_id, attempt=attempt, logs=lines, count=len(lines), archived=archived
    )


async def create_job(call: Call) -> views.JobView:
    body: CreateJobRequest = call.body
    job_id = body.job_id or f"job-{secrets.token_hex(6)}"
    timeout = body.timeout_minutes
    if timeout is None:
        estimate = body.runtime_minutes_estimate
        timeout = 2 * estimate if estimate else 60.0
    resources = None
    if body.resources is not None:
        r = body.resources
        resources = Resources(cpu_count=r.cpu_count, ram_gb=r.ram_gb, gpus=r.gpus)
    command = CreateJob(
        job_id=job_id,
        dataset_name=body.dataset_name,
        dataset_url=body.dataset_url,
        dataset_hash=body.dataset_hash,
        runtime_minutes_estimate=body.runtime_minutes_estimate,
        meta=body.meta,
        max_attempts=body.max_attempts,
        timeout_minutes=timeout,
        resources=resources,
        labels=body.labels,
    )
    await call.service.handler.handle(job_stream(job_id), JOBS, command)
    return await _job_or_404(call, job_id)


async def upload_script(call: Call) -> UploadScriptResponse:
    body: UploadScriptRequest = call.body
    outcome = await call.service.handler.handle(
        job_stream(body.job_id),
        JOBS,
        UploadScript(
            job_id=body.job_id,
            script=body.script,
            requirements=body.requirements,
            entrypoint=body.entrypoint,
        ),
    )
    uploaded = outcome.recorded[0].event
    assert isinstance(uploaded, ScriptUploaded)  # the decider's only answer to an upload
    return UploadScriptResponse(
        job_id=body.job_id, script_hash=uploaded.script_hash, entrypoint=body.entrypoint
    )


_NOT_FOUND = (401, 403, 404)

ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/frontend/dashboard",
        Access.ADMIN,
        "Job counts by status, active nodes and the newest jobs",
        dashboard,
        views.Dashboard,
        errors=(401, 403),
    ),
    Endpoint(
        "GET",
        "/api/frontend/system/health",
        Access.PUBLIC,
        "Whether the server and its database work (503 when the database cannot be reached"
        " or cannot take writes)",
        health,
        views.Health,
        errors=(503,),
        tag="operations",
    ),
    Endpoint(
        "GET",
        "/api/frontend/jobs",
        Access.ADMIN,
        "Jobs, newest first",
        list_jobs,
        JobList,
        query=JobListQuery,
        errors=(401, 403, 422),
    ),
    Endpoint(
        "GET",
        "/api/frontend/jobs/{job_id}",
        Access.ADMIN,
        "One job with its latest log lines and its provenance",
        get_job,
        views.JobDetail,
        errors=_NOT_FOUND,
    ),
    Endpoint(
        "DELETE",
        "/api/frontend/jobs/{job_id}",
        Access.ADMIN,
        "Delete a job: it leaves every view; its history stays in the log",
        delete_job,
        DeleteResponse,
        errors=_NOT_FOUND,
    ),
    Endpoint(
        "POST",
        "/api/frontend/jobs/{job_id}/restart",
        Access.ADMIN,
        "Run a finished or failed job again as a new attempt",
        restart_job,
        views.JobView,
        errors=(*_NOT_FOUND, 409),
    ),
    Endpoint(
        "GET",
        "/api/frontend/nodes",
        Access.ADMIN,
        "Compute nodes in the order they first registered",
        list_nodes,
        NodeList,
        errors=(401, 403),
    ),
    Endpoint(
        "GET",
        "/api/frontend/logs/{job_id}",
        Access.ADMIN,
        "Log lines of one attempt of a job (default: the current one), oldest first",
        job_logs,
        LogsResponse,
        query=LogsQuery,
        errors=(*_NOT_FOUND, 422),
    ),
    Endpoint(
        "POST",
        "/api/jobs/create",
        Access.ADMIN,
        "Create a job (the server makes an id when none is given)",
        create_job,
        views.JobView,
        body=CreateJobRequest,
        errors=(400, 401, 403, 409, 413, 422),
        tag="jobs",
    ),
    Endpoint(
        "POST",
        "/api/jobs/upload-script",
        Access.ADMIN,
        "Upload (or, while pending, replace) a job's training script",
        upload_script,
        UploadScriptResponse,
        body=UploadScriptRequest,
        errors=(400, 401, 403, 404, 409, 413, 422),
        tag="jobs",
        body_limit="max_script_bytes",
    ),
]

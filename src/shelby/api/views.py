"""What the frontend sees: views built from the projections, one function per view.

These are plain functions of the store (and of the time and lease, for the parts that
depend on them), so that the HTTP endpoints and the websocket snapshots answer with
the same code and the same shapes. Every read here is a projection query; none grows
with the size of the log.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from shelby.domain.matching import node_satisfies
from shelby.events.store import EventStore, StoreUnavailable
from shelby.events.types import Resources
from shelby.projections._sql import from_json
from shelby.projections.jobs import JOB_COLUMNS, STATUSES
from shelby.projections.logs import read_archived, read_lines

__all__ = [
    "ActiveNode",
    "ActivityMinute",
    "ArchivedLinesView",
    "Dashboard",
    "EventLogHead",
    "Health",
    "JobDetail",
    "JobQueue",
    "JobStats",
    "JobView",
    "LogLineView",
    "NodeView",
    "ProvenanceEntry",
    "UsageView",
    "active_nodes",
    "activity_view",
    "archived_lines_view",
    "dashboard_view",
    "health_view",
    "job_detail_view",
    "job_list_view",
    "job_view",
    "log_lines_view",
    "node_list_view",
    "pending_reason",
]

RECENT_JOBS = 10
ACTIVITY_MINUTES = 60
DETAIL_LOG_LINES = 1000


class UsageView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Usage reports summed over the job's attempts (the peak is the largest)."""

    reports: int = 0
    cpu_seconds: float | None = None
    wall_seconds: float | None = None
    peak_ram_mb: float | None = msgspec.field(default=None, name="peakRamMB")
    gpu_seconds: float | None = None


class JobView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A job in a list: the seed's fields, then API.md's additions."""

    job_id: str
    status: str
    dataset_name: str | None
    dataset_url: str | None
    meta: dict[str, Any]
    created_at: float
    assigned_node: str | None
    started_at: float | None
    finished_at: float | None
    duration: float | None
    model_hash: str | None
    metadata: dict[str, Any] | None
    attempt: int
    max_attempts: int
    entrypoint: str | None
    script_hash: str | None
    dataset_hash: str | None
    runtime_minutes_estimate: float | None
    usage: UsageView
    resources: Resources | None
    labels: dict[str, str]
    timeout_minutes: float
    exit_code: int | None
    error: str | None
    pending_reason: str | None
    assigned_at: float | None = None


class LogLineView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    line: str
    timestamp: float
    offset: int
    stream: str
    attempt: int
    truncated: bool = False


class ArchivedLinesView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Lines of an attempt that retention moved out of the log: offsets
    ``firstOffset``..``lastOffset`` (``lines`` of them) are in the archive segment
    ``segment``, beside the database file in ``archive/``."""

    segment: str
    first_offset: int
    last_offset: int
    lines: int


class ProvenanceEntry(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    type: str
    timestamp: float
    actor: str
    hash: str
    data: dict[str, Any]


class JobDetail(JobView, frozen=True, kw_only=True):
    logs: list[LogLineView]
    provenance: list[ProvenanceEntry]


class JobStats(msgspec.Struct, frozen=True, kw_only=True):
    pending: int
    assigned: int
    running: int
    finished: int
    failed: int
    total: int


class ActivityMinute(msgspec.Struct, frozen=True, kw_only=True):
    """Jobs created, finished and failed in one minute (``minute`` = Unix seconds // 60)."""

    minute: int
    created: int
    finished: int
    failed: int


class Dashboard(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    job_stats: JobStats
    active_nodes: int
    recent_jobs: list[JobView]
    timestamp: float
    # The dashboard's jobs-over-time chart: the last ACTIVITY_MINUTES, minutes with
    # nothing left out.
    activity: list[ActivityMinute] = []


class JobQueue(msgspec.Struct, frozen=True, kw_only=True):
    pending: int
    running: int  # assigned + running
    completed: int  # finished
    failed: int


class EventLogHead(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    last_seq: int
    head_hash: str


class Health(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    status: str
    database: str  # healthy, unwritable (reads still answer), unreachable
    active_nodes: int
    job_queue: JobQueue | None
    event_log: EventLogHead | None
    timestamp: float
    detail: str | None = None  # why it is unhealthy


class NodeView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    node_id: str
    name: str
    status: str  # active, or inactive after a lease without a heartbeat
    last_seen: float
    last_seen_ago: int
    specs: dict[str, Any]  # the latest heartbeat's over the registration's
    labels: dict[str, str]
    running_jobs: list[str]  # the jobs assigned to it or running on it
    max_concurrent_jobs: int
    registered_at: float


class ActiveNode(msgspec.Struct, frozen=True):
    node_id: str
    specs: dict[str, Any]
    labels: dict[str, str]


# --- reading --------------------------------------------------------------------------

_JOB_SELECT = (
    f"SELECT {JOB_COLUMNS}, u.reports, u.cpu_seconds, u.wall_seconds, u.peak_ram_mb,"
    " u.gpu_seconds FROM jobs LEFT JOIN usage u ON u.subject = 'job-' || jobs.job_id"
)

_resources_decoder = msgspec.json.Decoder(Resources)


async def active_nodes(store: EventStore, *, now: float, lease_seconds: float) -> list[ActiveNode]:
    """Nodes heard from within the lease, with the specs they registered (what the
    scheduler matches jobs against)."""
    rows = await store.fetchall(
        "SELECT node_id, specs, labels FROM nodes WHERE last_seen >= ? ORDER BY registered_seq",
        (now - lease_seconds,),
    )
    return [
        ActiveNode(node_id, from_json(specs), from_json(labels)) for node_id, specs, labels in rows
    ]


def pending_reason(
    *,
    has_script: bool,
    resources: Resources | None,
    labels: dict[str, str],
    nodes: Sequence[ActiveNode],
) -> str:
    if not has_script:
        return "no script uploaded"
    if not any(node_satisfies(resources, labels, n.specs, n.labels) for n in nodes):
        return "no node matches its resources or labels"
    return "waiting for a free node"


class _Reasons:
    """Why pending jobs wait, for one view: the active nodes are fetched once, and only
    if a pending job needs them, and each distinct ask (resources and labels) is
    matched against them once, however many jobs of the page make it. A page of jobs
    that no node can take would otherwise scan the whole fleet once per job."""

    def __init__(self, store: EventStore, now: float, lease_seconds: float) -> None:
        self._store, self._now, self._lease = store, now, lease_seconds
        self._nodes: list[ActiveNode] | None = None
        self._known: dict[tuple[Resources | None, tuple[tuple[str, str], ...]], str] = {}

    async def nodes(self) -> list[ActiveNode]:
        if self._nodes is None:
            self._nodes = await active_nodes(self._store, now=self._now, lease_seconds=self._lease)
        return self._nodes

    async def reason(
        self, *, has_script: bool, resources: Resources | None, labels: dict[str, str]
    ) -> str:
        if not has_script:
            return pending_reason(has_script=False, resources=resources, labels=labels, nodes=())
        key = (resources, tuple(sorted(labels.items())))
        known = self._known.get(key)
        if known is None:
            known = self._known[key] = pending_reason(
                has_script=True, resources=resources, labels=labels, nodes=await self.nodes()
            )
        return known


async def _job_views(rows: list[tuple[Any, ...]], reasons: _Reasons) -> list[JobView]:
    views = []
    for row in rows:
        (
            job_id,
            status,
            dataset_name,
            dataset_url,
            dataset_hash,
            runtime_minutes_estimate,
            meta,
            max_attempts,
            timeout_minutes,
            resources_json,
            labels_json,
            created_at,
            attempt,
            assigned_node,
            assigned_at,
            started_at,
            finished_at,
            model_hash,
            exit_code,
            error,
            metadata,
            entrypoint,
            script_hash,
            _created_seq,
            reports,
            cpu_seconds,
            wall_seconds,
            peak_ram_mb,
            gpu_seconds,
        ) = row
        resources = None if resources_json is None else _resources_decoder.decode(resources_json)
        labels: dict[str, str] = from_json(labels_json)
        reason = None
        if status == "pending":
            reason = await reasons.reason(
                has_script=script_hash is not None, resources=resources, labels=labels
            )
        duration = (
            round(finished_at - started_at, 6)
            if finished_at is not None and started_at is not None
            else None
        )
        views.append(
            JobView(
                job_id=job_id,
                status=status,
                dataset_name=dataset_name,
                dataset_url=dataset_url,
                meta=from_json(meta),
                created_at=created_at,
                assigned_node=assigned_node,
                assigned_at=assigned_at,
                started_at=started_at,
                finished_at=finished_at,
                duration=duration,
                model_hash=model_hash,
                metadata=from_json(metadata),
                attempt=attempt,
                max_attempts=max_attempts,
                entrypoint=entrypoint,
                script_hash=script_hash,
                dataset_hash=dataset_hash,
                runtime_minutes_estimate=runtime_minutes_estimate,
                usage=UsageView(
                    reports=reports or 0,
                    cpu_seconds=cpu_seconds,
                    wall_seconds=wall_seconds,
                    peak_ram_mb=peak_ram_mb,
                    gpu_seconds=gpu_seconds,
                ),
                resources=resources,
                labels=labels,
                timeout_minutes=timeout_minutes,
                exit_code=exit_code,
                error=error,
                pending_reason=reason,
            )
        )
    return views


async def job_list_view(
    store: EventStore,
    *,
    now: float,
    lease_seconds: float,
    status: str | None = None,
    limit: int = 50,
) -> list[JobView]:
    """Jobs newest first, optionally of one status."""
    if status is None:
        rows = await store.fetchall(
            f"{_JOB_SELECT} ORDER BY jobs.created_seq DESC LIMIT ?", (limit,)
        )
    else:
        rows = await store.fetchall(
            f"{_JOB_SELECT} WHERE jobs.status = ? ORDER BY jobs.created_seq DESC LIMIT ?",
            (status, limit),
        )
    return await _job_views(rows, _Reasons(store, now, lease_seconds))


async def job_view(
    store: EventStore, job_id: str, *, now: float, lease_seconds: float
) -> JobView | None:
    """One live job, or ``None`` when there is none by that id (or it was deleted)."""
    rows = await store.fetchall(f"{_JOB_SELECT} WHERE jobs.job_id = ?", (job_id,))
    views = await _job_views(rows, _Reasons(store, now, lease_seconds))
    return views[0] if views else None


async def log_lines_view(
    store: EventStore,
    job_id: str,
    attempt: int,
    *,
    limit: int = 1000,
    after: int | None = None,
) -> list[LogLineView]:
    """Lines of one attempt, oldest first: those after offset ``after`` (at most
    ``limit``), or without ``after`` the last ``limit``."""
    return [
        LogLineView(
            line=line.line,
            timestamp=line.timestamp,
            offset=offset,
            stream=line.stream,
            attempt=attempt,
            truncated=line.truncated,
        )
        for offset, line in await read_lines(store, job_id, attempt, limit=limit, after=after)
    ]


async def archived_lines_view(
    store: EventStore, job_id: str, attempt: int
) -> list[ArchivedLinesView]:
    return [
        ArchivedLinesView(segment=segment, first_offset=first, last_offset=last, lines=n)
        for segment, first, last, n in await read_archived(store, job_id, attempt)
    ]


async def provenance_view(store: EventStore, job_id: str) -> list[ProvenanceEntry]:
    rows = await store.fetchall(
        "SELECT seq, type, timestamp, actor, hash, data FROM provenance WHERE job_id = ?"
        " ORDER BY seq",
        (job_id,),
    )
    return [
        ProvenanceEntry(
            seq=seq, type=type_, timestamp=ts, actor=actor, hash=hash_, data=from_json(data)
        )
        for seq, type_, ts, actor, hash_, data in rows
    ]


async def job_detail_view(
    store: EventStore, job_id: str, *, now: float, lease_seconds: float
) -> JobDetail | None:
    view = await job_view(store, job_id, now=now, lease_seconds=lease_seconds)
    if view is None:
        return None
    logs = await log_lines_view(store, job_id, view.attempt, limit=DETAIL_LOG_LINES)
    provenance = await provenance_view(store, job_id)
    return JobDetail(
        **{f: getattr(view, f) for f in JobView.__struct_fields__},
        logs=logs,
        provenance=provenance,
    )


async def job_counts(store: EventStore) -> dict[str, int]:
    rows = await store.fetchall("SELECT status, n FROM job_counts")
    counts = dict.fromkeys(STATUSES, 0)
    counts.update({status: int(n) for status, n in rows})
    return counts


async def count_active_nodes(store: EventStore, *, now: float, lease_seconds: float) -> int:
    row = await store.fetchone(
        "SELECT count(*) FROM nodes WHERE last_seen >= ?", (now - lease_seconds,)
    )
    return int(row[0]) if row else 0


async def activity_view(store: EventStore, *, now: float) -> list[ActivityMinute]:
    rows = await store.fetchall(
        "SELECT minute, created, finished, failed FROM job_activity WHERE minute > ?"
        " ORDER BY minute",
        (int(now // 60) - ACTIVITY_MINUTES,),
    )
    return [ActivityMinute(minute=m, created=c, finished=f, failed=x) for m, c, f, x in rows]


async def dashboard_view(store: EventStore, *, now: float, lease_seconds: float) -> Dashboard:
    counts = await job_counts(store)
    return Dashboard(
        job_stats=JobStats(**counts, total=sum(counts.values())),
        active_nodes=await count_active_nodes(store, now=now, lease_seconds=lease_seconds),
        recent_jobs=await job_list_view(
            store, now=now, lease_seconds=lease_seconds, limit=RECENT_JOBS
        ),
        timestamp=now,
        activity=await activity_view(store, now=now),
    )


async def health_view(store: EventStore, *, now: float, lease_seconds: float) -> Health:
    """Unhealthy while the database cannot take writes, though reads still answer;
    raises ``StoreUnavailable`` when it cannot be reached at all."""
    await store.ping()
    counts = await job_counts(store)
    head = await store.head()
    fault: str | None = None
    try:
        await store.check_writable()
    except StoreUnavailable as exc:
        fault = str(exc)
    return Health(
        status="healthy" if fault is None else "unhealthy",
        database="healthy" if fault is None else "unwritable",
        detail=fault,
        active_nodes=await count_active_nodes(store, now=now, lease_seconds=lease_seconds),
        job_queue=JobQueue(
            pending=counts["pending"],
            running=counts["assigned"] + counts["running"],
            completed=counts["finished"],
            failed=counts["failed"],
        ),
        event_log=EventLogHead(last_seq=head.seq, head_hash=head.hash),
        timestamp=now,
    )


def unhealthy(now: float, detail: str) -> Health:
    return Health(
        status="unhealthy",
        database="unreachable",
        active_nodes=0,
        job_queue=None,
        event_log=None,
        timestamp=now,
        detail=detail,
    )


async def node_list_view(store: EventStore, *, now: float, lease_seconds: float) -> list[NodeView]:
    """Nodes in the order they first registered."""
    rows = await store.fetchall(
        "SELECT node_id, name, specs, live_specs, labels, max_concurrent_jobs,"
        " registered_at, last_seen FROM nodes ORDER BY registered_seq"
    )
    held = await store.fetchall(
        "SELECT assigned_node, job_id FROM jobs WHERE status IN ('assigned', 'running')"
        " ORDER BY created_seq"
    )
    running: dict[str, list[str]] = {}
    for node_id, job_id in held:
        running.setdefault(node_id, []).append(job_id)
    return [
        NodeView(
            node_id=node_id,
            name=name,
            status="active" if now - last_seen <= lease_seconds else "inactive",
            last_seen=last_seen,
            last_seen_ago=max(0, int(now - last_seen)),
            specs={**from_json(specs), **from_json(live)},
            labels=from_json(labels),
            running_jobs=running.get(node_id, []),
            max_concurrent_jobs=max_jobs,
            registered_at=registered_at,
        )
        for node_id, name, specs, live, labels, max_jobs, registered_at, last_seen in rows
    ]

"""Projections maintained live equal projections rebuilt from the log, row for row.

Random command sequences for jobs and nodes go through the real ``CommandHandler`` on
a real SQLite file, some of them concurrently (so that one group commit holds several
appends); refused commands append nothing and are part of the exercise.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings, target
from hypothesis import strategies as st

from shelby.clock import ManualClock
from shelby.domain import JOBS, NODES, CommandHandler, DomainError
from shelby.domain.jobs import (
    AckJob,
    AppendLogLines,
    AssignJob,
    CreateJob,
    DeleteJob,
    ExpireLease,
    FinishJob,
    JobCommand,
    JobStatus,
    ReleaseJob,
    ReportJobUsage,
    RestartJob,
    TimeOutJob,
    UploadScript,
)
from shelby.domain.nodes import Heartbeat, RegisterNode, ReportNodeUsage
from shelby.events.sqlite import SQLiteEventStore
from shelby.events.types import LogLine, Resources, job_stream, node_stream
from shelby.events.verify import verify_store
from shelby.projections import all_projections

JOB_IDS = ("j0", "j1", "ĵob-☃")
NODE_IDS = ("n0", "n1")
KINDS = (
    "progress",
    "progress",
    "progress",
    "create",
    "upload",
    "assign",
    "ack",
    "log",
    "usage",
    "finish",
    "fail",
    "expire",
    "release",
    "timeout",
    "restart",
    "delete",
    "register",
    "heartbeat",
    "node_usage",
    "tick",
)
Op = tuple[str, int, int, int, dict[str, Any]]
META = st.sampled_from(
    [{}, {"lr": 1e-5}, {"tags": ["a", "ü"], "nested": {"k": None}}, {"big": 2**65, "f": 0.1}]
)


def operations(kinds: tuple[str, ...]) -> st.SearchStrategy[list[Op]]:
    """Sequences of operations drawn from ``kinds``, on any job and node."""
    return st.lists(
        st.tuples(
            st.sampled_from(kinds),
            st.integers(0, len(JOB_IDS) - 1),
            st.integers(0, len(NODE_IDS) - 1),
            st.integers(0, 3),
            META,
        ),
        min_size=10,
        max_size=60,
    )


OPS = operations(KINDS)
# How many operations run at once: 1 is strictly in order.
GROUPS = st.sampled_from([1, 1, 3, 6])


def projection_tables() -> list[str]:
    return [t for p in all_projections() for t in p.tables]


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every projection table (and the positions), each sorted by its primary key."""
    conn = sqlite3.connect(path)
    try:
        out: dict[str, list[tuple[Any, ...]]] = {}
        for table in [*projection_tables(), "projection_positions"]:
            info = conn.execute(f"PRAGMA table_info({table})").fetchall()
            key = [row[1] for row in sorted(info, key=lambda r: r[5]) if row[5] > 0]
            order = ", ".join(key) if key else "rowid"
            out[table] = conn.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
        return out
    finally:
        conn.close()


class Driver:
    """Turns abstract operations into commands, reading each job's state so that most
    of them are ones the job can take."""

    def __init__(self, handler: CommandHandler, clock: ManualClock) -> None:
        self.handler = handler
        self.clock = clock

    async def run(self, op: Op) -> None:
        kind, j, n, k, meta = op
        job, node = JOB_IDS[j], NODE_IDS[n]
        try:
            if kind == "tick":
                self.clock.advance(13.0 + 30 * k)
            elif kind in ("register", "heartbeat", "node_usage"):
                await self.node_command(kind, node, k)
            else:
                command = await self.job_command(kind, job, node, k, meta)
                if command is not None:
                    await self.handler.handle(job_stream(job), JOBS, command)
        except DomainError:
            pass  # refused: nothing was appended, which is part of what is checked

    async def node_command(self, kind: str, node: str, k: int) -> None:
        stream = node_stream(node)
        match kind:
            case "register":
                command: Any = RegisterNode(
                    node_id=node,
                    name=f"box {node}",
                    token_hash=f"{node}-{k}-{self.clock.now()}",
                    specs={"cpuCount": 4 + k, "gpus": [{"name": "T4", "memoryGB": 16}]},
                    labels={"zone": f"z{k}"},
                    max_concurrent_jobs=1 + k,
                )
            case "heartbeat":
                command = Heartbeat(
                    node_id=node, specs={"cpuUsage": 10.5 * k}, running_jobs=list(JOB_IDS[:k])
                )
            case _:
                command = ReportNodeUsage(
                    node_id=node, cpu_seconds=1.25 * k or None, peak_ram_mb=100.0 * k
                )
        await self.handler.handle(stream, NODES, command)

    async def job_command(
        self, kind: str, job: str, node: str, k: int, meta: dict[str, Any]
    ) -> JobCommand | None:
        state, _version = await self.handler.state(job_stream(job), JOBS)
        holder = state.node_id or node
        if kind == "progress":
            if state.job_id is None:
                kind = "create"
            elif state.deleted:
                return None
            elif state.status is JobStatus.PENDING:
                kind = "assign" if state.has_script else "upload"
            elif state.status is JobStatus.ASSIGNED:
                kind = ("ack", "log", "expire", "release")[k % 4]
            elif state.status is JobStatus.RUNNING:
                kind = ("log", "log", "usage", "finish", "fail", "timeout", "expire", "release")[
                    (k + state.next_offset) % 8
                ]
            else:
                kind = "restart"
        match kind:
            case "create":
                return CreateJob(
                    job_id=job,
                    dataset_name=f"set-{k}",
                    meta=meta,
                    max_attempts=1 + k % 3,
                    timeout_minutes=5.0 * (k + 1),
                    resources=Resources(cpu_count=k) if k else None,
                    labels={"zone": "z1"} if k == 2 else {},
                )
            case "upload":
                return UploadScript(job_id=job, script=f"print({k})\n", entrypoint=f"e{k}.py")
            case "assign":
                return AssignJob(job_id=job, node_id=node)
            case "ack":
                return AckJob(job_id=job, node_id=holder, attempt=state.attempt)
            case "log":
                # Sometimes a resent or overlapping batch, sometimes one with a gap.
                offset = max(0, state.next_offset - k + 1)
                lines = [
                    LogLine(
                        line=f"{job} line {offset + i} ✓",
                        timestamp=self.clock.now() + i / 8,
                        stream="stderr" if i % 2 else "stdout",
                        truncated=i == 2,
                    )
                    for i in range(k + 1)
                ]
                return AppendLogLines(
                    job_id=job, node_id=holder, attempt=state.attempt, offset=offset, lines=lines
                )
            case "usage":
                return ReportJobUsage(
                    job_id=job,
                    node_id=holder,
                    attempt=None,
                    cpu_seconds=0.5 * k,
                    wall_seconds=None if k == 1 else 2.0,
                    peak_ram_mb=64.0 * k,
                    gpu_seconds=0.25 if k == 3 else None,
                )
            case "finish":
                return FinishJob(
                    job_id=job,
                    node_id=holder,
                    attempt=state.attempt,
                    status="finished",
                    model_hash="sha256:" + "ab" * 32,
                    metadata={"k": k},
                )
            case "fail":
                return FinishJob(
                    job_id=job,
                    node_id=holder,
                    attempt=state.attempt,
                    status="failed",
                    exit_code=k + 1,
                    error=f"exit {k + 1}",
                )
            case "expire":
                return ExpireLease(job_id=job, node_id=holder, attempt=state.attempt)
            case "release":
                # k == 3 names the attempt before: a repeated release (no events) or a
                # stale one (refused).
                return ReleaseJob(
                    job_id=job,
                    node_id=holder,
                    attempt=state.attempt - (k == 3),
                    reason=f"the agent shut down ({k})",
                )
            case "timeout":
                return TimeOutJob(job_id=job, attempt=state.attempt)
            case "restart":
                return RestartJob(job_id=job)
            case "delete":
                return DeleteJob(job_id=job)
            case _:
                raise AssertionError(f"unknown operation {kind!r}")


async def play(path: Path, ops: list[Op], group: int) -> int:
    store = SQLiteEventStore(path, all_projections())
    await store.open()
    try:
        clock = ManualClock()
        driver = Driver(CommandHandler(store, clock), clock)
        for start in range(0, len(ops), group):
            await asyncio.gather(*(driver.run(op) for op in ops[start : start + group]))
        verdict = await verify_store(store)
        assert verdict.ok, verdict
        return verdict.count
    finally:
        await store.close()


async def rebuild(path: Path) -> int:
    store = SQLiteEventStore(path, all_projections())
    await store.open()
    try:
        return await store.rebuild()
    finally:
        await store.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, group=GROUPS)
def test_live_projections_equal_rebuilt_ones(ops: list[Op], group: int) -> None:
    """After any sequence of commands, rebuilding every projection from the log gives
    the same rows as the ones kept up to date append by append."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shelby.db"
        count = asyncio.run(play(path, ops, group))
        event(f"{count // 10 * 10}+ events in the log")
        target(float(count), label="events in the log")
        live = dump(path)
        assert asyncio.run(rebuild(path)) == count
        rebuilt = dump(path)
    for table in live:
        assert rebuilt[table] == live[table], f"{table} differs after rebuild"
    assert live["projection_positions"] == [
        (p.name, p.version, count) for p in sorted(all_projections(), key=lambda p: p.name)
    ]


def test_a_full_lifecycle_leaves_rows_in_every_projection() -> None:
    """The driver's lifecycle reaches every projection table, so the comparison above
    compares rows and not only empty tables."""
    ops: list[Op] = [
        ("register", 0, 0, 1, {}),
        ("create", 0, 0, 1, {"lr": 1e-5}),
        ("upload", 0, 0, 1, {}),
        ("assign", 0, 0, 0, {}),
        ("ack", 0, 0, 0, {}),
        ("heartbeat", 0, 0, 1, {}),
        ("log", 0, 0, 2, {}),
        ("usage", 0, 0, 2, {}),
        ("node_usage", 0, 0, 2, {}),
        ("finish", 0, 0, 0, {}),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shelby.db"
        count = asyncio.run(play(path, ops, 1))
        live = dump(path)
        asyncio.run(rebuild(path))
        assert dump(path) == live
    assert count == 10
    for table in projection_tables():
        if table == "log_archived":
            continue  # only archiving fills it: see test_archive_replay
        assert live[table], f"{table} is empty"
    assert dict((s, n) for s, n in live["job_counts"]) == {
        "pending": 0,
        "assigned": 0,
        "running": 0,
        "finished": 1,
        "failed": 0,
    }


def test_released_attempts_are_requeued_then_failed_live_and_rebuilt() -> None:
    """A release requeues the job as the next attempt, a release of the last attempt
    fails it, a repeated release appends nothing; rebuilt rows equal the live ones."""
    ops: list[Op] = [
        ("create", 0, 0, 1, {}),  # maxAttempts 2
        ("upload", 0, 0, 1, {}),
        ("assign", 0, 0, 0, {}),
        ("ack", 0, 0, 0, {}),
        ("release", 0, 0, 0, {}),
        ("assign", 0, 1, 0, {}),
        ("release", 0, 1, 1, {}),
        ("release", 0, 1, 1, {}),  # the same again: nothing
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shelby.db"
        count = asyncio.run(play(path, ops, 1))
        live = dump(path)
        asyncio.run(rebuild(path))
        assert dump(path) == live
        conn = sqlite3.connect(path)
        try:
            job = conn.execute(
                "SELECT status, attempt, assigned_node, error FROM jobs WHERE job_id = 'j0'"
            ).fetchone()
            trail = conn.execute(
                "SELECT type, actor FROM provenance WHERE job_id = 'j0' ORDER BY seq"
            ).fetchall()
        finally:
            conn.close()
    assert count == 8
    assert job == (
        "failed",
        2,
        "n1",
        "released by its node on the last attempt: the agent shut down (1)",
    )
    assert trail[4:] == [
        ("JobReleased", "n0"),
        ("JobAssigned", "n1"),
        ("JobReleased", "n1"),
        ("JobFailed", "n1"),
    ]
    assert dict((s, n) for s, n in live["job_counts"]) == {
        "pending": 0,
        "assigned": 0,
        "running": 0,
        "finished": 0,
        "failed": 1,
    }

"""A log with a past: nodes heartbeating and jobs logging for a day, ten days ago, and a
little since, written through the real command handler with a manual clock. Shared by
the retention tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shelby.clock import ManualClock
from shelby.domain import JOBS, NODES, CommandHandler
from shelby.domain.jobs import (
    AckJob,
    AppendLogLines,
    AssignJob,
    CreateJob,
    FinishJob,
    UploadScript,
)
from shelby.domain.nodes import Heartbeat, RegisterNode
from shelby.events.sqlite import SQLiteEventStore
from shelby.events.types import LogLine, job_stream, node_stream
from shelby.projections import all_projections

DAY = 86_400.0
HOUR = 3_600.0
NODES_ = ("n1", "n2", "n3")


async def write_history(
    store: SQLiteEventStore, clock: ManualClock, *, beats: int = 24, batches: int = 6
) -> None:
    """Ten days of quiet after a busy day: ``beats`` hourly heartbeats per node and
    ``batches`` log batches per job then, a few of each now."""
    handler = CommandHandler(store, clock)

    async def job(command: Any) -> None:
        await handler.handle(job_stream(command.job_id), JOBS, command)

    async def beat(node: str, k: int) -> None:
        await handler.handle(
            node_stream(node),
            NODES,
            Heartbeat(node_id=node, specs={"cpuUsage": 1.5 * k}, running_jobs=[]),
        )

    for n in NODES_:
        await handler.handle(
            node_stream(n),
            NODES,
            RegisterNode(node_id=n, name=f"box {n}", token_hash=f"hash-{n}", specs={"cpuCount": 4}),
        )
    for i, j in enumerate(("old-a", "old-b")):
        node = NODES_[i]
        await job(CreateJob(job_id=j, meta={"lr": 1e-5}))
        await job(UploadScript(job_id=j, script=f"print({i})"))
        await job(AssignJob(job_id=j, node_id=node))
        await job(AckJob(job_id=j, node_id=node))
    for k in range(beats):
        for n in NODES_:
            await beat(n, k)
        for j, node in (("old-a", "n1"), ("old-b", "n2")):
            if k < batches:
                lines = [
                    LogLine(line=f"{j} step {k}.{m} ✓", timestamp=clock.now()) for m in range(3)
                ]
                await job(
                    AppendLogLines(job_id=j, node_id=node, attempt=1, offset=None, lines=lines)
                )
        clock.advance(HOUR)
    await job(
        FinishJob(
            job_id="old-a",
            node_id="n1",
            attempt=1,
            status="finished",
            model_hash="sha256:" + "a" * 64,
        )
    )
    clock.advance(10 * DAY)
    await job(CreateJob(job_id="new-c"))
    await job(UploadScript(job_id="new-c", script="print('c')"))
    await job(AssignJob(job_id="new-c", node_id="n3"))
    await job(AckJob(job_id="new-c", node_id="n3"))
    for k in range(3):
        for n in NODES_[1:]:  # n1 has gone quiet: its last heartbeat is ten days old
            await beat(n, 100 + k)
        lines = [LogLine(line=f"new step {k}", timestamp=clock.now())]
        await job(AppendLogLines(job_id="new-c", node_id="n3", attempt=1, offset=None, lines=lines))
        clock.advance(60.0)


async def build_history(path: Path, *, start: float | None = None, **kwargs: Any) -> ManualClock:
    """The history in a new log at ``path``, from ``start`` on (default: the clock's);
    the clock at its end."""
    clock = ManualClock() if start is None else ManualClock(start)
    store = SQLiteEventStore(path, all_projections())
    await store.open()
    try:
        await write_history(store, clock, **kwargs)
    finally:
        await store.close()
    return clock

"""The same commands on SQLite and on PostgreSQL leave the same log, byte for byte, and
the same views: every projection's SQL runs on both and means the same on both."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from shelby.clock import ManualClock
from shelby.domain import JOBS, NODES, CommandHandler, Conflict
from shelby.domain.jobs import (
    AckJob,
    AppendLogLines,
    AssignJob,
    CreateJob,
    DeleteJob,
    ExpireLease,
    FinishJob,
    ReportJobUsage,
    RestartJob,
    TimeOutJob,
    UploadScript,
)
from shelby.domain.nodes import Heartbeat, RegisterNode, ReportNodeUsage
from shelby.events.merkle import keys_for_root, root
from shelby.events.sqlite import SQLiteEventStore
from shelby.events.store import EventStore
from shelby.events.types import LogLine, Resources, job_stream, node_stream
from shelby.projections import all_projections

from .conftest import StoreFactory

TABLES = {
    "jobs": "job_id",
    "job_counts": "status",
    "scripts": "job_id",
    "nodes": "node_id",
    "log_batches": "job_id, attempt, first_offset",
    "log_archived": "job_id, attempt, segment",
    "provenance": "job_id, seq",
    "usage": "subject",
    "job_activity": "minute",
    "projection_positions": "name",
}


async def run_scenario(store: EventStore) -> None:
    """Every kind of event, through the domain: registrations, heartbeats, jobs that
    finish, fail, time out, lose their lease, restart, get deleted; usage with and
    without a job; log lines with unicode, a truncated one, and stderr."""
    clock = ManualClock(1_700_000_000.0)
    handler = CommandHandler(store, clock)

    async def job(command: Any) -> None:
        clock.advance(0.5)
        await handler.handle(job_stream(command.job_id), JOBS, command)

    async def node(command: Any) -> None:
        clock.advance(0.5)
        await handler.handle(node_stream(command.node_id), NODES, command)

    for n in ("n1", "n2"):
        await node(
            RegisterNode(
                node_id=n,
                name=f"box {n} ☃",
                token_hash=f"hash-{n}",
                specs={"cpuCount": 8, "totalRAM_GB": 31.5, "gpus": [{"name": "A100"}]},
                labels={"zone": "eu-1"},
                max_concurrent_jobs=2,
            )
        )
    await node(RegisterNode(node_id="n1", name="box n1 again", token_hash="hash-n1b"))
    for i in range(8):
        jid = f"job{i}"
        await job(
            CreateJob(
                job_id=jid,
                dataset_name=f"MNIST {i}",
                dataset_url="https://example.com/d",
                runtime_minutes_estimate=1.5 if i % 2 else None,
                meta={"lr": 1e-5, "ß": i},
                max_attempts=2,
                timeout_minutes=3.0,
                resources=Resources(cpu_count=2) if i % 3 == 0 else None,
                labels={"zone": "eu-1"} if i == 1 else {},
            )
        )
        await job(UploadScript(job_id=jid, script=f"print({i})", requirements="torch"))
    for i, n in enumerate(("n1", "n2", "n1", "n2", "n1", "n2")):
        await job(AssignJob(job_id=f"job{i}", node_id=n))
        await job(AckJob(job_id=f"job{i}", node_id=n))
        await node(Heartbeat(node_id=n, specs={"cpuUsage": 10.0 + i}, running_jobs=[f"job{i}"]))
        lines = [
            LogLine(line=f"epoch {k} loss={1 / (k + 1):.3f} — ✓", timestamp=clock.now() + k)
            for k in range(5)
        ]
        lines.append(
            LogLine(line="x" * 100, timestamp=clock.now(), stream="stderr", truncated=True)
        )
        await job(AppendLogLines(job_id=f"job{i}", node_id=n, attempt=1, offset=0, lines=lines))
        await job(
            ReportJobUsage(
                job_id=f"job{i}",
                node_id=n,
                attempt=1,
                cpu_seconds=1.25 * i,
                peak_ram_mb=512.0 + i,
                wall_seconds=None if i == 2 else 3.0,
            )
        )
    await job(
        FinishJob(
            job_id="job0",
            node_id="n1",
            attempt=1,
            status="finished",
            model_hash="sha256:" + "ab" * 32,
            exit_code=0,
            metadata={"acc": 0.99},
        )
    )
    await job(
        FinishJob(
            job_id="job1", node_id="n2", attempt=1, status="failed", exit_code=3, error="boom"
        )
    )
    await job(ExpireLease(job_id="job2", node_id="n1", attempt=1))
    await job(TimeOutJob(job_id="job3", attempt=1))
    await job(RestartJob(job_id="job1"))
    await job(DeleteJob(job_id="job4"))
    await job(ReportJobUsage(job_id="job5", node_id="n2", attempt=1, gpu_seconds=7.5))
    await node(ReportNodeUsage(node_id="n2", cpu_seconds=2.0, peak_ram_mb=100.0))
    await node(ReportNodeUsage(node_id="n2", cpu_seconds=3.0, peak_ram_mb=50.0))
    with contextlib.suppress(Conflict):  # a different finish for an ended job
        await job(FinishJob(job_id="job0", node_id="n1", attempt=1, status="failed"))


async def contents(store: EventStore) -> dict[str, Any]:
    head = await store.head()
    nodes = await store.tree_nodes(keys_for_root(head.seq))
    return {
        "events": [tuple(r) for rows in [b async for b in store.iter_raw()] for r in rows],
        "root": root(head.seq, lambda level, index: nodes[level, index]),
        **{
            t: [tuple(r) for r in await store.fetchall(f"SELECT * FROM {t} ORDER BY {key}")]
            for t, key in TABLES.items()
        },
    }


async def test_sqlite_and_postgres_hold_the_same_log_and_views(
    stores: StoreFactory, tmp_path: Path
) -> None:
    """One scenario on both backends: identical rows in events (so identical hashes),
    identical Merkle root, identical rows in every projection table, before and after
    a rebuild."""
    lite = SQLiteEventStore(tmp_path / "shelby.db", all_projections())
    await lite.open()
    try:
        pg = await stores()
        await run_scenario(lite)
        await run_scenario(pg)
        expected = await contents(lite)
        assert len(expected["events"]) > 50
        assert expected["jobs"] and expected["usage"] and expected["job_activity"]
        got = await contents(pg)
        for key in expected:
            assert got[key] == expected[key], key
        await pg.rebuild()
        assert await contents(pg) == expected
    finally:
        await lite.close()

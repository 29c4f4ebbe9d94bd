"""A real SQLite store in a temporary directory, and a job taken through its life by
the real command handler, for the audit tests."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shelby.audit.verification import AuditEvent
from shelby.clock import ManualClock
from shelby.domain import JOBS, CommandHandler
from shelby.domain import jobs as j
from shelby.events.sqlite import SQLiteEventStore
from shelby.events.store import EventStore, Recorded
from shelby.events.types import LogLine, job_stream
from shelby.projections import all_projections

MODEL = "sha256:" + "ab" * 32
DATASET = "sha256:" + "cd" * 32


PG_ADMIN_URL = os.environ.get("SHELBY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    """Each backend's store, fresh: a SQLite file, or a database of its own on the test
    PostgreSQL cluster (``make test`` starts it), dropped afterwards."""
    if request.param == "sqlite":
        s: EventStore = SQLiteEventStore(tmp_path / "shelby.db", all_projections())
        await s.open()
        try:
            yield s
        finally:
            await s.close()
        return
    import asyncpg

    from shelby.events.postgres import PostgresEventStore

    name = f"shelby_audit_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        s = PostgresEventStore(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name, all_projections())
        await s.open()
        try:
            yield s
        finally:
            await s.close()
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def as_audit(rec: Recorded) -> AuditEvent:
    import json

    return AuditEvent(
        seq=rec.seq,
        stream=rec.stream,
        version=rec.version,
        type=rec.type,
        timestamp=rec.timestamp,
        data=json.loads(rec.data),
        prev_hash=rec.prev_hash,
        hash=rec.hash,
    )


async def run_job(
    store: EventStore, job_id: str = "job-1", *, lost_first_attempt: bool = True
) -> list[AuditEvent]:
    """Create, upload, lose a lease (optionally), run to a finish with a model; returns
    the job's events as an auditor sees them."""
    clock = ManualClock(1_700_000_000.25)
    handler = CommandHandler(store, clock)
    stream = job_stream(job_id)

    async def do(command: j.JobCommand) -> None:
        clock.advance(1.5)
        await handler.handle(stream, JOBS, command)

    await do(
        j.CreateJob(
            job_id=job_id,
            dataset_name="MNIST — ünïcode",
            dataset_url="https://example.com/mnist.tar",
            dataset_hash=DATASET,
            runtime_minutes_estimate=0.1,
            meta={"lr": 1e-05, "note": "line\nbreak"},
        )
    )
    await do(j.UploadScript(job_id=job_id, script="print('hi')\n", requirements="numpy>=1.26\n"))
    if lost_first_attempt:
        await do(j.AssignJob(job_id=job_id, node_id="node-a"))
        await do(j.AckJob(job_id=job_id, node_id="node-a"))
        await do(j.ExpireLease(job_id=job_id, node_id="node-a", attempt=1))
    await do(j.AssignJob(job_id=job_id, node_id="node-b"))
    await do(j.AckJob(job_id=job_id, node_id="node-b"))
    await do(
        j.AppendLogLines(
            job_id=job_id,
            node_id="node-b",
            attempt=None,
            offset=0,
            lines=[LogLine(line="epoch 1 loss=0.3", timestamp=1_700_000_010.5)],
        )
    )
    await do(
        j.FinishJob(
            job_id=job_id,
            node_id="node-b",
            attempt=None,
            status="finished",
            model_hash=MODEL,
            exit_code=0,
        )
    )
    return [as_audit(r) for r in await store.read_stream(stream)]

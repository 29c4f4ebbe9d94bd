"""``shelby rebuild --db`` on a real file rebuilds every projection as it was."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from shelby.clock import ManualClock
from shelby.domain import JOBS, NODES, CommandHandler
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
    UploadScript,
)
from shelby.domain.nodes import Heartbeat, RegisterNode
from shelby.events.sqlite import SQLiteEventStore
from shelby.events.types import LogLine, job_stream, node_stream
from shelby.projections import all_projections

from ._logfile import dump, rebuild


async def populate(path: Path) -> int:
    """Two nodes and four jobs through their lifecycles, through the real handler."""
    store = SQLiteEventStore(path, all_projections())
    await store.open()
    clock = ManualClock()
    handler = CommandHandler(store, clock)

    async def job(command: Any) -> None:
        await handler.handle(job_stream(command.job_id), JOBS, command)
        clock.advance(7.5)

    try:
        for n in ("n1", "n2"):
            await handler.handle(
                node_stream(n),
                NODES,
                RegisterNode(
                    node_id=n,
                    name=f"box {n}",
                    token_hash=f"hash-{n}",
                    specs={"cpuCount": 8, "os": "Linux"},
                    labels={"zone": "eu-1"},
                ),
            )
        for i, j in enumerate(("a", "b", "c", "d")):
            node = ("n1", "n2")[i % 2]
            await job(CreateJob(job_id=j, meta={"lr": 1e-5, "name": f"Jöb {j}"}))
            await job(UploadScript(job_id=j, script=f"print({i})"))
            await job(AssignJob(job_id=j, node_id=node))
            await job(AckJob(job_id=j, node_id=node))
            await handler.handle(
                node_stream(node), NODES, Heartbeat(node_id=node, specs={"cpuUsage": 50.0})
            )
            lines = [LogLine(line=f"step {k} ✓", timestamp=clock.now() + k) for k in range(5)]
            await job(AppendLogLines(job_id=j, node_id=node, attempt=1, offset=0, lines=lines))
            await job(ReportJobUsage(job_id=j, node_id=node, attempt=1, cpu_seconds=3.5))
            if j == "b":
                await job(ExpireLease(job_id=j, node_id=node, attempt=1))
                continue
            await job(
                FinishJob(
                    job_id=j,
                    node_id=node,
                    attempt=1,
                    status="failed" if j == "c" else "finished",
                    exit_code=1 if j == "c" else 0,
                    model_hash=None if j == "c" else "sha256:" + "0" * 64,
                )
            )
        await job(RestartJob(job_id="c"))
        await job(DeleteJob(job_id="d"))
        return (await store.head()).seq
    finally:
        await store.close()


@pytest.fixture
def populated(tmp_path: Path) -> tuple[Path, int]:
    path = tmp_path / "shelby.db"
    return path, asyncio.run(populate(path))


def test_rebuild_gives_back_the_same_projections(populated: tuple[Path, int]) -> None:
    """``shelby rebuild`` exits 0, reports the events it applied, and every projection
    table holds exactly the rows it held before."""
    path, count = populated
    before = dump(path)
    done = rebuild(path)
    assert done.returncode == 0, done.stderr
    assert f"rebuilt every projection from {count} events" in done.stdout
    assert "events/s" in done.stdout
    assert dump(path) == before
    assert {row[0]: row[2] for row in before["projection_positions"]} == {
        p.name: count for p in all_projections()
    }
    # Not an empty comparison: the jobs left behind are in the view.
    assert [row[0] for row in before["jobs"]] == ["a", "b", "c"]


def test_rebuild_repairs_damaged_projections(populated: tuple[Path, int]) -> None:
    """Projection rows lost or changed behind the store's back come back from the log."""
    path, _count = populated
    before = dump(path)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DELETE FROM jobs WHERE job_id = 'a'")
        conn.execute("UPDATE job_counts SET n = 99")
        conn.execute("DROP TABLE log_batches")
        conn.execute("UPDATE nodes SET name = 'forged'")
    conn.close()
    assert not _has_table(path, "log_batches")
    done = rebuild(path)
    assert done.returncode == 0, done.stderr
    assert dump(path) == before


def test_rebuild_twice_is_the_same_as_once(populated: tuple[Path, int]) -> None:
    """Rebuilding an already rebuilt log changes nothing."""
    path, _count = populated
    assert rebuild(path).returncode == 0
    once = dump(path)
    assert rebuild(path).returncode == 0
    assert dump(path) == once


def test_rebuild_of_a_missing_file_fails_without_creating_it(tmp_path: Path) -> None:
    """``shelby rebuild`` on a path with no log fails and creates no file."""
    path = tmp_path / "nothing.db"
    done = rebuild(path)
    assert done.returncode != 0
    assert "no event log" in done.stderr
    assert not path.exists()


def _has_table(path: Path, table: str) -> bool:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone()
        return row is not None
    finally:
        conn.close()

"""Archiving changes nothing that replay or the deciders see: for random command
sequences and random cutoffs, projections rebuilt from the log and its segments equal
the live ones, and the commands that follow decide exactly what they decide on a log
that archived nothing."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shelby.clock import ManualClock
from shelby.domain import CommandHandler
from shelby.events.sqlite import SQLiteEventStore
from shelby.events.types import HistoryArchived
from shelby.events.verify import verify_store
from shelby.projections import all_projections

from .test_replay import GROUPS, NODE_IDS, Driver, Op, dump, operations, play, rebuild

# Busier with heartbeats and log lines than test_replay's mix, after both nodes joined.
KINDS = (
    ("progress",) * 4
    + ("heartbeat",) * 4
    + ("log",) * 3
    + ("tick",) * 3
    + (
        "register",
        "create",
        "restart",
        "delete",
        "usage",
        "node_usage",
    )
)
REGISTERED: list[Op] = [("register", 0, n, 0, {}) for n in range(len(NODE_IDS))]
OPS = operations(KINDS).map(lambda ops: REGISTERED + ops)
# (where the cutoff falls in the log's time span, at most how many rows per segment)
CUTS = st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 30)), min_size=1, max_size=3)


async def _play(path: Path, ops: list[Op], group: int, cuts: list[tuple[float, int]]) -> int:
    """Half the operations; then, on the log reopened (every cache cold), archiving at
    each cut, alongside the first operations of the other half when they run
    concurrently; then the rest, and archiving at each cut again. Returns the number
    of rows archived."""
    clock = ManualClock()
    start = clock.now()
    half = len(ops) // 2
    store = SQLiteEventStore(path, all_projections())
    await store.open()
    try:
        driver = Driver(CommandHandler(store, clock), clock)
        for i in range(0, half, group):
            await asyncio.gather(*(driver.run(op) for op in ops[i : min(i + group, half)]))
    finally:
        await store.close()
    store = SQLiteEventStore(path, all_projections())
    await store.open()
    archived = 0
    try:
        driver = Driver(CommandHandler(store, clock), clock)

        async def archive() -> None:
            nonlocal archived
            for where, limit in cuts:
                before = start + where * (clock.now() - start) + 1e-3
                rec = await store.archive(before=before, now=clock.now(), limit=limit)
                if rec is not None:
                    assert isinstance(rec.event, HistoryArchived)
                    archived += rec.event.count

        rest = ops[half:]
        await asyncio.gather(archive(), *(driver.run(op) for op in rest[: max(group - 1, 0)]))
        for i in range(max(group - 1, 0), len(rest), group):
            await asyncio.gather(*(driver.run(op) for op in rest[i : i + group]))
        await archive()
        verdict = await verify_store(store)
        assert verdict.ok, verdict.problem
    finally:
        await store.close()
    return archived


async def _events(path: Path) -> list[tuple[Any, ...]]:
    """Every event but the archive's own, as the log and its segments hold them, less
    the seqs and hashes that the archive's events shift."""
    store = SQLiteEventStore(path, [])
    await store.open()
    try:
        rows = await store.read_raw(0, 100_000)
    finally:
        await store.close()
    return [row[1:6] for row in rows if row[3] != "HistoryArchived"]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, group=GROUPS, cuts=CUTS)
def test_archiving_changes_nothing_replay_or_the_deciders_see(
    ops: list[Op], group: int, cuts: list[tuple[float, int]]
) -> None:
    """Live projections equal rebuilt ones after archiving; run one command at a time,
    the log holds the same events as one that never archived."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shelby.db"
        archived = asyncio.run(_play(path, ops, group, cuts))
        event(f"{'some' if archived else 'no'} rows archived")
        live = dump(path)
        asyncio.run(rebuild(path))
        rebuilt = dump(path)
        for table in live:
            assert rebuilt[table] == live[table], f"{table} differs after rebuild"
        if group == 1:
            plain = Path(tmp) / "plain.db"
            asyncio.run(play(plain, ops, 1))
            assert asyncio.run(_events(path)) == asyncio.run(_events(plain))


def test_an_archived_lifecycle_leaves_rows_in_every_projection() -> None:
    """A lifecycle with old log lines archived fills the logs view's archive table too,
    so the comparison above compares rows there as well."""
    ops: list[Op] = [
        ("register", 0, 0, 1, {}),
        ("create", 0, 0, 1, {}),
        ("upload", 0, 0, 1, {}),
        ("assign", 0, 0, 0, {}),
        ("ack", 0, 0, 0, {}),
        ("heartbeat", 0, 0, 1, {}),
        ("log", 0, 0, 2, {}),
        ("heartbeat", 0, 0, 2, {}),
        ("log", 0, 0, 1, {}),
        ("tick", 0, 0, 3, {}),
        ("heartbeat", 0, 0, 3, {}),
        ("log", 0, 0, 1, {}),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shelby.db"
        archived = asyncio.run(_play(path, ops, 1, [(0.9, 10)]))
        conn = sqlite3.connect(path)
        rows = conn.execute("SELECT job_id, first_offset, last_offset FROM log_archived").fetchall()
        conn.close()
    assert archived == 4  # two of three heartbeats, two of three log batches
    assert rows == [("j0", 0, 4)]

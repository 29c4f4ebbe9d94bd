"""Single-event appends through Shelby's SQLite store against a plain ``sqlite3`` loop.

Shelby: ``SQLiteEventStore`` with every projection (``all_projections()``), taking
appends from 64 concurrent tasks; each task loops ``await store.append(...)`` of one
``NodeHeartbeat`` to its own node's stream at the version it is at, so every event is
durable (WAL, synchronous=FULL) before its task sends the next. The store encodes,
hashes, checks versions, projects and group-commits.

Baseline: one plain ``sqlite3`` connection with the same pragmas inserting the same
rows (same columns, data and hash strings computed before the clock starts), with
one projection UPDATE per event (the node's last_seen/live_specs/running_jobs), 100
events per transaction. It checks nothing and hashes nothing while timed.

Both start from copies of one file that already holds 200,000 events (a realistic
mix, bulk-inserted, with projections and the Merkle tree brought up to date once), in
the store's 2 KB pages: Shelby's best page size, not the plain loop's, which is about
5 % faster on 4 KB (README, "The append and heartbeat ratios", has both sides at each).
Five rounds alternate the two (with three, the ratio moved by 0.08 between runs on a
quiet machine); the median of each is reported. Target: ratio >= 0.5.
Files go to a temporary directory (``BENCH_DIR`` picks where: put it on a real disk).

    python -m bench store_append [--quick]
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from bench._eventlog import EventRow, build_log, chain_rows, heartbeat, node_id, verify_sample
from shelby.events.sqlite import INSERT_EVENT, SQLiteEventStore
from shelby.events.types import Event, NodeHeartbeat, node_stream
from shelby.logs import configure_logging
from shelby.projections import all_projections

TASKS = 64
PREFILLED = 200_000
PER_TRANSACTION = 100
TARGET = 0.5

_json = msgspec.json.Encoder(order="sorted")


async def _catch_up(path: Path) -> float:
    """Open the store once so that projections and the tree cover the prebuilt log."""
    started = time.perf_counter()
    store = SQLiteEventStore(path, all_projections())
    await store.open()
    await store.close()
    return time.perf_counter() - started


def prebuild(directory: Path) -> Path:
    path = directory / "prefilled.db"
    started = time.perf_counter()
    build_log(path, PREFILLED, nodes=TASKS)
    verify_sample(path)
    built = time.perf_counter() - started
    caught_up = asyncio.run(_catch_up(path))
    print(
        f"  prefilled log: {PREFILLED:,} events bulk-inserted in {built:.1f} s,"
        f" projections and tree brought up to date in {caught_up:.1f} s"
    )
    return path


# --- Shelby ----------------------------------------------------------------------------


def _cpu() -> float:
    """CPU seconds of this process so far, every thread's (the writer's, the WAL
    checkpointer's and the event loop's for Shelby)."""
    return time.process_time()


async def _shelby(path: Path, per_task: int) -> tuple[float, float]:
    store = SQLiteEventStore(path, all_projections())
    await store.open()
    try:
        versions = {}
        for k in range(TASKS):
            row = await store.fetchone(
                "SELECT max(version) FROM events WHERE stream = ?", (node_stream(node_id(k)),)
            )
            versions[k] = row[0] if row else 0

        async def task(k: int) -> None:
            node = node_id(k)
            stream = node_stream(node)
            version = versions[k]
            for n in range(per_task):
                recs = await store.append(
                    stream,
                    [heartbeat(node, n)],
                    expected_version=version,
                    timestamp=round(time.time(), 6),
                )
                version = recs[-1].version

        started, cpu = time.perf_counter(), _cpu()
        await asyncio.gather(*(task(k) for k in range(TASKS)))
        return time.perf_counter() - started, _cpu() - cpu
    finally:
        await store.close()


def run_shelby(path: Path, events: int) -> tuple[float, float]:
    """Events a second, and CPU microseconds an event."""
    per_task = events // TASKS
    seconds, cpu = asyncio.run(_shelby(path, per_task))
    return per_task * TASKS / seconds, 1e6 * cpu / (per_task * TASKS)


# --- the plain sqlite3 baseline ----------------------------------------------------------


def baseline_rows(path: Path, events: int) -> list[tuple[EventRow, tuple[object, ...]]]:
    """The rows the baseline inserts, chained onto the prefilled log, each with the
    parameters of its projection UPDATE; made before the clock starts."""
    conn = sqlite3.connect(path)
    try:
        seq, head = conn.execute(
            "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        versions = {
            stream: v
            for stream, v in conn.execute(
                "SELECT stream, max(version) FROM events WHERE stream LIKE 'node-%' GROUP BY stream"
            )
        }
    finally:
        conn.close()
    per_task = events // TASKS
    # Round-robin over the nodes, as the 64 tasks' appends interleave.
    beats: list[tuple[str, Event]] = [
        (node_stream(node_id(k)), heartbeat(node_id(k), n))
        for n in range(per_task)
        for k in range(TASKS)
    ]
    now = time.time()
    rows = list(
        chain_rows(
            beats,
            after_seq=seq,
            after_hash=head,
            versions=versions,
            timestamps=(now + i * 1e-4 for i in itertools.count()),
        )
    )
    out: list[tuple[EventRow, tuple[object, ...]]] = []
    for row, (_stream, beat) in zip(rows, beats, strict=True):
        assert isinstance(beat, NodeHeartbeat)
        # The nodes projection's columns, encoded as the projection encodes them.
        specs = _json.encode(beat.specs).decode()
        running = _json.encode(beat.running_jobs).decode()
        out.append((row, (row[4], specs, running, beat.node_id)))
    return out


def run_baseline(
    path: Path, rows: list[tuple[EventRow, tuple[object, ...]]]
) -> tuple[float, float]:
    """Events a second, and CPU microseconds an event."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        update = (
            "UPDATE nodes SET last_seen = ?, live_specs = ?, running_jobs = ? WHERE node_id = ?"
        )
        started, cpu = time.perf_counter(), _cpu()
        for i in range(0, len(rows), PER_TRANSACTION):
            conn.execute("BEGIN IMMEDIATE")
            for event_row, update_params in rows[i : i + PER_TRANSACTION]:
                conn.execute(INSERT_EVENT, event_row)
                conn.execute(update, update_params)
            conn.execute("COMMIT")
        seconds, cpu = time.perf_counter() - started, _cpu() - cpu
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == PREFILLED + len(rows)
        # Every node's row was really updated: the UPDATEs were not no-ops.
        first = rows[0][1][0]
        seen = conn.execute("SELECT count(*) FROM nodes WHERE last_seen >= ?", (first,))
        assert seen.fetchone()[0] == TASKS
        return len(rows) / seconds, 1e6 * cpu / len(rows)
    finally:
        conn.close()


# --- the run -----------------------------------------------------------------------------


def main(quick: bool = False) -> None:
    configure_logging(json=True)
    events = 4_096 if quick else 25_600
    rounds = 1 if quick else 5
    print(
        f"store append: single-event appends from {TASKS} tasks, every projection, on a log"
        f" of {PREFILLED:,} events; {events:,} events a round, {rounds} round(s)"
    )
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        directory = Path(tmp)
        prefilled = prebuild(directory)
        rows = baseline_rows(prefilled, events)
        shelby: list[tuple[float, float]] = []  # (events/s, CPU us an event)
        plain: list[tuple[float, float]] = []
        for r in range(rounds):
            for side in ("shelby", "plain") if r % 2 == 0 else ("plain", "shelby"):
                work = directory / f"{side}.db"
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{work}{suffix}").unlink(missing_ok=True)
                shutil.copyfile(prefilled, work)
                if side == "shelby":
                    shelby.append(run_shelby(work, events))
                else:
                    plain.append(run_baseline(work, rows))
            print(
                f"  round {r + 1}: shelby {shelby[-1][0]:,.0f} events/s,"
                f" plain {plain[-1][0]:,.0f} events/s"
            )
    s, p = statistics.median(x[0] for x in shelby), statistics.median(x[0] for x in plain)
    ratio = s / p
    print(f"  shelby store (64 tasks, group commit, all projections): {s:,.0f} events/s")
    print(f"  plain sqlite3 loop (100 events a transaction, 1 UPDATE each): {p:,.0f} events/s")
    # Where an event's time goes: CPU (every thread) against the wall; the rest is
    # mostly the commit's fsync, which no thread spends CPU on.
    for label, runs, rate in (("shelby", shelby, s), ("plain", plain, p)):
        cpu = statistics.median(x[1] for x in runs)
        print(f"  {label}: {1e6 / rate:5.1f} us an event, of which CPU {cpu:5.1f} us")
    print(f"  ratio {ratio:.2f} (target >= {TARGET}): {'met' if ratio >= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)

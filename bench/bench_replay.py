"""Rebuilding every projection from a one-million-event log, against a plain scan.

Shelby: ``store.rebuild()`` (what ``shelby rebuild`` runs): drops every projection
and replays the log into all of them (``all_projections()``), chunk by chunk, each
chunk one transaction that also saves the projections' position.

Baseline: a plain ``sqlite3`` scan of the same rows in log order that decodes each
one's data into its event Struct with ``shelby.events.codec.decode_event``, and
nothing else: the least any replay has to do.

The log is a realistic mix (about 55% node heartbeats, 30% log batches, the rest
whole job lifecycles), bulk-inserted as valid chained rows in one transaction and
checked on a sample. Target: ratio >= 0.2. ``--quick`` uses 100,000 events.

    python -m bench replay [--quick]
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench._eventlog import build_log, verify_sample
from shelby.events.codec import decode_event
from shelby.events.sqlite import SELECT_EVENTS, SQLiteEventStore
from shelby.logs import configure_logging
from shelby.projections import all_projections

TARGET = 0.2


def mark_projections_current(path: Path, head: int) -> None:
    """Record every projection as up to date, so that opening the store does not
    replay the log before the measured rebuild does (their tables are made by it)."""
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO projection_positions (name, version, seq) VALUES (?, ?, ?)",
            [(p.name, p.version, head) for p in all_projections()],
        )
    conn.close()


def plain_scan(path: Path) -> tuple[int, float]:
    """Every row read in log order and its data decoded into its event."""
    conn = sqlite3.connect(path)
    try:
        started = time.perf_counter()
        count = 0
        cursor = conn.execute(f"{SELECT_EVENTS} ORDER BY seq")
        while rows := cursor.fetchmany(20_000):
            for row in rows:
                decode_event(row[5])
            count += len(rows)
        return count, time.perf_counter() - started
    finally:
        conn.close()


async def rebuild(path: Path) -> tuple[int, float, float]:
    started = time.perf_counter()
    store = SQLiteEventStore(path, all_projections())
    await store.open()
    opened = time.perf_counter() - started
    try:
        started = time.perf_counter()
        applied = await store.rebuild()
        seconds = time.perf_counter() - started
        rows = await store.fetchone("SELECT count(*) FROM nodes")
        assert rows is not None and rows[0] > 0
        return applied, seconds, opened
    finally:
        await store.close()


def main(quick: bool = False) -> None:
    configure_logging(json=True)
    n = 100_000 if quick else 1_000_000
    print(f"replay: rebuild every projection from a log of {n:,} events, against a plain scan")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        path = Path(tmp) / "replay.db"
        started = time.perf_counter()
        build_log(path, n)
        verify_sample(path)
        mark_projections_current(path, n)
        print(f"  built and sample-checked {n:,} events in {time.perf_counter() - started:.1f} s")
        plain_scan(path)  # warm the page cache for both sides alike
        # A shared 2-core machine is noisy: alternate the two sides and take medians.
        rounds = 1 if quick else 3
        scans: list[float] = []
        rebuilds: list[float] = []
        opened_first = 0.0
        for r in range(rounds):
            count, scan_seconds = plain_scan(path)
            assert count == n
            applied, rebuild_seconds, opened = asyncio.run(rebuild(path))
            opened_first = opened if r == 0 else opened_first
            assert applied == n
            scans.append(scan_seconds)
            rebuilds.append(rebuild_seconds)
        print(
            "  rounds (rebuild s / scan s): "
            + ", ".join(f"{r:.1f} / {s:.1f}" for r, s in zip(rebuilds, scans, strict=True))
        )
        scan_seconds, rebuild_seconds = statistics.median(scans), statistics.median(rebuilds)
    scan_rate, rebuild_rate = n / scan_seconds, n / rebuild_seconds
    ratio = rebuild_rate / scan_rate
    print(f"  (opening the store first, Merkle tree extended over the log: {opened_first:.1f} s)")
    print(
        f"  shelby rebuild (all projections, median): {rebuild_rate:,.0f} events/s"
        f" ({rebuild_seconds:.1f} s)"
    )
    print(f"  plain scan + decode_event (median): {scan_rate:,.0f} events/s ({scan_seconds:.1f} s)")
    print(f"  ratio {ratio:.2f} (target >= {TARGET}): {'met' if ratio >= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)

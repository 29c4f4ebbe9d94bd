"""Retention: what archiving old heartbeats and log lines does to the log's file.

Shelby: a copy of a realistic log (``bench._generator``: heartbeats, log batches, whole
job lifecycles) archived at the median of its timestamps, as ``shelby archive`` does
(``retention.archive_before``): rows moved per second, the file's bytes before, after
(the freed pages stay in the file for reuse), after VACUUM, and the segments' bytes;
then the same K new heartbeats appended to it through the command handler.

Baseline: another copy of the same log, not archived, taking the same K heartbeats:
how much the file grows when nothing was freed.

Target: appending after archiving grows the file at most half as much as the baseline
(the space archiving freed is used again). ``--quick`` uses 100,000 events.

    python -m bench retention [--quick]
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from bench._generator import Shape, cached_log
from shelby.clock import ManualClock, SystemClock
from shelby.domain import NODES, CommandHandler
from shelby.domain.nodes import Heartbeat
from shelby.events.sqlite import SQLiteEventStore
from shelby.events.types import node_stream
from shelby.logs import configure_logging
from shelby.projections import all_projections
from shelby.retention import archive_before

TARGET = 0.5


def file_bytes(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def free_bytes(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        (pages,) = conn.execute("PRAGMA freelist_count").fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
        return int(pages * size)
    finally:
        conn.close()


def median_timestamp(path: Path) -> float:
    conn = sqlite3.connect(path)
    try:
        (n,) = conn.execute("SELECT max(seq) FROM events").fetchone()
        (ts,) = conn.execute("SELECT timestamp FROM events WHERE seq = ?", (n // 2,)).fetchone()
        return float(ts)
    finally:
        conn.close()


async def archive(path: Path, before: float) -> tuple[int, int, float]:
    """Rows moved, segments written, seconds."""
    store = SQLiteEventStore(path, all_projections())
    await store.open()
    try:
        started = time.perf_counter()
        recs = await archive_before(store, before, SystemClock())
        seconds = time.perf_counter() - started
    finally:
        await store.close()
    moved = sum(getattr(rec.event, "count", 0) for rec in recs)
    return moved, len(recs), seconds


async def heartbeats(path: Path, k: int) -> None:
    """``k`` heartbeats of the log's nodes, a hundred at a time (one group commit)."""
    store = SQLiteEventStore(path, all_projections())
    await store.open()
    try:
        rows = await store.fetchall("SELECT node_id FROM nodes ORDER BY registered_seq LIMIT 100")
        nodes = [node_id for (node_id,) in rows]
        handler = CommandHandler(store, ManualClock(time.time()))
        for start in range(0, k, len(nodes)):
            await asyncio.gather(
                *(
                    handler.handle(
                        node_stream(node), NODES, Heartbeat(node_id=node, specs={"cpuUsage": 1.0})
                    )
                    for node in nodes[: min(len(nodes), k - start)]
                )
            )
    finally:
        await store.close()


def main(quick: bool = False) -> None:
    configure_logging(json=True)
    n = 100_000 if quick else 1_000_000
    print(f"retention: archive the older half of a log of {n:,} events, against not archiving")
    source = cached_log(Shape(events=n))
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        archived = Path(tmp) / "archived" / "shelby.db"
        baseline = Path(tmp) / "baseline" / "shelby.db"
        for copy in (archived, baseline):
            copy.parent.mkdir()
            shutil.copy(source, copy)
        size = file_bytes(source)
        moved, segments, seconds = asyncio.run(archive(archived, median_timestamp(archived)))
        after = file_bytes(archived)
        free = free_bytes(archived)
        segment_bytes = sum(p.stat().st_size for p in (archived.parent / "archive").glob("*.db"))
        print(
            f"  archived {moved:,} events ({moved / n:.0%}) to {segments} segments in"
            f" {seconds:.1f} s ({moved / max(seconds, 1e-9):,.0f} events/s);"
            f" segments {segment_bytes / 1e6:,.1f} MB"
        )
        print(
            f"  log file {size / 1e6:,.1f} MB before, {after / 1e6:,.1f} MB after"
            f" ({free / 1e6:,.1f} MB of it free pages, reused by what comes next)"
        )
        k = min(moved, 20_000 if quick else 100_000)
        for path in (archived, baseline):
            asyncio.run(heartbeats(path, k))
        grown = file_bytes(archived) - after
        grown_baseline = file_bytes(baseline) - size
        vacuumed = Path(tmp) / "vacuumed.db"
        conn = sqlite3.connect(archived)
        conn.execute("VACUUM INTO ?", (str(vacuumed),))
        conn.close()
        small = vacuumed.stat().st_size
        print(
            f"  VACUUM now (shelby archive --vacuum) would leave {small / 1e6:,.1f} MB"
            f" ({small / file_bytes(archived):.0%} of the file)"
        )
    print(
        f"  {k:,} new heartbeats grow the archived log by {grown / 1e6:,.2f} MB"
        f" ({grown / k:,.0f} bytes each), the baseline by {grown_baseline / 1e6:,.2f} MB"
        f" ({grown_baseline / k:,.0f} bytes each)"
    )
    ratio = grown / max(grown_baseline, 1)
    print(f"  ratio {ratio:.2f} (target <= {TARGET}): {'met' if ratio <= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)

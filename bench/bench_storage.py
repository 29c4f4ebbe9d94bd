"""Bytes on disk per heartbeat, per log line and per job, everything included.

Each figure is the difference between two SQLite files that differ only in the count
of that thing, divided by the count. Both start as copies of one generated log
(``bench/_generator.py``, 20,000 events, 1,000 nodes); the extra heartbeats, log lines
or jobs are then decided and appended by the real ``CommandHandler`` and store, so
the difference holds the events, their ``(stream, version)`` index, the Merkle tree's
rows and every projection's rows, at the fill the B-trees really have. Sizes are
taken after a WAL checkpoint, as (page_count - freelist_count) x page_size, and split
by table with SQLite's ``dbstat``.

- per heartbeat: 20,000 more ``NodeHeartbeat`` events over the fleet;
- per log line: 20,000 more lines over 50 running jobs, in batches of 1, 20 (about
  the generator's mean) and 100 lines (``LogLinesAppended`` events);
- per job: 1,000 more jobs through create, script, assign, ack, usage and finish (six
  events), without log lines or heartbeats.

``--quick``: a quarter of each count.

    python -m bench storage [--quick]
"""

from __future__ import annotations

import asyncio
import functools
import random
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench._generator import (
    Shape,
    bench_dir,
    cached_log,
    finish,
    heartbeat,
    log_batch,
    new_job,
    node_name,
    script_for,
    usage,
)
from shelby.clock import SystemClock
from shelby.domain import JOBS, NODES, CommandHandler
from shelby.domain.jobs import AckJob, AssignJob
from shelby.events.sqlite import SQLiteEventStore
from shelby.events.types import job_stream, node_stream
from shelby.projections import all_projections

BASE = Shape(20_000)
RUNNING = 50  # jobs the extra log lines are spread over
CONCURRENCY = 500

Do = Callable[[CommandHandler, random.Random], Awaitable[None]]


def size_of(path: Path) -> tuple[int, dict[str, int]]:
    """Bytes in use, in all and by part: the log, the Merkle tree, the projections."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        parts: dict[str, int] = {"log": 0, "merkle": 0, "projections": 0}
        for name, used in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
            if name in ("events", "sqlite_autoindex_events_1"):
                parts["log"] += used
            elif name == "merkle_batches":
                parts["merkle"] += used
            elif not name.startswith("sqlite_") or name.startswith("sqlite_autoindex_"):
                parts["projections"] += used
        return (pages - free) * size, parts
    finally:
        conn.close()


async def _many(commands: list[Callable[[], Awaitable[Any]]]) -> None:
    for start in range(0, len(commands), CONCURRENCY):
        await asyncio.gather(*(c() for c in commands[start : start + CONCURRENCY]))


def _running_jobs(count: int) -> Do:
    """``count`` jobs created, scripted, assigned and acked: running, to log into."""

    async def do(handler: CommandHandler, rng: random.Random) -> None:
        for k in range(count):
            create = new_job(rng, f"storage-{k}")
            stream = job_stream(create.job_id)
            node = node_name(k)
            for command in (
                create,
                script_for(create),
                AssignJob(job_id=create.job_id, node_id=node),
                AckJob(job_id=create.job_id, node_id=node),
            ):
                await handler.handle(stream, JOBS, command)

    return do


def _heartbeats(count: int) -> Do:
    async def do(handler: CommandHandler, rng: random.Random) -> None:
        def beat(k: int) -> Callable[[], Awaitable[Any]]:
            node = node_name(k % BASE.nodes)
            return lambda: handler.handle(node_stream(node), NODES, heartbeat(rng, node, []))

        await _many([beat(k) for k in range(count)])

    return do


def _log_lines(count: int, per_batch: int) -> Do:
    async def do(handler: CommandHandler, rng: random.Random) -> None:
        await _running_jobs(RUNNING)(handler, rng)
        per_job = count // RUNNING

        async def stream_log(k: int) -> None:
            job, node = f"storage-{k}", node_name(k)
            for offset in range(0, per_job, per_batch):
                size = min(per_batch, per_job - offset)
                command = log_batch(job, node, 1, offset, size, handler.clock.now())
                await handler.handle(job_stream(job), JOBS, command)

        await asyncio.gather(*(stream_log(k) for k in range(RUNNING)))

    return do


def _jobs(count: int) -> Do:
    async def do(handler: CommandHandler, rng: random.Random) -> None:
        async def life(k: int) -> None:
            create = new_job(rng, f"storage-life-{k}")
            node = node_name(k % BASE.nodes)
            stream = job_stream(create.job_id)
            for command in (
                create,
                script_for(create),
                AssignJob(job_id=create.job_id, node_id=node),
                AckJob(job_id=create.job_id, node_id=node),
                usage(rng, create.job_id, node, 1, 1800.0),
                finish(rng, create.job_id, node, 1, True),
            ):
                await handler.handle(stream, JOBS, command)

        await _many([functools.partial(life, k) for k in range(count)])

    return do


async def _apply(path: Path, steps: list[Do]) -> None:
    store = SQLiteEventStore(path, all_projections())
    await store.open()
    try:
        handler = CommandHandler(store, SystemClock())
        rng = random.Random(11)
        for step in steps:
            await step(handler, rng)
    finally:
        await store.close()


def variant(base: Path, directory: Path, name: str, steps: list[Do]) -> tuple[int, dict[str, int]]:
    path = directory / f"{name}.db"
    shutil.copyfile(base, path)
    asyncio.run(_apply(path, steps))
    return size_of(path)


def main(quick: bool = False) -> None:
    from shelby.logs import configure_logging

    configure_logging(json=True)
    scale = 4 if quick else 1
    beats, lines, jobs = 20_000 // scale, 20_000 // scale, 1_000 // scale
    print(f"storage: bytes on disk per thing, from logs of {BASE.events:,} events plus more of it")
    base = cached_log(BASE)
    with tempfile.TemporaryDirectory(dir=bench_dir()) as tmp:
        directory = Path(tmp)
        plain = variant(base, directory, "plain", [])
        with_running = variant(base, directory, "running", [_running_jobs(RUNNING)])
        rows: list[tuple[str, int, tuple[int, dict[str, int]], tuple[int, dict[str, int]]]] = [
            ("heartbeat", beats, plain, variant(base, directory, "beats", [_heartbeats(beats)]))
        ]
        for per_batch in (1, 20, 100):
            rows.append(
                (
                    f"log line ({per_batch} a batch)",
                    lines,
                    with_running,
                    variant(base, directory, f"lines{per_batch}", [_log_lines(lines, per_batch)]),
                )
            )
        rows.append(
            (
                "job (6 events, no logs)",
                jobs,
                plain,
                variant(base, directory, "jobs", [_jobs(jobs)]),
            )
        )
    print(f"  {'per':26} {'bytes':>8} {'log':>8} {'merkle':>8} {'projections':>12}   (count added)")
    for name, count, (before, parts0), (after, parts1) in rows:
        split = {k: (parts1[k] - parts0[k]) / count for k in parts0}
        print(
            f"  {name:26} {(after - before) / count:8.0f} {split['log']:8.0f}"
            f" {split['merkle']:8.0f} {split['projections']:12.0f}   ({count:,})"
        )


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)

"""Shared by the event-log tests: opening a store, reading raw rows, and the README's
hash recipe written out independently of ``shelby.events.codec``."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from shelby.events.sqlite import SQLiteEventStore
from shelby.events.store import Projection
from shelby.events.types import (
    Event,
    JobAcked,
    JobAssigned,
    JobCreated,
    JobFinished,
    LogLine,
    LogLinesAppended,
    NodeHeartbeat,
    NodeRegistered,
    ScriptUploaded,
    UsageReported,
    job_stream,
    node_stream,
)

# json.dumps as the README writes canonical text.
CANONICAL = {"sort_keys": True, "separators": (",", ":"), "ensure_ascii": False}

floats = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [1e-5, 0.1, 1e16, 60.0, -0.0, 5e-324, 1.7976931348623157e308, 123456789.123456789]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | floats
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=16,
)


GENESIS = "0" * 64
COLUMNS = ("seq", "stream", "version", "type", "timestamp", "data", "prev_hash", "hash")

Row = tuple[Any, ...]


@asynccontextmanager
async def opened(
    path: Path, projections: Sequence[Projection] = ()
) -> AsyncIterator[SQLiteEventStore]:
    store = SQLiteEventStore(path, list(projections))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def raw_rows(path: Path) -> list[Row]:
    """Every row of the ``events`` table, read with plain ``sqlite3``."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT {', '.join(COLUMNS)} FROM events ORDER BY seq").fetchall()
    finally:
        conn.close()


def recipe_hash(prev_hash: str, row: Row) -> str:
    """The README's byte layout: ``json.dumps`` of the envelope, then SHA-256 over the
    previous hash's bytes and the canonical UTF-8 text."""
    seq, stream, version, type_, timestamp, data, _prev, _hash = row
    canonical = json.dumps(
        {
            "data": json.loads(data),
            "seq": seq,
            "stream": stream,
            "timestamp": timestamp,
            "type": type_,
            "version": version,
        },
        **CANONICAL,  # type: ignore[arg-type]
    ).encode("utf-8")
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical).hexdigest()


def assert_chain(rows: Sequence[Row]) -> str:
    """Every row is in place, linked to the one before and hashed as the README says;
    returns the head hash."""
    prev = GENESIS
    for n, row in enumerate(rows, start=1):
        assert row[0] == n, f"seq {row[0]} where {n} was expected"
        assert row[6] == prev, f"prev_hash of seq {n} is not the hash before it"
        prev = recipe_hash(prev, row)
        assert prev == row[7], f"hash of seq {n} does not match its contents"
    return prev


async def append_sample_log(store: SQLiteEventStore, jobs: int = 3) -> None:
    """A small but realistic log: nodes registering and heartbeating, jobs going
    through their lifecycle with log lines (some non-ASCII) and usage."""
    ts = 1_700_000_000.0

    async def put(stream: str, events: list[Event]) -> None:
        nonlocal ts
        version = len(await store.read_stream(stream))
        ts += 0.25
        await store.append(stream, events, expected_version=version, timestamp=ts)

    for n in ("n1", "n2"):
        await put(
            node_stream(n),
            [
                NodeRegistered(
                    node_id=n,
                    name=f"box-{n}",
                    token_hash=hashlib.sha256(n.encode()).hexdigest(),
                    specs={"cpuCount": 8, "totalRAM_GB": 31.5},
                    labels={"zone": "eu-1"},
                )
            ],
        )
    for j in range(jobs):
        job, node = f"job{j}", f"n{j % 2 + 1}"
        stream = job_stream(job)
        await put(stream, [JobCreated(job_id=job, meta={"lr": 1e-5, "name": f"ß-{j}"})])
        await put(stream, [ScriptUploaded(job_id=job, script="print(1)", script_hash="sha256:00")])
        await put(stream, [JobAssigned(job_id=job, node_id=node, attempt=1)])
        await put(stream, [JobAcked(job_id=job, node_id=node, attempt=1)])
        await put(node_stream(node), [NodeHeartbeat(node_id=node, specs={"cpuUsage": 12.5})])
        await put(
            stream,
            [
                LogLinesAppended(
                    job_id=job,
                    node_id=node,
                    attempt=1,
                    offset=0,
                    lines=[
                        LogLine(line="epoch 1 loss=0.3 — ok ✓", timestamp=ts),
                        LogLine(line="warning: ☃", timestamp=ts + 0.1, stream="stderr"),
                    ],
                )
            ],
        )
        await put(
            stream,
            [
                UsageReported(node_id=node, job_id=job, attempt=1, cpu_seconds=1.5),
                JobFinished(job_id=job, node_id=node, attempt=1, model_hash="sha256:ff"),
            ],
        )


def copy_db(src: Path, dst_dir: Path) -> Path:
    """A copy of a closed log (its WAL was checkpointed on close)."""
    dst = dst_dir / src.name
    shutil.copyfile(src, dst)
    for suffix in ("-wal", "-shm"):
        assert not Path(f"{src}{suffix}").exists() or Path(f"{src}{suffix}").stat().st_size == 0
    return dst

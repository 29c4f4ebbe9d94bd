"""Valid event logs made fast, for the benchmarks: realistic events (node heartbeats,
log lines, whole job lifecycles) with their real canonical data and chain hashes,
bulk-inserted in one transaction with plain ``sqlite3``, then checked on a sample."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from shelby.events.codec import GENESIS_HASH, chain_hash, encode_data, envelope_bytes
from shelby.events.sqlite import EVENTS_DDL, INSERT_EVENT, PAGE_SIZE, SELECT_EVENTS
from shelby.events.types import (
    Event,
    JobAcked,
    JobAssigned,
    JobCreated,
    JobFailed,
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
from shelby.events.verify import ChainVerifier

__all__ = ["Built", "EventRow", "build_log", "chain_rows", "heartbeat", "node_id", "verify_sample"]

EventRow = tuple[int, str, int, str, float, str, str, str]
START = 1_700_000_000.0
ACTIVE_JOBS = 40


def node_id(k: int) -> str:
    return f"bench-{k:03d}"


def heartbeat(node: str, n: int) -> NodeHeartbeat:
    """What an agent sends every few seconds."""
    return NodeHeartbeat(
        node_id=node,
        specs={"cpuUsage": round(12.5 + n % 70 * 1.1, 1), "ramUsage": 41.3, "gpuUsage": [87.0]},
        running_jobs=[f"job-{n % 7}"],
    )


@dataclass
class Built:
    count: int
    head_hash: str
    versions: dict[str, int] = field(default_factory=dict)


@dataclass
class _Job:
    job_id: str
    step: int = 0  # 0 created, 1 uploaded, 2 assigned, 3 running
    node: str = ""
    offset: int = 0


def _events(n: int, nodes: int, seed: int) -> Iterator[tuple[str, Event]]:
    """``n`` events as a busy coordinator writes them: about 55% heartbeats, 30% log
    batches, the rest job lifecycles (created, script, assigned, acked, usage, end)."""
    rng = random.Random(seed)
    names = [node_id(k) for k in range(nodes)]
    for k, name in enumerate(names):
        yield (
            node_stream(name),
            NodeRegistered(
                node_id=name,
                name=f"gpu-box-{k}",
                token_hash=f"{rng.getrandbits(256):064x}",
                specs={
                    "cpuCount": 16,
                    "totalRAM_GB": 64.0,
                    "os": "Linux",
                    "gpus": [{"name": "A100"}],
                },
                labels={"zone": f"eu-{k % 3}"},
            ),
        )
    made = nodes
    jobs: list[_Job] = []
    running: list[_Job] = []
    serial = 0
    while made < n:
        r = rng.random()
        if r < 0.55 or (r < 0.85 and not running):
            name = rng.choice(names)
            yield node_stream(name), heartbeat(name, made)
        elif r < 0.85:
            job = rng.choice(running)
            lines = [
                LogLine(
                    line=f"epoch {job.offset + i} loss={rng.random():.4f} lr=1e-05",
                    timestamp=START + made,
                )
                for i in range(rng.randint(1, 3))
            ]
            yield (
                job_stream(job.job_id),
                LogLinesAppended(
                    job_id=job.job_id, node_id=job.node, attempt=1, offset=job.offset, lines=lines
                ),
            )
            job.offset += len(lines)
        elif len(jobs) < ACTIVE_JOBS:
            serial += 1
            job = _Job(f"{serial:07d}")
            jobs.append(job)
            yield (
                job_stream(job.job_id),
                JobCreated(
                    job_id=job.job_id,
                    dataset_name="mnist",
                    dataset_url="https://data.example/mnist.tgz",
                    runtime_minutes_estimate=12.0,
                    meta={"lr": 1e-5, "batch": 64, "tags": ["bench", "ü"]},
                    timeout_minutes=24.0,
                ),
            )
        else:
            job = rng.choice(jobs)
            stream = job_stream(job.job_id)
            if job.step == 0:
                script = f"print('train {job.job_id}')\n"
                yield (
                    stream,
                    ScriptUploaded(
                        job_id=job.job_id, script=script, script_hash="sha256:" + "ab" * 32
                    ),
                )
            elif job.step == 1:
                job.node = rng.choice(names)
                yield stream, JobAssigned(job_id=job.job_id, node_id=job.node, attempt=1)
            elif job.step == 2:
                running.append(job)
                yield stream, JobAcked(job_id=job.job_id, node_id=job.node, attempt=1)
            elif job.step == 3:
                yield (
                    stream,
                    UsageReported(
                        node_id=job.node,
                        job_id=job.job_id,
                        attempt=1,
                        cpu_seconds=812.5,
                        wall_seconds=300.0,
                        peak_ram_mb=2048.0,
                    ),
                )
            else:
                jobs.remove(job)
                running.remove(job)
                if rng.random() < 0.1:
                    yield (
                        stream,
                        JobFailed(
                            job_id=job.job_id,
                            node_id=job.node,
                            attempt=1,
                            exit_code=1,
                            error="exit 1",
                        ),
                    )
                else:
                    yield (
                        stream,
                        JobFinished(
                            job_id=job.job_id,
                            node_id=job.node,
                            attempt=1,
                            model_hash="sha256:" + "cd" * 32,
                        ),
                    )
            job.step += 1
        made += 1


def chain_rows(
    events: Iterator[tuple[str, Event]] | list[tuple[str, Event]],
    *,
    after_seq: int,
    after_hash: str,
    versions: dict[str, int],
    timestamps: Iterator[float],
) -> Iterator[EventRow]:
    """Rows as the store writes them, chained onto ``after_hash``; ``versions`` (each
    stream's version so far) is updated as rows are made."""
    seq, prev = after_seq, after_hash
    for stream, event in events:
        seq += 1
        version = versions.get(stream, 0) + 1
        versions[stream] = version
        type_ = type(event).__name__
        data = encode_data(event)
        ts = next(timestamps)
        h = chain_hash(
            prev,
            envelope_bytes(
                seq=seq, stream=stream, version=version, type=type_, timestamp=ts, data=data
            ),
        )
        yield (seq, stream, version, type_, ts, data, prev, h)
        prev = h


def build_log(path: Path, n: int, *, nodes: int = 64, seed: int = 0) -> Built:
    """A new SQLite file holding ``n`` valid events (nodes registered first)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # as the store makes its files
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        for ddl in EVENTS_DDL:
            conn.execute(ddl)
        versions: dict[str, int] = {}
        step = iter(START + i * 0.01 for i in range(n))
        rows = chain_rows(
            _events(n, nodes, seed),
            after_seq=0,
            after_hash=GENESIS_HASH,
            versions=versions,
            timestamps=step,
        )
        last: EventRow | None = None
        while chunk := [r for _, r in zip(range(20_000), rows, strict=False)]:
            conn.executemany(INSERT_EVENT, chunk)
            last = chunk[-1]
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    assert last is not None and last[0] == n
    return Built(n, last[7], versions)


def verify_sample(path: Path, size: int = 5_000, seed: int = 1) -> None:
    """Check the chain over the first ``size`` events and a random window of the log."""
    conn = sqlite3.connect(path)
    try:
        (head,) = conn.execute("SELECT max(seq) FROM events").fetchone()
        start = random.Random(seed).randint(1, max(1, head - size))
        for after in (0, start):
            prev = (
                GENESIS_HASH
                if after == 0
                else conn.execute("SELECT hash FROM events WHERE seq = ?", (after,)).fetchone()[0]
            )
            verifier = ChainVerifier(after, prev)
            rows = conn.execute(
                f"{SELECT_EVENTS} WHERE seq > ? ORDER BY seq LIMIT ?", (after, size)
            )
            if not verifier.feed(rows.fetchall()):
                raise AssertionError(f"the built log does not verify: {verifier.problem}")
    finally:
        conn.close()

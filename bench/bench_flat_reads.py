"""Reads that stay flat as the log grows: the same reads at 10,000 and 1,000,000 events.

Both logs come from the generator (``bench/_generator.py``: 1,000 nodes, a job per
hundred events, heartbeats, log batches, usage reports), so they differ in history, not
in fleet. A real ``shelby serve`` on each answers the dashboard, health, the job list
(newest, by status, a short page of running jobs), a job's detail and a page from the
middle of its log (the long job: its log grows with the history), the last page of
that log, and the node list.

The two servers run side by side, each with a keep-alive client, and the requests
alternate between them one at a time, read after read (in a new order each round),
round after round (warm-up rounds first): on a shared two-core machine a noisy moment
then falls on both logs alike, where measuring one server after the other would blame
the log for the neighbours. p50 and p99 are of the whole request as the client saw it,
over 1,000 requests of each read: fewer leave the p99 to the few slowest, which on a
shared machine are whoever else ran at that moment. Each server's RSS is read after
the reads.

Target: each p99 at 1M at most 1.5 times its p99 at 10k, and the RSS likewise.
``--quick``: 10,000 against 100,000 events and 300 requests of each read (whose p99
is then the third slowest: a rough verdict on a busy machine).

    python -m bench flat_reads [--quick]
"""

from __future__ import annotations

import random
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from bench._generator import Shape, cached_log, long_job_id
from bench._servers import ADMIN, free_port, start_shelby, stop

TARGET = 1.5
WARMUP = 30
SMALL = 10_000


@dataclass(frozen=True)
class Read:
    name: str
    path: str


@dataclass
class Measured:
    events: int
    p50: dict[str, float]
    p99: dict[str, float]
    rss: int
    sizes: dict[str, int]


def reads(path: Path) -> list[Read]:
    """The reads, with the long job and the middle of its log as this log has them."""
    conn = sqlite3.connect(path)
    try:
        (lines,) = conn.execute(
            "SELECT max(last_offset) + 1 FROM log_batches WHERE job_id = ?", (long_job_id(),)
        ).fetchone()
    finally:
        conn.close()
    job = long_job_id()
    middle = lines // 2
    return [
        Read("dashboard", "/api/frontend/dashboard"),
        Read("health", "/api/frontend/system/health"),
        Read("jobs (newest 50)", "/api/frontend/jobs"),
        Read("jobs status=finished", "/api/frontend/jobs?status=finished"),
        Read("jobs status=pending", "/api/frontend/jobs?status=pending"),
        Read("jobs status=running limit=5", "/api/frontend/jobs?status=running&limit=5"),
        Read("job detail (long job)", f"/api/frontend/jobs/{job}"),
        Read("logs page, middle", f"/api/frontend/logs/{job}?after={middle}&limit=1000"),
        Read("logs page, last", f"/api/frontend/logs/{job}?limit=1000"),
        Read("node list", "/api/frontend/nodes"),
    ]


def start_server(db: Path, port: int) -> subprocess.Popen[bytes]:
    # The log's history is hours old: a long lease and grace keep every node active
    # and every running job running, so the server appends nothing while measured.
    forever = str(10 * 365 * 86400)
    return start_shelby(
        db,
        port,
        "--timeout-grace-seconds",
        forever,
        lease_seconds=float(forever),
        ready_timeout=120,
    )


def measure(logs: list[tuple[Path, int]], requests: int) -> list[Measured]:
    """Serve each log, then ask every read of every server in turn, round-robin."""
    procs: list[subprocess.Popen[bytes]] = []
    clients: list[httpx.Client] = []
    try:
        for db, _ in logs:
            port = free_port()
            procs.append(start_server(db, port))
            clients.append(
                httpx.Client(
                    base_url=f"http://127.0.0.1:{port}",
                    headers={"Authorization": f"Bearer {ADMIN}"},
                    timeout=60,
                )
            )
        plans = [reads(db) for db, _ in logs]
        samples: list[dict[str, list[float]]] = [{r.name: [] for r in p} for p in plans]
        sizes: list[dict[str, int]] = [{} for _ in logs]
        rng = random.Random(5)
        indexes = list(range(len(plans[0])))
        for round_ in range(WARMUP + requests):
            # A new order each round: a pause that recurs every so many requests (the
            # collector's) would otherwise land on the same read every time.
            rng.shuffle(indexes)
            for i in indexes:
                # Alternate which server goes first, so neither always follows the other.
                order = range(len(logs)) if round_ % 2 else reversed(range(len(logs)))
                for k in order:
                    read = plans[k][i]
                    started = time.perf_counter()
                    response = clients[k].get(read.path)
                    seconds = time.perf_counter() - started
                    response.raise_for_status()
                    if round_ >= WARMUP:
                        samples[k][read.name].append(seconds)
                        sizes[k][read.name] = len(response.content)
        out = []
        for k, (_db, events) in enumerate(logs):
            rss = psutil.Process(procs[k].pid).memory_info().rss
            head = clients[k].get("/api/frontend/system/health").json()["eventLog"]
            if head["lastSeq"] != events:
                raise AssertionError(f"the server appended while measured: {head}")
            out.append(
                Measured(
                    events=events,
                    p50={n: statistics.median(v) for n, v in samples[k].items()},
                    p99={n: _p99(v) for n, v in samples[k].items()},
                    rss=rss,
                    sizes=sizes[k],
                )
            )
        return out
    finally:
        for client in clients:
            client.close()
        for proc in procs:
            stop(proc)


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def report(small: Measured, big: Measured, echo: Callable[[str], None] = print) -> bool:
    ms = 1000.0
    a, b = f"{small.events // 1000:,}k", f"{big.events // 1000:,}k"
    echo(
        f"  {'read':30} {a + ' p50':>10} {a + ' p99':>10} {b + ' p50':>11} {b + ' p99':>11}"
        f" {'p99 ratio':>10}  {'bytes ' + b:>11}"
    )
    met = True
    for name in small.p99:
        ratio = big.p99[name] / small.p99[name]
        ok = ratio <= TARGET
        met &= ok
        echo(
            f"  {name:30} {small.p50[name] * ms:8.2f}ms {small.p99[name] * ms:8.2f}ms"
            f" {big.p50[name] * ms:9.2f}ms {big.p99[name] * ms:9.2f}ms {ratio:10.2f}"
            f"  {big.sizes[name]:>11,}  {'met' if ok else 'NOT met'}"
        )
    ratio = big.rss / small.rss
    ok = ratio <= TARGET
    met &= ok
    echo(
        f"  {'server RSS after the reads':30} {small.rss / 2**20:18.0f} MB"
        f" {big.rss / 2**20:20.0f} MB {ratio:10.2f}  {'':>11}  {'met' if ok else 'NOT met'}"
    )
    echo(f"  every p99 and the RSS within {TARGET}x: {'met' if met else 'NOT met'}")
    return met


def main(quick: bool = False) -> None:
    from shelby.logs import configure_logging

    configure_logging(json=True)
    big_events = 100_000 if quick else 1_000_000
    requests = 300 if quick else 1000
    print(
        f"flat_reads: {requests} requests of each read at {SMALL:,} and {big_events:,} events"
        " (1,000 nodes, a job per 100 events)"
    )
    logs = [(cached_log(Shape(n)), n) for n in (SMALL, big_events)]
    small, big = measure(logs, requests)
    report(small, big)


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)

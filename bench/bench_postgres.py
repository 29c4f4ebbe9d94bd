"""PostgreSQL against SQLite, and two replicas against one, on the same machine in the
same run.

1. Appends per second through the store (every projection on, as ``shelby serve`` runs
   it): many concurrent appenders, each on a stream of its own, in worker processes
   that start together. SQLite in one process (its deployment: one server); PostgreSQL
   with one process, then with two processes (two replicas) sharing one database.
2. Dispatches per second through real ``shelby serve`` processes: jobs with scripts are
   queued, then nodes poll as fast as they can (round-robin over the replicas) until
   every job is assigned. SQLite with one server; PostgreSQL with one, then two.

The baseline of each table is SQLite; ratios are against it, and two replicas are
also compared with one. The machine's cores are shared by everything here (servers,
workers, PostgreSQL itself and the polling client), which caps what a second replica
can add; the figures say what this machine does, not what a cluster would.

    python -m bench postgres        # or: python bench/bench_postgres.py [--quick]
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).parent))

from _servers import free_port

ADMIN_URL = os.environ.get("SHELBY_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
ADMIN_TOKEN = "bench-admin"
JOIN_TOKEN = "bench-join"
APPENDERS = 64  # concurrent appends in flight per process


# --- databases ----------------------------------------------------------------------


@contextmanager
def fresh_database() -> Iterator[str]:
    name = f"shelby_bench_{secrets.token_hex(4)}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# --- 1. appends ---------------------------------------------------------------------


async def _append_worker(db: str, name: str, appends: int) -> None:
    """One replica: prints ``ready``, waits for a line, appends, prints its span."""
    from shelby.events.open import open_store
    from shelby.events.types import NodeHeartbeat, node_stream
    from shelby.logs import configure_logging
    from shelby.projections import all_projections

    configure_logging(json=True)  # on stderr: stdout carries the protocol
    store = open_store(db, all_projections())
    await store.open()
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    started = time.time()

    async def appender(k: int) -> None:
        stream = node_stream(f"{name}-{k}")
        for version in range(appends // APPENDERS):
            await store.append(
                stream,
                [NodeHeartbeat(node_id=f"{name}-{k}", specs={"cpuUsage": 12.5, "v": version})],
                expected_version=version,
                timestamp=time.time(),
            )

    await asyncio.gather(*(appender(k) for k in range(APPENDERS)))
    print(f"{started} {time.time()}", flush=True)
    await store.close()


def append_rate(db: str, processes: int, appends: int) -> float:
    """Appends per second of ``processes`` workers sharing ``appends`` between them."""
    per = appends // processes
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--append-worker", db, f"w{i}", str(per)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    spans = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out
        start, end = map(float, out.split())
        spans.append((start, end))
    done = (per // APPENDERS) * APPENDERS * processes
    return done / (max(e for _, e in spans) - min(s for s, _ in spans))


# --- 2. dispatches ------------------------------------------------------------------


@contextmanager
def servers(db: str, count: int, data_dir: Path) -> Iterator[list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELBY_")}
    env.update(
        SHELBY_ADMIN_TOKEN=ADMIN_TOKEN, SHELBY_JOIN_TOKEN=JOIN_TOKEN, SHELBY_RATE_LIMIT="off"
    )
    procs, urls = [], []
    try:
        for i in range(count):
            port = free_port()
            log = open(data_dir / f"server{i}.log", "ab")  # noqa: SIM115 -- closed below
            procs.append(
                (
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "shelby",
                            "serve",
                            "--db",
                            db,
                            "--port",
                            str(port),
                            "--lease-seconds",
                            "600",
                        ],
                        env=env,
                        stdout=log,
                        stderr=log,
                        cwd=data_dir,
                    ),
                    log,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{urls[-1]}/api/frontend/system/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if procs[-1][0].poll() is not None or time.monotonic() > deadline:
                    tail = (data_dir / f"server{i}.log").read_text()[-3000:]
                    raise RuntimeError(f"shelby serve did not start:\n{tail}")
                time.sleep(0.05)
        yield urls
    finally:
        for proc, log in procs:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


async def _dispatch(urls: list[str], jobs: int, nodes: int) -> float:
    admin_headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=urls[0], headers=admin_headers, timeout=60) as admin:
        sem = asyncio.Semaphore(16)

        async def queue(i: int) -> None:
            async with sem:
                job = f"job-{i:05d}"
                r = await admin.post("/api/jobs/create", json={"jobId": job})
                r.raise_for_status()
                r = await admin.post(
                    "/api/jobs/upload-script", json={"jobId": job, "script": "print(1)"}
                )
                r.raise_for_status()

        await asyncio.gather(*(queue(i) for i in range(jobs)))
    registered = []
    async with httpx.AsyncClient(
        base_url=urls[0], headers={"Authorization": f"Bearer {JOIN_TOKEN}"}, timeout=60
    ) as join:
        for i in range(nodes):
            r = await join.post(
                "/api/nodes/register",
                json={"name": f"bench{i}", "specs": {"cpuCount": 64}, "maxConcurrentJobs": jobs},
            )
            r.raise_for_status()
            registered.append((r.json()["nodeId"], r.json()["token"]))
    assigned: list[str] = []

    async def poller(node_id: str, token: str) -> None:
        clients = [
            httpx.AsyncClient(base_url=u, headers={"Authorization": f"Bearer {token}"}, timeout=60)
            for u in urls
        ]
        try:
            for client in itertools.cycle(clients):
                if len(assigned) >= jobs:
                    return
                r = await client.get("/api/jobs/poll", params={"nodeId": node_id})
                r.raise_for_status()
                job = r.json()["job"]
                if job is not None:
                    assigned.append(job["jobId"])
        finally:
            for c in clients:
                await c.aclose()

    started = time.perf_counter()
    await asyncio.gather(*(poller(n, t) for n, t in registered))
    elapsed = time.perf_counter() - started
    assert sorted(assigned) == [f"job-{i:05d}" for i in range(jobs)], "a job went out twice"
    return jobs / elapsed


def dispatch_rate(db: str, replicas: int, jobs: int, nodes: int, data_dir: Path) -> float:
    with servers(db, replicas, data_dir) as urls:
        return asyncio.run(_dispatch(urls, jobs, nodes))


# --- the report ---------------------------------------------------------------------


def _table(title: str, unit: str, rows: dict[str, list[float]]) -> None:
    medians = {label: statistics.median(rates) for label, rates in rows.items()}
    base, one_pg = medians[SQLITE], medians[PG1]
    print(f"\n{title}")
    print(
        f"  {'configuration':<26}{unit + ' (median)':>20}{'runs':>26}{'vs SQLite':>11}"
        f"{'vs 1 PG':>9}"
    )
    for label, rate in medians.items():
        runs = " ".join(f"{r:,.0f}" for r in rows[label])
        vs_pg = f"{rate / one_pg:.2f}x" if label != SQLITE else ""
        print(f"  {label:<26}{rate:>20,.0f}{runs:>26}{rate / base:>10.2f}x{vs_pg:>9}")


SQLITE, PG1, PG2 = "SQLite, 1 server", "PostgreSQL, 1 replica", "PostgreSQL, 2 replicas"


def main(quick: bool = False) -> None:
    appends = 2_048 if quick else 12_800
    jobs = 150 if quick else 500
    rounds = 1 if quick else 3
    nodes = 8
    print(
        f"bench_postgres: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f};"
        f" {appends} appends and {jobs} dispatches per run, {rounds} rounds alternating"
    )
    append_rows: dict[str, list[float]] = {SQLITE: [], PG1: [], PG2: []}
    dispatch_rows: dict[str, list[float]] = {SQLITE: [], PG1: [], PG2: []}
    for round_ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            append_rows[SQLITE].append(append_rate(str(root / "a.db"), 1, appends))
            with fresh_database() as db:
                append_rows[PG1].append(append_rate(db, 1, appends))
            with fresh_database() as db:
                append_rows[PG2].append(append_rate(db, 2, appends))
            dispatch_rows[SQLITE].append(dispatch_rate(str(root / "d.db"), 1, jobs, nodes, root))
            with fresh_database() as db:
                dispatch_rows[PG1].append(dispatch_rate(db, 1, jobs, nodes, root))
            with fresh_database() as db:
                dispatch_rows[PG2].append(dispatch_rate(db, 2, jobs, nodes, root))
        print(f"  round {round_ + 1} of {rounds} done", flush=True)
    _table(
        f"1. appends/s through the store ({APPENDERS} in flight per process)",
        "appends/s",
        append_rows,
    )
    _table(
        f"2. dispatches/s through shelby serve ({nodes} nodes polling round-robin)",
        "jobs/s",
        dispatch_rows,
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--append-worker"]:
        asyncio.run(_append_worker(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    else:
        main(quick="--quick" in sys.argv)

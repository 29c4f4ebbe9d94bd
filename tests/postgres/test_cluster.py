"""Two real ``shelby serve`` processes on one PostgreSQL database, serving one cluster:
dispatch, live logs across replicas, the log's integrity, and losing a replica."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time
from typing import Any

import httpx
import msgspec
import pytest
from websockets.asyncio.client import connect

from conftest import JOIN_TOKEN, ServerFactory, ServerProcess

pytestmark = pytest.mark.slow

Replicas = tuple[ServerProcess, ServerProcess]


@pytest.fixture
def replicas(pg_url: str, server_factory: ServerFactory) -> Replicas:
    """Two servers on the test's database (``--db`` given twice: the last wins), with
    a lease long enough that no job goes back to the queue during a test."""
    return (
        server_factory("one", args=("--db", pg_url), lease_seconds=60),
        server_factory("two", args=("--db", pg_url), lease_seconds=60),
    )


async def register(server: ServerProcess, name: str, max_jobs: int = 1) -> tuple[str, str]:
    async with server.async_client(JOIN_TOKEN) as join:
        r = await join.post(
            "/api/nodes/register",
            json={
                "name": name,
                "specs": {"cpuCount": 8, "totalRAM_GB": 32.0},
                "maxConcurrentJobs": max_jobs,
            },
        )
    assert r.status_code == 200, r.text
    body = r.json()
    return body["nodeId"], body["token"]


async def new_job(admin: httpx.AsyncClient, job_id: str) -> None:
    r = await admin.post("/api/jobs/create", json={"jobId": job_id, "datasetName": "d"})
    assert r.status_code == 200, r.text
    r = await admin.post("/api/jobs/upload-script", json={"jobId": job_id, "script": "print(1)"})
    assert r.status_code == 200, r.text


def shelby_verify(db: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELBY_")}
    return subprocess.run(
        [sys.executable, "-m", "shelby", "verify", "--db", db],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


async def audit_events(server: ServerProcess) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with server.async_client() as admin:
        while True:
            after = events[-1]["seq"] if events else 0
            r = await admin.get("/api/audit/log", params={"after": after, "limit": 10_000})
            assert r.status_code == 200, r.text
            page = r.json()["events"]
            if not page:
                return events
            events += page


async def test_agents_polling_both_replicas_get_each_job_exactly_once(
    replicas: Replicas, pg_url: str
) -> None:
    """Six nodes poll both replicas at once until the queue is empty: every job is
    handed out, none twice; both replicas hand out jobs; the log verifies."""
    one, two = replicas
    jobs = [f"job-{i:03d}" for i in range(60)]
    async with one.async_client() as a1, two.async_client() as a2:
        for job, admin in zip(jobs, itertools.cycle((a1, a2)), strict=False):
            await new_job(admin, job)
    nodes = [await register(replicas[i % 2], f"node{i}", max_jobs=len(jobs)) for i in range(6)]
    handed: list[tuple[str, str, str]] = []  # (job, node, replica)

    async def poller(node_id: str, token: str) -> None:
        clients = [s.async_client(token) for s in replicas]
        try:
            empty = 0
            for k in itertools.count():
                replica = k % 2
                r = await clients[replica].get("/api/jobs/poll", params={"nodeId": node_id})
                assert r.status_code == 200, r.text
                job = r.json()["job"]
                if job is None:
                    empty += 1
                    if empty >= 4:
                        return
                    continue
                empty = 0
                handed.append((job["jobId"], node_id, ("one", "two")[replica]))
        finally:
            for c in clients:
                await c.aclose()

    await asyncio.gather(*(poller(n, t) for n, t in nodes))
    assert sorted(j for j, _, _ in handed) == jobs
    assert {r for _, _, r in handed} == {"one", "two"}
    assigned = [e for e in await audit_events(one) if e["type"] == "JobAssigned"]
    assert sorted(e["data"]["jobId"] for e in assigned) == jobs
    for job, node, _ in handed:
        async with two.async_client() as admin:
            view = (await admin.get(f"/api/frontend/jobs/{job}")).json()
        assert (view["status"], view["assignedNode"]) == ("assigned", node)
    verified = shelby_verify(pg_url)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith("ok: ")


async def test_a_log_line_through_one_replica_reaches_a_websocket_on_the_other(
    replicas: Replicas,
) -> None:
    """A websocket on replica two receives each batch of log lines that a node streams
    through replica one, within a second of the POST."""
    one, two = replicas
    async with one.async_client() as admin:
        await new_job(admin, "live")
    node_id, token = await register(one, "streamer")
    async with one.async_client(token) as node:
        job = (await node.get("/api/jobs/poll", params={"nodeId": node_id})).json()["job"]
        attempt = job["attempt"]
        r = await node.post(
            "/api/jobs/ack", json={"jobId": "live", "nodeId": node_id, "attempt": attempt}
        )
        assert r.status_code == 200, r.text
        url = two.url.replace("http://", "ws://") + f"/ws/jobs/live/logs?token={two.admin_token}"
        async with connect(url) as ws:
            first = msgspec.json.decode(await asyncio.wait_for(ws.recv(), 10))
            assert first["type"] in ("log", "status")
            for offset in range(5):
                text = f"epoch {offset} through replica one"
                sent = time.monotonic()
                r = await node.post(
                    "/api/jobs/stream-log",
                    json={
                        "jobId": "live",
                        "nodeId": node_id,
                        "attempt": attempt,
                        "offset": offset,
                        "lines": [{"line": text, "timestamp": 1_700_000_000.0 + offset}],
                    },
                )
                assert r.status_code == 200, r.text
                while True:
                    left = 1.0 - (time.monotonic() - sent)
                    assert left > 0, f"line {offset} did not reach replica two within 1 s"
                    message = msgspec.json.decode(await asyncio.wait_for(ws.recv(), left))
                    if message["type"] == "log" and any(
                        ln["line"] == text for ln in message["lines"]
                    ):
                        break


async def test_killing_a_replica_mid_load_loses_no_acknowledged_write(
    replicas: Replicas, pg_url: str
) -> None:
    """Clients create jobs through both replicas; replica one is SIGKILLed halfway.
    Every create that was answered 200 (by either) is in the views and the log, replica
    two keeps answering throughout, and the log verifies."""
    one, two = replicas
    acknowledged: list[str] = []
    failed_on_two: list[str] = []
    killed = asyncio.Event()

    async def client(server: ServerProcess, name: str, count: int) -> None:
        async with httpx.AsyncClient(
            base_url=server.url, headers=server.admin_headers, timeout=10.0
        ) as admin:
            for i in range(count):
                job = f"{name}-{i}"
                try:
                    r = await admin.post("/api/jobs/create", json={"jobId": job})
                except httpx.TransportError:
                    assert server is one and killed.is_set()
                    return  # the replica died under this request: not acknowledged
                if r.status_code == 200:
                    acknowledged.append(job)
                    if len(acknowledged) == 150:
                        halfway.set()
                elif server is two:
                    failed_on_two.append(f"{job}: {r.status_code} {r.text}")

    halfway = asyncio.Event()

    async def killer() -> None:
        await halfway.wait()
        one.kill()
        killed.set()

    await asyncio.gather(
        *(client(one, f"one{c}", 200) for c in range(4)),
        *(client(two, f"two{c}", 120) for c in range(4)),
        killer(),
    )
    assert killed.is_set() and not one.running
    assert failed_on_two == []
    async with two.async_client() as admin:
        r = await admin.post("/api/jobs/create", json={"jobId": "after-the-kill"})
        assert r.status_code == 200, r.text
        acknowledged.append("after-the-kill")
        for job in acknowledged:
            assert (await admin.get(f"/api/frontend/jobs/{job}")).status_code == 200, job
    created = {e["data"]["jobId"] for e in await audit_events(two) if e["type"] == "JobCreated"}
    assert set(acknowledged) <= created
    assert sum(1 for j in acknowledged if j.startswith("two")) == 480
    through_one = sum(1 for j in acknowledged if j.startswith("one"))
    assert 0 < through_one < 800, "replica one was not killed in the middle of its load"
    verified = shelby_verify(pg_url)
    assert verified.returncode == 0, verified.stderr


def test_both_replicas_sweeping_expire_each_lease_once(
    pg_url: str, server_factory: ServerFactory
) -> None:
    """Both replicas run the lease sweeper; when a node goes silent, each of its jobs
    gets exactly one LeaseExpired and goes back to the queue once."""
    args = ("--db", pg_url, "--sweep-interval", "0.1")
    one = server_factory("one", args=args, lease_seconds=1)
    two = server_factory("two", args=args, lease_seconds=1)

    async def scenario() -> list[dict[str, Any]]:
        async with one.async_client() as admin:
            for i in range(6):
                await new_job(admin, f"job-{i}")
        node_id, token = await register(two, "goes-silent", max_jobs=6)
        async with two.async_client(token) as node:
            for _ in range(6):
                r = await node.get("/api/jobs/poll", params={"nodeId": node_id})
                assert r.json()["job"] is not None
        deadline = time.monotonic() + 20
        while True:
            events = await audit_events(one)
            expired = [e for e in events if e["type"] == "LeaseExpired"]
            if len(expired) >= 6 or time.monotonic() > deadline:
                await asyncio.sleep(1.0)  # time for a second, wrong, expiry to show
                return [e for e in await audit_events(two) if e["type"] == "LeaseExpired"]
            await asyncio.sleep(0.1)

    expired = asyncio.run(scenario())
    assert sorted(e["data"]["jobId"] for e in expired) == [f"job-{i}" for i in range(6)]
    assert all(e["data"]["attempt"] == 1 for e in expired)

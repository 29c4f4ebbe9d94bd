"""Scheduling through a real server: exactly-once assignment under concurrent pollers,
leases, attempts that fence stale agents, and timeouts."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from api._flow import create_job, register, run_to_running
from conftest import ServerFactory, ServerProcess

POLLERS = 10
JOBS = 50


async def _register_all(server: ServerProcess, n: int) -> list[tuple[str, str]]:
    nodes = []
    async with server.async_client(server.join_token) as c:
        for i in range(n):
            r = await c.post(
                "/api/nodes/register",
                json={"nodeId": f"p{i}", "name": f"p{i}", "maxConcurrentJobs": JOBS},
            )
            nodes.append((r.json()["nodeId"], r.json()["token"]))
    return nodes


async def _drain(
    server: ServerProcess, node_id: str, token: str, wait: float | None, stop: asyncio.Event
) -> list[str]:
    """Poll until the queue is empty (or, with wait, until told to stop)."""
    got: list[str] = []
    params: dict[str, Any] = {"nodeId": node_id}
    if wait is not None:
        params["wait"] = wait
    async with server.async_client(token) as c:
        while not stop.is_set():
            r = await c.get("/api/jobs/poll", params=params)
            assert r.status_code == 200, r.text
            job = r.json()["job"]
            if job is None:
                if wait is None:
                    return got
                continue
            got.append(job["jobId"])
    return got


def _assert_each_assigned_once(server: ServerProcess, results: list[list[str]]) -> None:
    counts = Counter(job for got in results for job in got)
    assert len(counts) == JOBS
    assert set(counts.values()) == {1}
    with server.client() as c:
        events = c.get("/api/audit/log", params={"limit": 10000}).json()["events"]
        jobs = c.get("/api/frontend/jobs", params={"limit": 1000}).json()["jobs"]
    assigned = Counter(e["stream"] for e in events if e["type"] == "JobAssigned")
    assert len(assigned) == JOBS and set(assigned.values()) == {1}
    holder = {job: node for node, got in zip(range(POLLERS), results, strict=True) for job in got}
    assert {j["jobId"]: j["assignedNode"] for j in jobs} == {
        job: f"p{node}" for job, node in holder.items()
    }


@pytest.fixture
def unhurried_server(server_factory: ServerFactory) -> ServerProcess:
    """A server whose leases outlast a slow run: the pollers below never heartbeat,
    and a lease that expired mid-test would hand a job out again, rightly."""
    return server_factory("unhurried", lease_seconds=120)


def test_concurrent_pollers_assign_each_job_exactly_once(unhurried_server: ServerProcess) -> None:
    """10 pollers racing over 50 jobs: every job is assigned once, to one node."""
    shelby_server = unhurried_server
    with shelby_server.client() as c:
        for i in range(JOBS):
            create_job(c, f"c{i:02}")

    async def run() -> list[list[str]]:
        nodes = await _register_all(shelby_server, POLLERS)
        stop = asyncio.Event()
        return list(
            await asyncio.gather(*(_drain(shelby_server, n, t, None, stop) for n, t in nodes))
        )

    _assert_each_assigned_once(shelby_server, asyncio.run(run()))


def test_concurrent_long_pollers_assign_each_job_exactly_once(
    unhurried_server: ServerProcess,
) -> None:
    """10 pollers waiting with `wait` while 50 jobs arrive: each is assigned once."""
    shelby_server = unhurried_server

    async def run() -> list[list[str]]:
        nodes = await _register_all(shelby_server, POLLERS)
        stop = asyncio.Event()
        pollers = [asyncio.create_task(_drain(shelby_server, n, t, 2, stop)) for n, t in nodes]
        await asyncio.sleep(0.3)
        async with shelby_server.async_client() as c:
            for i in range(JOBS):
                await c.post("/api/jobs/create", json={"jobId": f"w{i:02}"})
                await c.post("/api/jobs/upload-script", json={"jobId": f"w{i:02}", "script": "x"})
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                r = await c.get("/api/frontend/dashboard")
                if r.json()["jobStats"]["assigned"] == JOBS:
                    break
                await asyncio.sleep(0.1)
        stop.set()
        return list(await asyncio.gather(*pollers))

    _assert_each_assigned_once(shelby_server, asyncio.run(run()))


def _wait_for(server: ServerProcess, job_id: str, pred: Any, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with server.client() as c:
        while True:
            view: dict[str, Any] = c.get(f"/api/frontend/jobs/{job_id}").json()
            if pred(view) or time.monotonic() > deadline:
                return view
            time.sleep(0.1)


def test_lease_expiry_requeues_and_fences_the_stale_node(shelby_server: ServerProcess) -> None:
    """A silent node's job goes back to pending as attempt 2 and to another node; the
    stale node's ack, stream-log, usage and finish for attempt 1 are 409."""
    stale = register(shelby_server, "stale")
    with shelby_server.client() as c:
        create_job(c, "L")
    run_to_running(stale)
    fresh = register(shelby_server, "fresh")
    view = _wait_for(shelby_server, "L", lambda v: v["status"] == "pending", timeout=15)
    # fresh heartbeats while waiting so that its own lease holds
    fresh.heartbeat()
    assert view["status"] == "pending" and view["attempt"] == 2
    job = run_to_running(fresh)
    assert job["attempt"] == 2
    assert stale.stream("L", 0, ["late"], attempt=1).status_code == 409
    assert stale.finish("L", attempt=1).status_code == 409
    assert stale.ack("L", attempt=1).status_code == 409
    assert stale.heartbeat(["L"]).json()["cancelJobs"] == ["L"]
    assert fresh.stream("L", 0, ["mine"], attempt=2).json() == {"accepted": 1, "nextOffset": 1}
    with shelby_server.client() as c:
        types = [p["type"] for p in c.get("/api/frontend/jobs/L").json()["provenance"]]
    assert "LeaseExpired" in types


def test_lease_expiry_fails_the_job_after_max_attempts(shelby_server: ServerProcess) -> None:
    """With maxAttempts 1, a lost lease ends the job failed instead of requeueing it."""
    node = register(shelby_server, "n")
    with shelby_server.client() as c:
        create_job(c, "once", maxAttempts=1)
    run_to_running(node)
    view = _wait_for(shelby_server, "once", lambda v: v["status"] != "running", timeout=15)
    assert view["status"] == "failed"
    assert "lease expired" in view["error"]


def test_assignment_not_acked_within_a_lease_is_requeued(shelby_server: ServerProcess) -> None:
    """A job assigned to a node that keeps heartbeating but never acks goes back."""
    node = register(shelby_server, "n")
    with shelby_server.client() as c:
        create_job(c, "unacked")
    assert node.poll().json()["job"]["jobId"] == "unacked"
    deadline = time.monotonic() + 15
    view: dict[str, Any] = {}
    with shelby_server.client() as c:
        while time.monotonic() < deadline:
            node.heartbeat()
            view = c.get("/api/frontend/jobs/unacked").json()
            if view["status"] == "pending":
                break
            time.sleep(0.3)
    assert view["status"] == "pending" and view["attempt"] == 2


def test_server_ends_a_job_past_its_timeout(server_factory: ServerFactory) -> None:
    """A job running past timeoutMinutes plus the grace is ended failed with 'timeout'."""
    server = server_factory(
        "timeouts",
        lease_seconds=30,
        args=("--timeout-grace-seconds", "0.5", "--sweep-interval", "0.2"),
    )
    node = register(server, "n")
    with server.client() as c:
        create_job(c, "slow", timeoutMinutes=0.02)  # 1.2 s
    run_to_running(node)
    view = _wait_for(server, "slow", lambda v: v["status"] != "running", timeout=15)
    assert view["status"] == "failed" and view["error"] == "timeout"
    with server.client() as c:
        types = [p["type"] for p in c.get("/api/frontend/jobs/slow").json()["provenance"]]
    assert types[-2:] == ["JobTimedOut", "JobFailed"]
    assert node.finish("slow", status="failed", error="timeout").status_code == 409


def test_agent_reporting_timeout_first_wins(server_factory: ServerFactory) -> None:
    """Within the grace the agent's own report is the one recorded."""
    server = server_factory(
        "grace", lease_seconds=30, args=("--timeout-grace-seconds", "30", "--sweep-interval", "0.2")
    )
    node = register(server, "n")
    with server.client() as c:
        create_job(c, "own", timeoutMinutes=0.01)
    run_to_running(node)
    time.sleep(1.0)
    r = node.finish("own", status="failed", error="timeout", exitCode=-15)
    assert r.json() == {"jobId": "own", "status": "failed"}
    with server.client() as c:
        types = [p["type"] for p in c.get("/api/frontend/jobs/own").json()["provenance"]]
    assert "JobTimedOut" not in types


def test_restart_after_sigkill_keeps_serving(shelby_server: ServerProcess) -> None:
    """After a SIGKILL and restart on the same db, the job and node tokens still work."""
    node = register(shelby_server, "n")
    with shelby_server.client() as c:
        create_job(c, "k")
    job = run_to_running(node)
    shelby_server.kill()
    shelby_server.start()
    assert node.heartbeat(["k"]).json() == {"ok": True, "cancelJobs": []}
    assert node.finish("k", attempt=job["attempt"]).status_code == 200
    with httpx.Client(base_url=shelby_server.url, headers=shelby_server.admin_headers) as c:
        assert c.get("/api/frontend/jobs/k").json()["status"] == "finished"

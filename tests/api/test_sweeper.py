"""The lease sweeper with a manual clock over a real SQLite store: deterministic
leases and timeouts, with no sleeping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shelby.clock import ManualClock
from shelby.domain import JOBS, NODES
from shelby.domain.jobs import AckJob, AssignJob, CreateJob, UploadScript
from shelby.domain.nodes import Heartbeat, RegisterNode
from shelby.events.types import job_stream, node_stream
from shelby.service import Service
from shelby.settings import Settings
from shelby.sweeper import LeaseSweeper, Sweep

LEASE = 60.0


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    settings = Settings(db=str(tmp_path / "s.db"), lease_seconds=LEASE, timeout_grace_seconds=30)
    svc = Service(settings, clock=ManualClock())
    await svc.start()
    yield svc
    await svc.close()


async def _running(svc: Service, job_id: str, node_id: str, **create: object) -> None:
    h = svc.handler
    await h.handle(
        node_stream(node_id),
        NODES,
        RegisterNode(node_id=node_id, name=node_id, token_hash="h" + node_id),
    )
    await h.handle(job_stream(job_id), JOBS, CreateJob(job_id=job_id, **create))  # type: ignore[arg-type]
    await h.handle(job_stream(job_id), JOBS, UploadScript(job_id=job_id, script="x"))
    await h.handle(job_stream(job_id), JOBS, AssignJob(job_id=job_id, node_id=node_id))
    await h.handle(job_stream(job_id), JOBS, AckJob(job_id=job_id, node_id=node_id))


async def _status(svc: Service, job_id: str) -> tuple[str, int]:
    row = await svc.store.fetchone("SELECT status, attempt FROM jobs WHERE job_id = ?", (job_id,))
    assert row is not None
    return row[0], row[1]


async def test_silent_node_loses_its_lease_only_after_the_lease(service: Service) -> None:
    """A job stays while its node is within the lease and is requeued just past it."""
    clock = service.clock
    assert isinstance(clock, ManualClock)
    sweeper = LeaseSweeper(service)
    clock.advance(LEASE)  # past the start-up grace
    await _running(service, "j", "n")
    clock.advance(LEASE - 1)
    assert (await sweeper.sweep_once()).expired == []
    clock.advance(2)
    assert (await sweeper.sweep_once()).expired == ["j"]
    assert await _status(service, "j") == ("pending", 2)
    assert (await sweeper.sweep_once()).expired == []  # nothing more to do


async def test_heartbeats_keep_the_lease(service: Service) -> None:
    """A node that heartbeats keeps its jobs however long they run (up to the timeout)."""
    clock = service.clock
    assert isinstance(clock, ManualClock)
    sweeper = LeaseSweeper(service)
    clock.advance(LEASE)
    await _running(service, "j", "n", timeout_minutes=600.0)
    for _ in range(10):
        clock.advance(LEASE / 2)
        await service.handler.handle(node_stream("n"), NODES, Heartbeat(node_id="n"))
        assert await sweeper.sweep_once() == Sweep([], [])
    assert await _status(service, "j") == ("running", 1)


async def test_no_lease_expires_within_a_lease_of_start(service: Service) -> None:
    """After a restart nodes get one lease to heartbeat before their jobs are taken."""
    clock = service.clock
    assert isinstance(clock, ManualClock)
    await _running(service, "j", "n")
    clock.advance(LEASE * 5)
    sweeper = LeaseSweeper(service)  # started now: the nodes look silent
    assert (await sweeper.sweep_once()).expired == []
    clock.advance(LEASE)
    assert (await sweeper.sweep_once()).expired == ["j"]


async def test_attempts_run_out_into_failed(service: Service) -> None:
    """The last allowed attempt's lost lease fails the job."""
    clock = service.clock
    assert isinstance(clock, ManualClock)
    sweeper = LeaseSweeper(service)
    clock.advance(LEASE)
    await _running(service, "j", "n", max_attempts=1)
    clock.advance(LEASE + 1)
    await sweeper.sweep_once()
    assert await _status(service, "j") == ("failed", 1)


async def test_timeout_waits_for_the_grace(service: Service) -> None:
    """A job past timeoutMinutes is ended only after the grace, with JobTimedOut."""
    clock = service.clock
    assert isinstance(clock, ManualClock)
    sweeper = LeaseSweeper(service)
    await _running(service, "t", "n", timeout_minutes=1.0)
    for _ in range(3):  # 90 s: past the timeout, within the grace; heartbeats continue
        clock.advance(30)
        await service.handler.handle(node_stream("n"), NODES, Heartbeat(node_id="n"))
    assert (await sweeper.sweep_once()).timed_out == []
    clock.advance(1)
    await service.handler.handle(node_stream("n"), NODES, Heartbeat(node_id="n"))
    assert (await sweeper.sweep_once()).timed_out == ["t"]
    assert await _status(service, "t") == ("failed", 1)
    events = await service.store.read_stream(job_stream("t"))
    assert [r.type for r in events][-2:] == ["JobTimedOut", "JobFailed"]

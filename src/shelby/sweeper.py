"""The lease sweeper: a reaction that reads the projections and issues commands.

It looks for attempts whose node went silent for a lease, attempts assigned but not
acked within a lease (the poll's answer was lost), and attempts that outlived their
job's timeout plus a grace (the agent stops a job at its timeout and reports it; the
server steps in only if it does not). Every decision is the decider's: a command for
an attempt that moved on meanwhile appends nothing.
"""

from __future__ import annotations

import msgspec
import structlog

from shelby.clock import Clock
from shelby.domain import JOBS, DomainError
from shelby.domain.jobs import ExpireLease, TimeOutJob
from shelby.events.types import job_stream
from shelby.periodic import Periodic
from shelby.service import Service

__all__ = ["LeaseSweeper", "Sweep"]

log = structlog.get_logger("shelby.sweeper")


class Sweep(msgspec.Struct, frozen=True):
    expired: list[str]  # job ids whose lease was expired
    timed_out: list[str]


class LeaseSweeper:
    def __init__(
        self,
        service: Service,
        *,
        interval: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.service = service
        self.clock = clock or service.clock
        self.interval = interval or service.settings.effective_sweep_interval
        # After a restart every node looks silent: give them one lease to heartbeat.
        self.started_at = self.clock.now()
        self._periodic = Periodic("lease-sweeper", "sweep", self.sweep_once, self.interval)

    async def sweep_once(self) -> Sweep:
        store = self.service.store
        settings = self.service.settings
        now = self.clock.now()
        lease = settings.lease_seconds
        expired: list[str] = []
        if now - self.started_at >= lease:
            cutoff = now - lease
            rows = await store.fetchall(
                "SELECT j.job_id, j.assigned_node, j.attempt,"
                " j.status = 'assigned' AND j.assigned_at < ? FROM jobs j"
                " LEFT JOIN nodes n ON n.node_id = j.assigned_node"
                " WHERE j.status IN ('assigned', 'running')"
                " AND (n.last_seen IS NULL OR n.last_seen < ?"
                "      OR (j.status = 'assigned' AND j.assigned_at < ?))",
                (cutoff, cutoff, cutoff),
            )
            for job_id, node_id, attempt, never_acked in rows:
                if not never_acked and await self._heard_since(node_id, cutoff):
                    continue  # the node heartbeated while this sweep ran
                if await self._issue(
                    job_id, ExpireLease(job_id=job_id, node_id=node_id, attempt=attempt)
                ):
                    expired.append(job_id)
        timed_out: list[str] = []
        rows = await store.fetchall(
            "SELECT job_id, attempt FROM jobs WHERE status IN ('assigned', 'running')"
            " AND COALESCE(started_at, assigned_at) + timeout_minutes * 60 + ? < ?",
            (settings.timeout_grace_seconds, now),
        )
        for job_id, attempt in rows:
            if await self._issue(job_id, TimeOutJob(job_id=job_id, attempt=attempt)):
                timed_out.append(job_id)
        if expired or timed_out:
            log.info("swept", expired=expired, timed_out=timed_out)
        return Sweep(expired, timed_out)

    async def _heard_since(self, node_id: str, cutoff: float) -> bool:
        """The decider cannot see heartbeats (they are on the node's stream), so the
        node's last sign of life is read again right before its lease is expired."""
        row = await self.service.store.fetchone(
            "SELECT last_seen FROM nodes WHERE node_id = ?", (node_id,)
        )
        return row is not None and row[0] >= cutoff

    async def _issue(self, job_id: str, command: ExpireLease | TimeOutJob) -> bool:
        try:
            outcome = await self.service.handler.handle(job_stream(job_id), JOBS, command)
        except DomainError:
            return False
        return bool(outcome.recorded)

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

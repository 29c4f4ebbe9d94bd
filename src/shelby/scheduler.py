"""Handing jobs to nodes: the oldest runnable job that the polling node can take.

Correctness comes from the log, not from locks: an assignment is a ``JobAssigned``
appended with the version the decision was based on, so of any number of pollers
(in this process or in other replicas) racing for one job exactly one append wins;
the others see ``Conflict`` and move on to the next candidate. The in-process lock
per node and the set of jobs being claimed only save wasted attempts, and keep one
node from overrunning its ``maxConcurrentJobs`` with parallel polls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec

from shelby.domain import JOBS, Conflict, NotFound
from shelby.domain.jobs import AssignJob
from shelby.domain.matching import node_satisfies
from shelby.events.types import Resources, job_stream
from shelby.projections._sql import from_json
from shelby.service import Service

__all__ = ["Assigned", "Scheduler"]

# Most polls take one of the first few pending jobs; pages grow when they do not.
CANDIDATES_PAGE = 16
MAX_PAGE = 1024

_resources_decoder = msgspec.json.Decoder(Resources)


class Assigned(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The job as its node needs it, read back from the jobs projection."""

    job_id: str
    dataset_name: str | None
    dataset_url: str | None
    dataset_hash: str | None
    runtime_minutes_estimate: float | None
    meta: dict[str, Any]
    attempt: int
    entrypoint: str | None
    script_hash: str | None
    timeout_minutes: float


class Scheduler:
    def __init__(self, service: Service) -> None:
        self.service = service
        self._node_locks: dict[str, asyncio.Lock] = {}
        self._claiming: set[str] = set()

    @asynccontextmanager
    async def _node_lock(self, node_id: str) -> AsyncIterator[None]:
        lock = self._node_locks.setdefault(node_id, asyncio.Lock())
        async with lock:
            yield

    async def poll(self, node_id: str, wait: float = 0.0) -> Assigned | None:
        """Assign a job to ``node_id``, waiting up to ``wait`` seconds for one. The wait
        sleeps on the service's work signal, woken by commits that may free a job."""
        deadline = time.monotonic() + wait
        while True:
            signal = self.service.work.current()  # before looking: see WorkSignal
            found = await self.assign_next(node_id)
            remaining = deadline - time.monotonic()
            if found is not None or remaining <= 0 or self.service.work.closed:
                return found
            try:
                await asyncio.wait_for(signal.wait(), remaining)
            except TimeoutError:
                return None

    async def assign_next(self, node_id: str) -> Assigned | None:
        store = self.service.store
        async with self._node_lock(node_id):
            profile = self.service.node_profiles.get(node_id)
            if profile is None:
                raise NotFound(f"node {node_id!r} is not registered")
            held = await store.fetchone(
                "SELECT count(*) FROM jobs WHERE assigned_node = ?"
                " AND status IN ('assigned', 'running')",
                (node_id,),
            )
            if held is not None and held[0] >= profile.max_concurrent_jobs:
                return None
            after = -1
            page = CANDIDATES_PAGE
            while True:
                rows = await store.fetchall(
                    "SELECT job_id, resources, labels, created_seq FROM jobs"
                    " WHERE status = 'pending' AND script_hash IS NOT NULL AND created_seq > ?"
                    " ORDER BY created_seq LIMIT ?",
                    (after, page),
                )
                if not rows:
                    return None
                for job_id, resources_json, labels_json, _seq in rows:
                    if job_id in self._claiming:
                        continue
                    if (resources_json is not None or labels_json != "{}") and not (
                        node_satisfies(
                            None
                            if resources_json is None
                            else _resources_decoder.decode(resources_json),
                            from_json(labels_json),
                            profile.specs,
                            profile.labels,
                        )
                    ):
                        continue
                    if await self._claim(job_id, node_id):
                        return await self._assigned(job_id)
                after = rows[-1][3]
                page = min(page * 4, MAX_PAGE)  # a long run of jobs this node cannot take

    async def _claim(self, job_id: str, node_id: str) -> bool:
        self._claiming.add(job_id)
        try:
            await self.service.handler.handle(
                job_stream(job_id), JOBS, AssignJob(job_id=job_id, node_id=node_id)
            )
        except (Conflict, NotFound):
            return False  # someone else took it, or it was deleted meanwhile
        finally:
            self._claiming.discard(job_id)
        return True

    async def _assigned(self, job_id: str) -> Assigned | None:
        row = await self.service.store.fetchone(
            "SELECT job_id, dataset_name, dataset_url, dataset_hash, runtime_minutes_estimate,"
            " meta, attempt, entrypoint, script_hash, timeout_minutes FROM jobs WHERE job_id = ?",
            (job_id,),
        )
        if row is None:
            return None
        return Assigned(
            job_id=row[0],
            dataset_name=row[1],
            dataset_url=row[2],
            dataset_hash=row[3],
            runtime_minutes_estimate=row[4],
            meta=from_json(row[5]),
            attempt=row[6],
            entrypoint=row[7],
            script_hash=row[8],
            timeout_minutes=row[9],
        )

"""The command handler against a real SQLite store: caching, conflicts, stale replicas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shelby.clock import ManualClock
from shelby.domain import JOBS, NODES, CommandHandler, Conflict
from shelby.domain.jobs import AckJob, AssignJob, CreateJob, FinishJob, JobStatus, UploadScript
from shelby.domain.nodes import Heartbeat, RegisterNode
from shelby.events.sqlite import SQLiteEventStore
from shelby.events.types import job_stream, node_stream
from shelby.projections import all_projections

STREAM = job_stream("j")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteEventStore]:
    s = SQLiteEventStore(tmp_path / "log.db", all_projections())
    await s.open()
    yield s
    await s.close()


async def test_a_handler_with_a_stale_cache_accepts_what_the_log_allows(
    store: SQLiteEventStore,
) -> None:
    """Two handlers on one log (two replicas): each decides on what the log holds, not
    on a cache the other one made stale, for acceptances, refusals and no-ops alike."""
    a = CommandHandler(store, ManualClock())
    b = CommandHandler(store, ManualClock())
    await a.handle(STREAM, JOBS, CreateJob(job_id="j"))
    await b.handle(STREAM, JOBS, UploadScript(job_id="j", script="print(1)"))
    # a's cache says "no script": assigning must still succeed.
    outcome = await a.handle(STREAM, JOBS, AssignJob(job_id="j", node_id="n"))
    assert outcome.state.status is JobStatus.ASSIGNED
    # b's cache says "pending": acking for the node that holds it must succeed.
    outcome = await b.handle(STREAM, JOBS, AckJob(job_id="j", node_id="n", attempt=1))
    assert outcome.state.status is JobStatus.RUNNING
    finish = FinishJob(job_id="j", node_id="n", attempt=1, status="finished", model_hash="m")
    await a.handle(STREAM, JOBS, finish)
    # The same finish through the other replica is a repeat (nothing appended), not a 409.
    repeat = await b.handle(STREAM, JOBS, finish)
    assert repeat.recorded == []
    assert repeat.state.status is JobStatus.FINISHED


async def test_a_real_refusal_still_refuses_after_the_check(store: SQLiteEventStore) -> None:
    """A command the log really refuses is refused, and nothing is appended."""
    a = CommandHandler(store, ManualClock())
    await a.handle(STREAM, JOBS, CreateJob(job_id="j"))
    before = (await store.head()).seq
    with pytest.raises(Conflict):
        await a.handle(STREAM, JOBS, AssignJob(job_id="j", node_id="n"))  # no script yet
    assert (await store.head()).seq == before


async def test_commands_on_one_stream_queue_and_leave_no_lock_behind(
    store: SQLiteEventStore,
) -> None:
    """Concurrent commands on one stream take turns (none hits a version conflict), a
    waiter cancelled in the queue leaves, and once all are done no lock is kept."""
    handler = CommandHandler(store, ManualClock())
    stream = node_stream("n")
    await handler.handle(stream, NODES, RegisterNode(node_id="n", name="n", token_hash="h"))
    appends = 0
    real_append = store.append

    async def counted_append(*args: Any, **kwargs: Any) -> Any:
        nonlocal appends
        appends += 1
        return await real_append(*args, **kwargs)

    store.append = counted_append  # type: ignore[method-assign]
    beats = [
        asyncio.create_task(handler.handle(stream, NODES, Heartbeat(node_id="n")))
        for _ in range(20)
    ]
    await asyncio.sleep(0)  # all of them queued on the stream's lock
    beats[10].cancel()
    outcomes = await asyncio.gather(*beats, return_exceptions=True)
    assert isinstance(outcomes[10], asyncio.CancelledError)
    versions = sorted(o.recorded[0].version for o in outcomes if not isinstance(o, BaseException))
    assert versions == list(range(2, 21))  # 19 heartbeats after the registration, in turn
    assert appends == 19  # each appended once: none raced another into a version conflict
    assert handler._locks._locks == {}

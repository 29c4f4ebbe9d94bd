"""The realtime hub against a real SQLite store: one subscription, fan-out from the
appends themselves, bounded queues, coalesced snapshots."""

from __future__ import annotations

import asyncio
import time
import types
import typing
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from shelby.api.realtime import Hub, LogFollower, SnapshotFeed
from shelby.domain import JOBS
from shelby.domain.jobs import (
    AckJob,
    AppendLogLines,
    AssignJob,
    CreateJob,
    FinishJob,
    ReleaseJob,
    RestartJob,
    UploadScript,
)
from shelby.events.store import Recorded
from shelby.events.types import EVENT_TYPES, LogLine, job_stream, node_stream
from shelby.service import Service
from shelby.settings import Settings


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    svc = Service(Settings(db=str(tmp_path / "shelby.db"), admin_token="a", join_token="j"))
    await svc.start()
    yield svc
    await svc.close()


async def _job(service: Service, job_id: str, command: object) -> None:
    await service.handler.handle(job_stream(job_id), JOBS, command)  # type: ignore[arg-type]


async def _running_job(service: Service, job_id: str = "j1", node_id: str = "n1") -> None:
    await _job(service, job_id, CreateJob(job_id=job_id, dataset_name="d"))
    await _job(service, job_id, UploadScript(job_id=job_id, script="print(1)"))
    await _job(service, job_id, AssignJob(job_id=job_id, node_id=node_id))
    await _job(service, job_id, AckJob(job_id=job_id, node_id=node_id))


async def _append(service: Service, lines: list[str], *, stream: str = "stdout") -> None:
    await _job(
        service,
        "j1",
        AppendLogLines(
            job_id="j1",
            node_id="n1",
            attempt=None,
            offset=None,
            lines=[LogLine(line=text, timestamp=time.time(), stream=stream) for text in lines],  # type: ignore[arg-type]
        ),
    )


def _drain(follower: LogFollower) -> list[object]:
    items = []
    while not follower.queue.empty():
        items.append(follower.queue.get_nowait())
    return items


async def test_one_append_is_one_message_shared_by_every_follower(service: Service) -> None:
    """An append becomes one message, encoded once, offered to each follower of its job."""
    await _running_job(service)
    hub = Hub(service)
    followers = [hub.follow("j1") for _ in range(3)]
    other = hub.follow("some-other-job")
    await _append(service, ["a", "b", "c"], stream="stderr")
    messages = [_drain(f) for f in followers]
    assert all(len(m) == 1 for m in messages)
    texts = [m[0].text for m in messages]  # type: ignore[attr-defined]
    assert texts[0] is texts[1] is texts[2]
    decoded = msgspec.json.decode(texts[0])
    assert decoded["type"] == "log"
    assert [(ln["offset"], ln["line"], ln["stream"]) for ln in decoded["lines"]] == [
        (0, "a", "stderr"),
        (1, "b", "stderr"),
        (2, "c", "stderr"),
    ]
    assert _drain(other) == []
    hub.close()


async def test_a_slow_follower_is_dropped_and_the_others_get_everything(
    service: Service,
) -> None:
    """A follower that stops reading is cut off at its queue's bound; the rest lose nothing."""
    await _running_job(service)
    hub = Hub(service, log_queue=4)
    slow = hub.follow("j1")
    fast = hub.follow("j1")
    received: list[int] = []
    for i in range(10):
        await _append(service, [f"line {i}"])
        for item in _drain(fast):
            received.extend(ln.offset for ln in item.lines)  # type: ignore[union-attr]
    assert received == list(range(10))
    assert slow.dropped
    assert _drain(slow) == [None]  # only the order to close is left
    hub.close()


async def test_status_messages_follow_the_job_into_its_next_attempt(service: Service) -> None:
    """Followers hear each transition with its attempt, restart included."""
    await _job(service, "j1", CreateJob(job_id="j1"))
    await _job(service, "j1", UploadScript(job_id="j1", script="print(1)"))
    hub = Hub(service)
    follower = hub.follow("j1")
    hub.known_status("j1", "pending", 1)
    await _job(service, "j1", AssignJob(job_id="j1", node_id="n1"))
    await _job(service, "j1", AckJob(job_id="j1", node_id="n1"))
    await _job(
        service,
        "j1",
        FinishJob(job_id="j1", node_id="n1", attempt=1, status="finished", model_hash=None),
    )
    await _job(service, "j1", RestartJob(job_id="j1"))
    statuses = [
        (m.status, m.attempt)  # type: ignore[union-attr]
        for m in _drain(follower)
    ]
    assert statuses == [("assigned", 1), ("running", 1), ("finished", 1), ("pending", 2)]
    hub.close()


async def test_dashboard_snapshots_are_coalesced(service: Service) -> None:
    """A burst of changes gives a few snapshots, at most one per interval, ending on the
    latest state."""
    hub = Hub(service)
    slot = hub.dashboard.join()
    first = msgspec.json.decode(await slot.take())
    assert first["type"] == "dashboard"
    assert first["data"]["jobStats"]["total"] == 0
    started = time.monotonic()
    for i in range(40):
        await _job(service, f"job{i}", CreateJob(job_id=f"job{i}"))
    received = 0
    while True:
        snapshot = msgspec.json.decode(await asyncio.wait_for(slot.take(), 10))
        received += 1
        if snapshot["data"]["jobStats"]["total"] == 40:
            break
    elapsed = time.monotonic() - started
    # The interval is a floor the feed sleeps between builds, so this bound holds
    # however slow the machine is.
    assert received <= elapsed / 0.25 + 2
    assert hub.dashboard.builds <= elapsed / 0.25 + 2
    hub.close()


async def test_a_slow_snapshot_reader_skips_to_the_newest() -> None:
    """A reader that has not taken a snapshot gets only the newest one next."""
    version = 0
    built = asyncio.Event()

    async def build() -> int:
        built.set()
        return version

    feed = SnapshotFeed("test", build, interval=0.01, refresh=60)
    slot = feed.join()
    assert msgspec.json.decode(await slot.take())["data"] == 0
    for version in range(1, 4):  # noqa: B007 - build() reads it
        built.clear()
        feed.touch()
        await asyncio.wait_for(built.wait(), 5)
    assert feed.builds == 4
    assert msgspec.json.decode(await slot.take())["data"] == 3
    feed.leave(slot)
    assert feed.readers == 0


def _sample(tp: Any) -> Any:
    """A value of type ``tp``, for building any event with its required fields."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return None if type(None) in typing.get_args(tp) else _sample(typing.get_args(tp)[0])
    if origin is list or tp is list:
        return []
    if origin is dict or tp is dict:
        return {}
    if origin is typing.Literal:
        return typing.get_args(tp)[0]
    return {str: "j1", int: 1, float: 1.0, bool: True}[tp]


async def test_the_hub_knows_every_event_type(service: Service) -> None:
    """Each event type of the log is dispatched by the hub: a new type fails here first
    rather than in a running server's subscriber."""
    hub = Hub(service)
    hub.follow("j1")
    for name, cls in EVENT_TYPES.items():
        hints = typing.get_type_hints(cls)
        fields = msgspec.structs.fields(cls)
        event = cls(**{f.name: _sample(hints[f.name]) for f in fields if f.required})
        stream = node_stream("j1") if name.startswith("Node") else job_stream("j1")
        rec = Recorded(
            seq=1,
            stream=stream,
            version=1,
            type=name,
            timestamp=0.0,
            data="{}",
            prev_hash="0" * 64,
            hash="0" * 64,
            event=event,
        )
        hub._on_batch([rec])
    hub.close()


async def test_status_messages_follow_a_released_job_into_its_next_attempt(
    service: Service,
) -> None:
    """A release is heard as pending on the next attempt, and a release of the last
    attempt as failed on that attempt."""
    await _job(service, "j1", CreateJob(job_id="j1", max_attempts=2))
    await _job(service, "j1", UploadScript(job_id="j1", script="print(1)"))
    hub = Hub(service)
    follower = hub.follow("j1")
    hub.known_status("j1", "pending", 1)
    for attempt in (1, 2):
        await _job(service, "j1", AssignJob(job_id="j1", node_id="n1"))
        await _job(
            service,
            "j1",
            ReleaseJob(job_id="j1", node_id="n1", attempt=attempt, reason="shutting down"),
        )
    statuses = [
        (m.status, m.attempt)  # type: ignore[union-attr]
        for m in _drain(follower)
    ]
    # The last release says no status of its own (its JobFailed follows in the same
    # batch), so its message repeats the known one, as a lease lost on the last attempt.
    assert statuses == [
        ("assigned", 1),
        ("pending", 2),
        ("assigned", 2),
        ("assigned", 2),
        ("failed", 2),
    ]
    hub.close()

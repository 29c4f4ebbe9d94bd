"""Optimistic concurrency: of N appends expecting the same version, exactly one wins."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shelby.events.store import ConcurrencyError, Recorded
from shelby.events.types import Event, JobCreated, NodeHeartbeat, NodeRegistered, node_stream
from shelby.events.verify import verify_store
from shelby.projections import all_projections

from ._helpers import assert_chain, opened, raw_rows

RACE = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@RACE
@given(n=st.integers(min_value=2, max_value=64), before=st.integers(min_value=0, max_value=3))
def test_one_of_n_appends_at_the_same_version_wins(n: int, before: int) -> None:
    """N tasks append to one stream at the version it is at: one succeeds, the others
    get ConcurrencyError, and the stream grows by exactly one event."""
    stream = node_stream("n1")

    async def run(path: Path) -> list[list[Recorded] | BaseException]:
        async with opened(path, all_projections()) as store:
            await store.append(
                stream,
                [NodeRegistered(node_id="n1", name="n1", token_hash="t")],
                expected_version=0,
                timestamp=1.0,
            )
            for v in range(1, before + 1):
                await store.append(
                    stream, [NodeHeartbeat(node_id="n1")], expected_version=v, timestamp=2.0
                )
            version = before + 1
            results = await asyncio.gather(
                *(
                    store.append(
                        stream,
                        [NodeHeartbeat(node_id="n1", specs={"task": k})],
                        expected_version=version,
                        timestamp=3.0,
                    )
                    for k in range(n)
                ),
                return_exceptions=True,
            )
            assert len(await store.read_stream(stream)) == version + 1
            assert (await verify_store(store)).ok
            return results

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.db"
        results = asyncio.run(run(path))
        rows = raw_rows(path)
    won = [r for r in results if isinstance(r, list)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1
    assert len(lost) == n - 1
    assert all(isinstance(e, ConcurrencyError) for e in lost), lost
    assert all(e.expected_version == before + 1 for e in lost if isinstance(e, ConcurrencyError))
    assert [r[2] for r in rows if r[1] == stream] == list(range(1, before + 3))
    assert rows[-1][7] == won[0][0].hash
    assert_chain(rows)


@RACE
@given(n=st.integers(min_value=2, max_value=64))
def test_concurrent_appends_to_distinct_streams_all_succeed(n: int) -> None:
    """N tasks appending to their own new streams all succeed, gap-free and chained."""

    async def run(path: Path) -> list[list[Recorded]]:
        async with opened(path, all_projections()) as store:
            return await asyncio.gather(
                *(
                    store.append(
                        node_stream(f"n{k}"),
                        [NodeRegistered(node_id=f"n{k}", name="x", token_hash=f"t{k}")],
                        expected_version=0,
                        timestamp=1.0,
                    )
                    for k in range(n)
                )
            )

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.db"
        results = asyncio.run(run(path))
        rows = raw_rows(path)
    assert sorted(r[0].seq for r in results) == list(range(1, n + 1))
    assert len(rows) == n
    assert_chain(rows)


def test_stale_expected_version_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    """An append expecting a version the stream has passed is refused; nothing is kept."""
    stream = node_stream("n1")

    async def run() -> None:
        async with opened(tmp_path / "log.db", all_projections()) as store:
            await store.append(
                stream,
                [NodeRegistered(node_id="n1", name="n1", token_hash="t")],
                expected_version=0,
                timestamp=1.0,
            )
            for expected in (0, 2, 5):
                try:
                    await store.append(
                        stream,
                        [NodeHeartbeat(node_id="n1")],
                        expected_version=expected,
                        timestamp=2.0,
                    )
                except ConcurrencyError as exc:
                    assert exc.stream == stream
                    assert exc.expected_version == expected
                else:
                    raise AssertionError(f"append at version {expected} was accepted")
            assert (await store.head()).seq == 1

    asyncio.run(run())
    assert len(raw_rows(tmp_path / "log.db")) == 1


def test_an_append_that_cannot_be_encoded_fails_alone(tmp_path: Path) -> None:
    """An event whose text cannot be encoded fails its own append only: the appends
    batched with it and the next one are committed."""
    bad = JobCreated(job_id="bad", meta={"x": "\ud800"})  # a lone surrogate

    async def run() -> list[object]:
        async with opened(tmp_path / "log.db", all_projections()) as store:

            async def put(stream: str, event: Event) -> object:
                try:
                    return await store.append(stream, [event], expected_version=0, timestamp=1.0)
                except Exception as exc:
                    return exc

            batch = await asyncio.gather(
                put("job-a", JobCreated(job_id="a")),
                put("job-bad", bad),
                put("job-c", JobCreated(job_id="c")),
            )
            after = await put("job-d", JobCreated(job_id="d"))
            return [*batch, after]

    a, failed, c, d = asyncio.run(run())
    assert isinstance(failed, Exception)
    assert all(isinstance(r, list) for r in (a, c, d)), (a, c, d)

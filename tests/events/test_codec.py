"""The README's byte layout recomputes every stored hash.

The recipe is written out here with ``json`` and ``hashlib`` only (``_helpers``), as an
auditor would, never by calling ``shelby.events.codec``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shelby.events.types import (
    JobCreated,
    LogLine,
    LogLinesAppended,
    NodeHeartbeat,
    job_stream,
    node_stream,
)

from ._helpers import CANONICAL, assert_chain, floats, json_values, opened, raw_rows

timestamps = st.floats(min_value=0, max_value=4e9, allow_nan=False) | st.integers(0, 4_000_000_000)
ids = st.text(min_size=1, max_size=8)


def store_and_read(appends: list[tuple[str, list[Any], float]]) -> list[tuple[Any, ...]]:
    """Append each ``(stream, events, timestamp)`` to a new log; its raw rows."""

    async def run(path: Path) -> None:
        async with opened(path) as store:
            for stream, events, ts in appends:
                version = len(await store.read_stream(stream))
                await store.append(stream, events, expected_version=version, timestamp=ts)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.db"
        asyncio.run(run(path))
        return raw_rows(path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    job_id=ids,
    meta=st.dictionaries(st.text(max_size=8), json_values, max_size=5),
    labels=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    ts=timestamps,
)
def test_recipe_recomputes_the_hash_of_a_created_job(
    job_id: str, meta: dict[str, Any], labels: dict[str, str], ts: float
) -> None:
    """Arbitrary JSON in ``meta``, any unicode and any float: the README's recipe gives the
    stored hash, and ``data`` is the canonical text of the event's fields."""
    event = JobCreated(job_id=job_id, meta=meta, labels=labels, runtime_minutes_estimate=1e-5)
    rows = store_and_read([(job_stream(job_id), [event], ts)])
    assert_chain(rows)
    ((seq, stream, version, type_, timestamp, data, _prev, _hash),) = rows
    assert (seq, stream, version, type_) == (1, f"job-{job_id}", 1, "JobCreated")
    assert timestamp == float(ts)
    fields = json.loads(data)
    assert data == json.dumps(fields, **CANONICAL)  # type: ignore[arg-type]
    assert fields["type"] == "JobCreated"
    assert fields["jobId"] == job_id
    assert fields["meta"] == meta
    assert fields["labels"] == labels
    assert fields["runtimeMinutesEstimate"] == 1e-5
    assert "1e-05" in data


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=st.lists(
        st.tuples(
            st.sampled_from(["n1", "nø", "n-☃"]),
            st.lists(st.text(max_size=30), min_size=1, max_size=3),
            st.dictionaries(st.text(max_size=5), floats, max_size=3),
            timestamps,
        ),
        min_size=1,
        max_size=8,
    )
)
def test_recipe_recomputes_a_chain_of_mixed_events(
    batches: list[tuple[str, list[str], dict[str, float], float]],
) -> None:
    """A chain of heartbeats and log batches, several events an append, recomputes
    link by link from the genesis hash."""
    appends: list[tuple[str, list[Any], float]] = []
    for node, texts, specs, ts in batches:
        appends.append((node_stream(node), [NodeHeartbeat(node_id=node, specs=specs)], ts))
        lines = [LogLine(line=t, timestamp=ts) for t in texts]
        appends.append(
            (
                job_stream(node),
                [
                    LogLinesAppended(job_id=node, node_id=node, attempt=1, offset=0, lines=lines),
                    NodeHeartbeat(node_id=node, specs=specs),
                ],
                ts,
            )
        )
    rows = store_and_read(appends)
    assert len(rows) == 3 * len(batches)
    assert_chain(rows)
    for row in rows:
        assert row[5] == json.dumps(json.loads(row[5]), **CANONICAL)  # type: ignore[arg-type]


def test_recipe_matches_a_hash_worked_out_by_hand() -> None:
    """One event's hash, from its literal canonical text, equals the stored one."""
    rows = store_and_read([("job-x", [JobCreated(job_id="x", meta={"lr": 1e-5})], 1.5)])
    ((_seq, _stream, _version, _type, _ts, data, prev, stored),) = rows
    canonical = (
        '{"data":' + data + ',"seq":1,"stream":"job-x","timestamp":1.5,'
        '"type":"JobCreated","version":1}'
    )
    assert '"meta":{"lr":1e-05}' in data
    assert prev == "0" * 64
    assert stored == hashlib.sha256(bytes(32) + canonical.encode("utf-8")).hexdigest()

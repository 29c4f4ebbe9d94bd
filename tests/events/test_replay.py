"""What a replay decodes: ``replay_records`` keeps the rows its projections apply, and
only the last of a node's heartbeats in a chunk. That the projections it rebuilds equal
the live ones is the property in ``test_store_contract.py``; this pins what is left out."""

from __future__ import annotations

import sqlite3

import pytest

from shelby.events._append import replay_records, row_to_recorded
from shelby.events.codec import encode_data
from shelby.events.sqlite import run_statements
from shelby.events.store import Recorded, StoreError, project
from shelby.events.types import (
    Event,
    JobCreated,
    NodeHeartbeat,
    NodeRegistered,
    job_stream,
    node_stream,
)
from shelby.projections import all_projections
from shelby.projections.nodes import NodesProjection
from shelby.projections.usage import UsageProjection


def rows(*events: tuple[str, Event]) -> list[tuple[object, ...]]:
    """Log rows (hashes left blank: a replay does not check them) in the order given."""
    return [
        (seq, stream, seq, type(e).__name__, float(seq), encode_data(e), "", "")
        for seq, (stream, e) in enumerate(events, start=1)
    ]


def beat(node: str, cpu: float) -> tuple[str, Event]:
    return node_stream(node), NodeHeartbeat(node_id=node, specs={"cpuUsage": cpu})


def registered(node: str) -> tuple[str, Event]:
    return node_stream(node), NodeRegistered(node_id=node, name=node, token_hash="h")


def test_a_nodes_last_heartbeat_in_the_chunk_is_kept_and_the_rest_not_decoded() -> None:
    """Heartbeats of two nodes among other events: each node's last is kept, in log order
    with the rest."""
    chunk = rows(
        registered("a"),
        beat("a", 1.0),
        beat("b", 2.0),
        beat("a", 3.0),
        (job_stream("j"), JobCreated(job_id="j")),
        beat("b", 4.0),
        beat("a", 5.0),
    )
    kept = replay_records(all_projections(), chunk)
    assert [r.seq for r in kept] == [1, 5, 6, 7]
    assert [r.event for r in kept] == [
        registered("a")[1],
        JobCreated(job_id="j"),
        beat("b", 4.0)[1],
        beat("a", 5.0)[1],
    ]


def test_rows_no_projection_handles_are_left_out() -> None:
    """A replay of some projections (catching up at open) skips what none of them read."""
    chunk = rows(registered("a"), beat("a", 1.0), (job_stream("j"), JobCreated(job_id="j")))
    assert replay_records([UsageProjection()], chunk) == []
    assert [r.seq for r in replay_records([NodesProjection()], chunk)] == [1, 2]


def test_a_type_is_kept_whole_while_any_projection_applies_each_one() -> None:
    """``superseded`` drops a row only when every projection handling it says so."""

    class EveryBeat(NodesProjection):
        name = "every-beat"
        superseded: frozenset[str] = frozenset()

    chunk = rows(beat("a", 1.0), beat("a", 2.0))
    assert [r.seq for r in replay_records([NodesProjection()], chunk)] == [2]
    assert [r.seq for r in replay_records([NodesProjection(), EveryBeat()], chunk)] == [1, 2]


def test_a_superseded_row_is_not_even_decoded() -> None:
    """What is left out is never parsed: a heartbeat whose data is not JSON at all
    does not stop a replay that a later heartbeat of its node supersedes."""
    chunk = rows(beat("a", 1.0), beat("a", 2.0))
    broken = [(*chunk[0][:5], "not json", "", ""), chunk[1]]
    assert [r.seq for r in replay_records(all_projections(), broken)] == [2]


def test_a_registration_between_heartbeats_leaves_the_same_row() -> None:
    """Heartbeat, registration, heartbeat: applying only the last heartbeat leaves the
    nodes table as applying all three does."""
    chunk = rows(registered("a"), beat("a", 1.0), registered("a"), beat("a", 2.0))
    nodes = NodesProjection()

    def table(recs: list[Recorded]) -> list[tuple[object, ...]]:
        conn = sqlite3.connect(":memory:")
        for ddl in nodes.ddl:
            conn.execute(ddl)
        run_statements(conn, project([nodes], recs))
        return conn.execute("SELECT * FROM nodes").fetchall()

    every = [row_to_recorded(row) for row in chunk]
    kept = replay_records([nodes], chunk)
    assert [r.seq for r in kept] == [1, 3, 4]
    assert table(kept) == table(every)


def test_a_kept_row_that_is_not_an_event_stops_the_replay_with_its_seq() -> None:
    """Not JSON, not an event, or text that is not UTF-8 (an archived row comes back
    with surrogates): the replay names the seq rather than failing with a traceback."""
    chunk = rows(registered("a"), beat("a", 1.0))
    for data in ("not json", '{"type":"NodeHeartbeat"}', '{"type":"\udcff"}'):
        broken = [chunk[0], (*chunk[1][:5], data, "", "")]
        with pytest.raises(StoreError, match="event 2 cannot be decoded"):
            replay_records(all_projections(), broken)

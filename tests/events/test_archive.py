"""Retention on a real SQLite log: old heartbeats and log batches move to a segment file
byte for byte, and the log still verifies, rebuilds, proves and reads whole."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

import pytest

from cli._logfile import dump
from shelby.audit import proofs
from shelby.audit.verification import leaf_hash, verify_inclusion
from shelby.clock import ManualClock
from shelby.domain import JOBS, NODES, CommandHandler
from shelby.domain.jobs import AppendLogLines
from shelby.events.archive import catalogue, leftovers
from shelby.events.segments import check_segment, read_manifest
from shelby.events.sqlite import SQLiteEventStore
from shelby.events.store import ArchiveUnavailable
from shelby.events.types import HistoryArchived, LogLine, NodeHeartbeat, job_stream, node_stream
from shelby.events.verify import verify_store
from shelby.projections import all_projections

from ._helpers import raw_rows
from ._history import DAY, build_history


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """A closed log with a past, and the time its last event was written."""
    path = tmp_path_factory.mktemp("history") / "shelby.db"
    clock = asyncio.run(build_history(path))
    return path, clock.now()


@pytest.fixture
def log(history: tuple[Path, float], tmp_path: Path) -> tuple[Path, ManualClock]:
    """A copy of the history to change, with a clock at its present."""
    path = tmp_path / "log" / "shelby.db"
    path.parent.mkdir()
    shutil.copy(history[0], path)
    return path, ManualClock(history[1])


async def _open(path: Path) -> SQLiteEventStore:
    store = SQLiteEventStore(path, all_projections())
    await store.open()
    return store


async def _archive(path: Path, clock: ManualClock, days: float = 7) -> HistoryArchived:
    store = await _open(path)
    try:
        rec = await store.archive(before=clock.now() - days * DAY, now=clock.now())
    finally:
        await store.close()
    assert rec is not None
    assert isinstance(rec.event, HistoryArchived)
    return rec.event


async def test_old_heartbeats_and_log_batches_move_to_a_segment_byte_for_byte(
    log: tuple[Path, ManualClock],
) -> None:
    """The segment holds the old rows exactly as the log held them; the log keeps the
    rest, and of each stream's heartbeats and log batches the newest, however old."""
    path, clock = log
    before = raw_rows(path)
    event = await _archive(path, clock)
    after = raw_rows(path)
    segment = path.parent / "archive" / event.segment
    moved = sqlite3.connect(segment).execute("SELECT * FROM events ORDER BY seq").fetchall()
    old = {row[0]: row for row in before}
    assert moved == [old[row[0]] for row in moved]
    assert len(moved) == event.count > 0
    assert sorted([*after, *moved]) == sorted([*before, after[-1]])
    cutoff = clock.now() - 7 * DAY
    assert {row[3] for row in moved} == {"NodeHeartbeat", "LogLinesAppended"}
    assert all(row[4] < cutoff for row in moved)
    kept = {(row[1], row[3]): row for row in after}  # the newest of each kind
    newest = {(row[1], row[3]): row for row in before}
    assert kept == {**newest, (after[-1][1], after[-1][3]): after[-1]}
    # n1 went quiet ten days ago: its last heartbeat stays, and with it its last_seen.
    assert ("node-n1", "NodeHeartbeat") in kept
    manifest = read_manifest(sqlite3.connect(segment))
    assert (manifest.first_seq, manifest.last_seq, manifest.count) == (
        event.first_seq,
        event.last_seq,
        event.count,
    )
    assert manifest.through_hash == old[manifest.through_seq][7]


async def test_the_log_verifies_reads_whole_and_rebuilds_as_it_was_after_archiving(
    log: tuple[Path, ManualClock],
) -> None:
    """verify walks the chain across the segment, the audit reads give every row, a
    replay gives the projections the archive left, and the deciders' states hold."""
    path, clock = log
    before = raw_rows(path)
    store = await _open(path)
    handler = CommandHandler(store, clock)
    states = {s: await handler.state(s, JOBS) for s in map(job_stream, ("old-a", "old-b"))}
    await store.close()
    await _archive(path, clock)
    live = dump(path)
    store = await _open(path)
    try:
        verdict = await verify_store(store)
        assert verdict.ok, verdict.problem
        assert verdict.count == len(before) + 1
        assert (await store.read_raw(0, 10_000))[: len(before)] == before
        stream = job_stream("old-b")
        assert await store.read_raw_stream(stream) == [r for r in before if r[1] == stream]
        # A fresh handler folds only what stayed, and reaches the same states.
        fresh = CommandHandler(store, clock)
        assert {s: await fresh.state(s, JOBS) for s in states} == states
        assert (await fresh.state(node_stream("n2"), NODES))[1] == sum(
            1 for r in before if r[1] == node_stream("n2")
        )
        outcome = await fresh.handle(
            stream,
            JOBS,
            AppendLogLines(
                job_id="old-b",
                node_id="n2",
                attempt=1,
                offset=None,
                lines=[LogLine(line="after", timestamp=clock.now())],
            ),
        )
        assert outcome.recorded[0].event.offset == states[stream][0].next_offset  # type: ignore[union-attr]
        live = dump(path)
        await store.rebuild()
    finally:
        await store.close()
    assert dump(path) == live


async def test_the_logs_view_says_where_archived_lines_went(log: tuple[Path, ManualClock]) -> None:
    """The archived batches leave the logs view, which names their segment and offsets."""
    path, clock = log
    event = await _archive(path, clock)
    conn = sqlite3.connect(path)
    assert conn.execute(
        "SELECT job_id, attempt, segment, first_offset, last_offset, lines FROM log_archived"
        " ORDER BY job_id"
    ).fetchall() == [
        ("old-a", 1, event.segment, 0, 14, 15),
        ("old-b", 1, event.segment, 0, 14, 15),
    ]
    assert conn.execute(
        "SELECT job_id, first_offset FROM log_batches ORDER BY job_id, first_offset"
    ).fetchall() == [("new-c", 0), ("new-c", 1), ("new-c", 2), ("old-a", 15), ("old-b", 15)]


async def test_inclusion_proofs_of_archived_events_verify(log: tuple[Path, ManualClock]) -> None:
    """The Merkle tree is untouched: an archived event's proof leads to the root."""
    path, clock = log
    event = await _archive(path, clock)
    moved = [
        row[0]
        for row in sqlite3.connect(path.parent / "archive" / event.segment).execute(
            "SELECT seq FROM events ORDER BY seq"
        )
    ]
    store = await _open(path)
    try:
        head = await proofs.tree_head(store)
        for seq in [*moved[:: max(1, len(moved) // 12)], moved[-1]]:
            p = await proofs.inclusion(store, seq)
            assert verify_inclusion(seq - 1, head.size, leaf_hash(p.leaf), p.path, head.root)
    finally:
        await store.close()


async def test_a_flipped_byte_in_a_segment_is_detected(log: tuple[Path, ManualClock]) -> None:
    """One changed character of an archived row: the segment check names the row and
    the changed file, and verify of the log fails naming the file."""
    path, clock = log
    event = await _archive(path, clock)
    segment = path.parent / "archive" / event.segment
    entry = catalogue(sqlite3.connect(path))[0][1]
    assert check_segment(segment, entry=entry, log=sqlite3.connect(path))[1] == []
    data = bytearray(segment.read_bytes())
    at = data.index(b'"cpuUsage":1.5')
    data[at + 1] ^= 0x01  # cpuUsage -> bpuUsage
    segment.write_bytes(bytes(data))
    _manifest, alone = check_segment(segment)
    assert any("hash does not match the event's contents" in p for p in alone), alone
    _manifest, listed = check_segment(segment, entry=entry, log=sqlite3.connect(path))
    assert any("its bytes changed" in p for p in listed), listed
    store = await _open(path)
    try:
        verdict = await verify_store(store)
    finally:
        await store.close()
    assert verdict.problem is not None
    assert event.segment in verdict.problem.reason


async def test_a_segment_with_many_changed_rows_names_the_first_and_counts_them_all(
    log: tuple[Path, ManualClock],
) -> None:
    """Past the first few problems the check names no more, but still counts and digests
    every row: it reports no count or digest mismatch that is not there."""
    path, clock = log
    event = await _archive(path, clock)
    segment = path.parent / "archive" / event.segment
    data = segment.read_bytes()
    assert data.count(b'"cpuUsage":') > 10  # one in each archived heartbeat
    segment.write_bytes(data.replace(b'"cpuUsage":', b'"bpuUsage":'))
    manifest, problems = check_segment(segment)
    assert manifest is not None and manifest.count == event.count
    assert len(problems) == 10, problems
    assert all("hash does not match the event's contents" in p for p in problems), problems


async def test_a_missing_segment_is_reported_and_rebuild_refuses(
    log: tuple[Path, ManualClock],
) -> None:
    """Without its segment the log says which events are missing and where they went;
    rebuild drops nothing, and an audit read of them names the file."""
    path, clock = log
    event = await _archive(path, clock)
    live = dump(path)
    (path.parent / "archive" / event.segment).rename(path.parent / "elsewhere.db")
    store = await _open(path)
    try:
        verdict = await verify_store(store)
        assert verdict.problem is not None
        reason = verdict.problem.reason
        assert event.segment in reason and "missing" in reason
        assert f"between seq {event.first_seq} and {event.last_seq}" in reason
        with pytest.raises(ArchiveUnavailable, match=event.segment):
            await store.rebuild()
        with pytest.raises(ArchiveUnavailable, match=event.segment):
            await store.read_raw(0, 1000)
        assert await store.read_raw(event.last_seq, 5)  # the rest still reads
    finally:
        await store.close()
    assert dump(path) == live


async def test_a_crash_between_the_segment_and_the_delete_is_recovered(
    log: tuple[Path, ManualClock],
) -> None:
    """A segment written but never committed leaves the log whole; the next run
    removes it and archives again."""
    path, clock = log
    before = raw_rows(path)
    store = await _open(path)
    plan = await store.plan_archive(before=clock.now() - 7 * DAY, now=clock.now())
    await store.close()  # the process stops here
    assert plan is not None
    written = path.parent / "archive" / plan.event.segment
    assert written.is_file()
    assert raw_rows(path) == before
    store = await _open(path)
    try:
        assert (await verify_store(store)).ok
        assert leftovers(path.parent / "archive", []) == [written]
        rec = await store.archive(before=clock.now() - 7 * DAY, now=clock.now())
        assert rec is not None
        assert (await verify_store(store)).ok
        listed = catalogue(sqlite3.connect(path))
        assert leftovers(path.parent / "archive", listed) == []
        assert [e.segment for _, e in listed] == [plan.event.segment]
    finally:
        await store.close()


async def test_the_log_still_refuses_every_other_delete(log: tuple[Path, ManualClock]) -> None:
    """Only an archive transaction deletes: a row not listed, a listed row of another
    type, and a listed row while HistoryArchived is not the newest event are refused."""
    path, clock = log
    await _archive(path, clock)
    conn = sqlite3.connect(path, isolation_level=None)
    beat, created = (
        conn.execute("SELECT seq FROM events WHERE type = ? LIMIT 1", (t,)).fetchone()[0]
        for t in ("NodeHeartbeat", "JobCreated")
    )
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM events WHERE seq = ?", (beat,))
    conn.execute("BEGIN")
    conn.execute("INSERT INTO archive_pending (seq) VALUES (?), (?)", (beat, created))
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM events WHERE seq = ?", (created,))
    # The one opening: listed, archivable, and HistoryArchived the newest event.
    assert conn.execute("DELETE FROM events WHERE seq = ?", (beat,)).rowcount == 1
    conn.execute("ROLLBACK")
    store = await _open(path)
    try:
        version = (await store.read_raw_stream(node_stream("n2")))[-1][2]
        await store.append(
            node_stream("n2"),
            [NodeHeartbeat(node_id="n2")],
            expected_version=version,
            timestamp=clock.now(),
        )
    finally:
        await store.close()
    conn.execute("BEGIN")
    conn.execute("INSERT INTO archive_pending (seq) VALUES (?)", (beat,))
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM events WHERE seq = ?", (beat,))
    conn.execute("ROLLBACK")

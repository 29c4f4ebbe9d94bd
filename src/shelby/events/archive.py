"""Retention for the SQLite log: which rows may leave it, the segment they go to first,
and reading the log whole again wherever the whole log is needed (verify, rebuild, the
audit endpoints): the rows that stayed, and the segments' rows in the places between.

Archiving is two steps. ``plan_archive`` picks the rows and writes them to a segment
file, fsynced, while the log is untouched; the store then appends ``HistoryArchived``
and deletes exactly those rows in one transaction (``SQLiteEventStore.commit_archive``).
A crash between the two leaves a segment no event lists, whose rows are all still in
the log: the next run finds it and removes it (``clear_leftovers``).

Which rows (README, "Retention and archives"): of the types in ``ARCHIVABLE``, older
than ``before``, and with a later event of the same type in their stream at or before
``through_seq``. Each stream keeps its newest heartbeat and its newest log batch, so a
decider folding what stays reaches the state folding everything reaches (a heartbeat
changes no state; a log batch sets the next offset, which the newest batch sets
again), a stream's version is still its highest row's, and a node keeps its last
heartbeat for the nodes view.
"""

from __future__ import annotations

import heapq
import sqlite3
from pathlib import Path

import msgspec
import structlog

from shelby.events._sqlite_schema import ARCHIVABLE, SELECT_EVENTS, Row
from shelby.events.codec import decode_event
from shelby.events.segments import (
    Manifest,
    digest_of,
    file_sha256,
    open_segment,
    segment_rows,
    write_segment,
)
from shelby.events.store import ArchiveUnavailable, StoreError
from shelby.events.types import ARCHIVE_STREAM, HistoryArchived

__all__ = [
    "ARCHIVE_LIMIT",
    "ArchivePlan",
    "Entry",
    "UnionReader",
    "archive_dir",
    "catalogue",
    "check_entries",
    "clear_leftovers",
    "leftovers",
    "plan_archive",
    "select_archivable",
]

log = structlog.get_logger(__name__)

# Rows per segment: one archive transaction deletes at most this many, so the writer
# is held up for a moment, not for the whole backlog; a backlog takes several runs, with
# appends served between them. Deleting costs some 20-40 us a row on a log of a million
# events here (the rows and their (stream, version) index entries are scattered among
# those that stay), so 20,000 rows hold appends up for well under a second.
ARCHIVE_LIMIT = 20_000

Entry = tuple[int, HistoryArchived]
"""A segment as the log lists it: the seq of its ``HistoryArchived`` event, and the event."""

_TYPES = ", ".join(f"'{t}'" for t in ARCHIVABLE)
# Each old row of an archivable type, with the seq of the next row of its type in its
# stream (walked on the (stream, version) index, so a few steps per row).
_CANDIDATES = f"""SELECT e.seq, (
        SELECT n.seq FROM events AS n
        WHERE n.stream = e.stream AND n.version > e.version AND n.type = e.type
        ORDER BY n.version LIMIT 1)
    FROM events AS e
    WHERE e.type IN ({_TYPES}) AND e.timestamp < ? AND e.seq <= ?
    ORDER BY e.seq"""


def archive_dir(db_path: Path) -> Path:
    """Where a log's segments live: ``archive/`` beside its file."""
    return db_path.parent / "archive"


def catalogue(conn: sqlite3.Connection) -> list[Entry]:
    """The segments the log lists, oldest first (its ``system-archive`` stream)."""
    rows = conn.execute(
        "SELECT seq, data FROM events WHERE stream = ? ORDER BY version", (ARCHIVE_STREAM,)
    ).fetchall()
    entries: list[Entry] = []
    for seq, data in rows:
        event = decode_event(data)
        if not isinstance(event, HistoryArchived):
            raise StoreError(f"event {seq} on {ARCHIVE_STREAM} is not HistoryArchived")
        entries.append((seq, event))
    return entries


def select_archivable(
    conn: sqlite3.Connection, *, before: float, head: int, limit: int
) -> tuple[int, list[int]]:
    """``(through_seq, seqs)``: the archivable rows for the largest ``through_seq`` that
    gives at most ``limit`` of them, reading the log only as far as that takes.

    A row qualifies for ``through_seq = t`` when its next row of the same type (its
    witness) is at or before ``t``; witnesses come after their rows, so once the scan
    has passed seq ``s`` it knows every row whose witness is at or before ``s``.
    """
    waiting: list[tuple[int, int]] = []  # (witness, seq), witness beyond the scan so far
    settled: list[tuple[int, int]] = []  # in increasing witness order
    for seq, witness in conn.execute(_CANDIDATES, (before, head)):
        if witness is None or witness > head:
            continue  # the newest of its kind in its stream: it stays
        heapq.heappush(waiting, (witness, seq))
        while waiting and waiting[0][0] <= seq:
            settled.append(heapq.heappop(waiting))
        if len(settled) >= limit:
            break
    else:
        while waiting:
            settled.append(heapq.heappop(waiting))
    if not settled:
        return head, []
    through = settled[limit - 1][0] if len(settled) >= limit else head
    chosen = settled[:limit]
    return through, sorted(seq for _, seq in chosen)


class ArchivePlan(msgspec.Struct, frozen=True):
    """A segment written and fsynced, and the event that will let its rows go."""

    event: HistoryArchived
    seqs: list[int]
    expected_version: int  # of the system-archive stream


def plan_archive(
    conn: sqlite3.Connection,
    directory: Path,
    *,
    before: float,
    now: float,
    limit: int = ARCHIVE_LIMIT,
) -> ArchivePlan | None:
    """Step one: copy the rows to archive (see the module) into a new segment; ``None``
    when there is nothing to archive. The log is only read."""
    entries = catalogue(conn)
    clear_leftovers(conn, directory, entries)
    head = conn.execute("SELECT seq FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    if head is None:
        return None
    through, seqs = select_archivable(conn, before=before, head=head[0], limit=limit)
    if not seqs:
        return None
    (through_hash,) = conn.execute("SELECT hash FROM events WHERE seq = ?", (through,)).fetchone()
    rows = _rows(conn, seqs)
    digest = digest_of(row[7] for row in rows)
    manifest = Manifest(
        first_seq=seqs[0],
        last_seq=seqs[-1],
        count=len(rows),
        digest=digest,
        through_seq=through,
        through_hash=through_hash,
        before=before,
        created_at=now,
    )
    path = write_segment(directory, rows, manifest)
    (version,) = conn.execute(
        "SELECT coalesce(max(version), 0) FROM events WHERE stream = ?", (ARCHIVE_STREAM,)
    ).fetchone()
    event = HistoryArchived(
        segment=path.name,
        first_seq=manifest.first_seq,
        last_seq=manifest.last_seq,
        count=manifest.count,
        digest=digest,
        file_hash=file_sha256(path),
        before=before,
        through_seq=through,
    )
    return ArchivePlan(event, seqs, version)


def _rows(conn: sqlite3.Connection, seqs: list[int]) -> list[Row]:
    rows: list[Row] = []
    for start in range(0, len(seqs), 500):
        chunk = seqs[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows.extend(
            conn.execute(f"{SELECT_EVENTS} WHERE seq IN ({marks}) ORDER BY seq", chunk).fetchall()
        )
    if len(rows) != len(seqs):
        raise StoreError("rows chosen for the archive left the log meanwhile")
    return rows


def leftovers(directory: Path, entries: list[Entry]) -> list[Path]:
    """Segment files no ``HistoryArchived`` event lists: what a run that stopped
    between writing its segment and committing left behind."""
    if not directory.is_dir():
        return []
    listed = {event.segment for _, event in entries}
    return sorted(p for p in directory.glob("segment-*") if p.name not in listed)


def clear_leftovers(conn: sqlite3.Connection, directory: Path, entries: list[Entry]) -> list[Path]:
    """Remove the leftovers whose rows are all still in the log (every row leaves the
    log only with the event listing its segment, so that is all of them; anything
    else is a file from elsewhere, left alone and refused)."""
    removed: list[Path] = []
    for path in leftovers(directory, entries):
        if not path.name.endswith(".tmp") and not _still_in_log(conn, path):
            raise StoreError(
                f"{path} is listed by no HistoryArchived event, yet the log lacks its rows;"
                " it is not this log's: move it aside"
            )
        path.unlink()
        log.warning("removed a segment an interrupted archive run left", path=str(path))
        removed.append(path)
    return removed


def _still_in_log(conn: sqlite3.Connection, path: Path) -> bool:
    try:
        segment = open_segment(path)
    except (FileNotFoundError, sqlite3.Error):
        return False
    try:
        after = 0
        while rows := segment.execute(
            "SELECT seq, hash FROM events WHERE seq > ? ORDER BY seq LIMIT 5000", (after,)
        ).fetchall():
            low, high = rows[0][0], rows[-1][0]
            kept = dict(
                conn.execute(
                    "SELECT seq, hash FROM events WHERE seq >= ? AND seq <= ?", (low, high)
                ).fetchall()
            )
            if any(kept.get(seq) != hash_ for seq, hash_ in rows):
                return False
            after = high
        return True
    except sqlite3.Error:
        return False
    finally:
        segment.close()


def check_entries(conn: sqlite3.Connection, directory: Path) -> list[tuple[int, str]]:
    """Each listed segment is there with the bytes its event recorded, as
    ``(first seq, reason)`` for each that is not."""
    problems: list[tuple[int, str]] = []
    for seq, event in catalogue(conn):
        path = directory / event.segment
        if not path.is_file():
            problems.append((event.first_seq, _missing(seq, event, path)))
            continue
        actual = file_sha256(path)
        if actual != event.file_hash:
            problems.append(
                (
                    event.first_seq,
                    f"{path} is not the segment the HistoryArchived event at seq {seq} wrote:"
                    f" its SHA-256 is {actual}, not {event.file_hash}",
                )
            )
    return problems


def _missing(seq: int, event: HistoryArchived, path: Path) -> str:
    return (
        f"{event.count} events between seq {event.first_seq} and {event.last_seq} were"
        f" archived to {path} (HistoryArchived at seq {seq}), which is missing"
    )


class UnionReader:
    """The whole log through one connection to it: its rows, and in the places of the
    rows it archived, the segments' rows. Segments are opened as needed and kept open
    until ``close``.

    The log's rows are read before its list of segments, so any row they lack left in
    a transaction that had already listed its segment.
    """

    def __init__(self, conn: sqlite3.Connection, directory: Path) -> None:
        self._conn = conn
        self._dir = directory
        self._segments: dict[str, sqlite3.Connection] = {}
        self._entries: list[Entry] | None = None

    def close(self) -> None:
        """Close the segments it opened (the log's connection is the caller's)."""
        for segment in self._segments.values():
            segment.close()
        self._segments.clear()

    def head(self) -> int:
        row = self._conn.execute("SELECT max(seq) FROM events").fetchone()
        return int(row[0] or 0)

    def window(self, after: int, high: int) -> list[Row]:
        """Every row with ``after < seq <= high`` (``high`` at most the head). A row in
        neither place is left out, for the chain check to name; a listed segment that
        cannot be read raises ``ArchiveUnavailable``."""
        rows: list[Row] = self._conn.execute(
            f"{SELECT_EVENTS} WHERE seq > ? AND seq <= ? ORDER BY seq", (after, high)
        ).fetchall()
        if len(rows) == high - after:
            return rows
        have = {row[0] for row in rows}
        for fresh in (False, True):
            # The list read before may not name a segment committed since: read it
            # again, once, when it leaves rows unexplained.
            for entry in self._catalogue(fresh):
                if not _meets(entry[1], after + 1, high):
                    continue
                for row in segment_rows(self._open(entry), after + 1, high):
                    if row[0] not in have:
                        have.add(row[0])
                        rows.append(row)
            if len(rows) == high - after:
                break
        rows.sort(key=lambda row: row[0])
        return rows

    def _catalogue(self, fresh: bool) -> list[Entry]:
        if self._entries is None or fresh:
            self._entries = catalogue(self._conn)
        return self._entries

    def stream(self, stream: str) -> list[Row]:
        """Every row of ``stream``, in version order."""
        rows: list[Row] = self._conn.execute(
            f"{SELECT_EVENTS} WHERE stream = ? ORDER BY version", (stream,)
        ).fetchall()
        if not rows or rows[-1][2] == len(rows):
            return rows
        # A stream's first and newest rows never leave the log: its archived rows lie
        # between them, in segments whose range meets theirs.
        have = {row[2] for row in rows}
        low, high = rows[0][0], rows[-1][0]
        for entry in self._catalogue(fresh=True):
            if not _meets(entry[1], low, high):
                continue
            for row in self._open(entry).execute(
                f"{SELECT_EVENTS} WHERE stream = ? ORDER BY version", (stream,)
            ):
                if row[2] not in have:
                    have.add(row[2])
                    rows.append(row)
        rows.sort(key=lambda row: row[2])
        return rows

    def _open(self, entry: Entry) -> sqlite3.Connection:
        seq, event = entry
        segment = self._segments.get(event.segment)
        if segment is None:
            path = self._dir / event.segment
            try:
                segment = open_segment(path)
            except FileNotFoundError:
                raise ArchiveUnavailable(_missing(seq, event, path)) from None
            except sqlite3.Error as exc:
                raise ArchiveUnavailable(f"{path} cannot be read: {exc}") from None
            self._segments[event.segment] = segment
        return segment


def _meets(event: HistoryArchived, low: int, high: int) -> bool:
    return event.first_seq <= high and event.last_seq >= low

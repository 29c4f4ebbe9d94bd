"""Each attempt's log, kept as the batches it arrived in, addressed by offset.

One row per ``LogLinesAppended`` rather than one per line: agents send lines in
batches, a batch is written and read whole, and a job's log of a million lines is a
few thousand rows. A read seeks to the batch holding its first offset and decodes
only the batches it returns. Batches that retention archived leave the table, and
``log_archived`` says, per attempt, which offsets went to which segment.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from shelby.events.store import EventStore, Recorded
from shelby.events.types import HistoryArchived, JobDeleted, LogLine, LogLinesAppended
from shelby.projections._sql import Statement, event_names, to_json

__all__ = ["LogsProjection", "read_archived", "read_lines"]

_decode_lines = msgspec.json.Decoder(list[LogLine]).decode
_PAGE = 8  # batches read at a time past the range a page asks for
_KEY = "job_id = ? AND attempt = ?"


# The batches a HistoryArchived event moved out (its rule, in ``events.archive``, over
# this table): between its first and last seq, older than ``before``, with a later batch
# of the same job at or before ``through_seq``. Both lookups go through an index, so a
# run costs what it moves, not the size of the table or of a long job's log.
_ARCHIVED = (
    " FROM log_batches AS b WHERE b.seq >= ? AND b.seq <= ? AND b.timestamp < ?"
    " AND b.seq < (SELECT max(n.seq) FROM log_batches AS n"
    " WHERE n.job_id = b.job_id AND n.seq <= ?)"
)


def _archived_params(e: HistoryArchived) -> tuple[int | float, ...]:
    return (e.first_seq, e.last_seq, e.before, e.through_seq)


class LogsProjection:
    name = "logs"
    superseded: frozenset[str] = frozenset()
    version = 5  # 4: each batch's seq and time, and where archived batches went; 5: by seq
    handles = event_names(LogLinesAppended, JobDeleted, HistoryArchived)
    tables = ("log_batches", "log_archived")
    ddl = (
        "DROP TABLE IF EXISTS log_lines",  # version 2 kept a row per line
        """CREATE TABLE IF NOT EXISTS log_batches (
            job_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            first_offset BIGINT NOT NULL,
            last_offset BIGINT NOT NULL,
            seq BIGINT NOT NULL,
            timestamp DOUBLE PRECISION NOT NULL,
            lines TEXT NOT NULL,
            PRIMARY KEY (job_id, attempt, first_offset)
        ) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS log_batches_by_seq ON log_batches (seq)",
        "CREATE INDEX IF NOT EXISTS log_batches_by_job_seq ON log_batches (job_id, seq)",
        # Lines that retention moved to a segment: where to find them, per attempt.
        """CREATE TABLE IF NOT EXISTS log_archived (
            job_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            segment TEXT NOT NULL,
            first_offset BIGINT NOT NULL,
            last_offset BIGINT NOT NULL,
            lines BIGINT NOT NULL,
            PRIMARY KEY (job_id, attempt, segment)
        ) WITHOUT ROWID""",
    )

    def apply(self, rec: Recorded) -> list[Statement]:
        e = rec.event
        match e:
            case LogLinesAppended():
                return [
                    (
                        "INSERT INTO log_batches (job_id, attempt, first_offset, last_offset,"
                        " seq, timestamp, lines) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            e.job_id,
                            e.attempt,
                            e.offset,
                            e.offset + len(e.lines) - 1,
                            rec.seq,
                            rec.timestamp,
                            to_json(e.lines),
                        ),
                    )
                ]
            case HistoryArchived():
                return [
                    (
                        "INSERT INTO log_archived (job_id, attempt, segment, first_offset,"
                        " last_offset, lines) SELECT b.job_id, b.attempt, ?, min(b.first_offset),"
                        " max(b.last_offset), sum(b.last_offset - b.first_offset + 1)"
                        + _ARCHIVED
                        + " GROUP BY b.job_id, b.attempt",
                        (e.segment, *_archived_params(e)),
                    ),
                    (
                        "DELETE FROM log_batches WHERE (job_id, attempt, first_offset) IN"
                        " (SELECT b.job_id, b.attempt, b.first_offset" + _ARCHIVED + ")",
                        _archived_params(e),
                    ),
                ]
            case JobDeleted():
                return [
                    ("DELETE FROM log_batches WHERE job_id = ?", (e.job_id,)),
                    ("DELETE FROM log_archived WHERE job_id = ?", (e.job_id,)),
                ]
            case _:
                raise TypeError(f"{self.name} does not handle {rec.type}")


async def read_archived(
    store: EventStore, job_id: str, attempt: int
) -> list[tuple[str, int, int, int]]:
    """``(segment, first offset, last offset, lines)`` for each segment holding lines of
    the attempt, oldest lines first."""
    rows = await store.fetchall(
        "SELECT segment, first_offset, last_offset, lines FROM log_archived"
        " WHERE job_id = ? AND attempt = ? ORDER BY first_offset",
        (job_id, attempt),
    )
    return [(segment, first, last, n) for segment, first, last, n in rows]


def _lines(rows: list[tuple[Any, ...]]) -> Iterator[tuple[int, LogLine]]:
    for first, text in rows:
        for i, line in enumerate(_decode_lines(text)):
            yield first + i, line


async def read_lines(
    store: EventStore, job_id: str, attempt: int, *, limit: int, after: int | None
) -> list[tuple[int, LogLine]]:
    """``(offset, line)`` of one attempt, oldest first: those after offset ``after`` (at
    most ``limit``), or without ``after`` the last ``limit``.

    An attempt's offsets have no gaps (the decider refuses one), so the batches that
    hold the lines wanted are those starting from the one that holds ``after + 1`` up to
    offset ``after + limit``: one range read, whose cost is the page asked for however
    long the log. Only if that falls short (the end of the log, or a stretch no longer
    kept) are the next batches read, a few at a time."""
    out: list[tuple[int, LogLine]] = []
    if limit <= 0:
        return out
    if after is None:
        last = await store.fetchone(
            f"SELECT last_offset FROM log_batches WHERE {_KEY} ORDER BY first_offset DESC LIMIT 1",
            (job_id, attempt),
        )
        if last is None:
            return out
        tail = await read_lines(store, job_id, attempt, limit=limit, after=max(-1, last[0] - limit))
        if len(tail) < limit and last[0] >= limit:
            # A stretch before the end is not kept: reach back past it for the rest.
            tail[:0] = await _lines_before(store, job_id, attempt, tail[0][0], limit - len(tail))
        return tail
    start = await store.fetchone(
        f"SELECT first_offset FROM log_batches WHERE {_KEY} AND first_offset <= ?"
        " ORDER BY first_offset DESC LIMIT 1",
        (job_id, attempt, after + 1),
    )
    rows = await store.fetchall(
        f"SELECT first_offset, lines FROM log_batches WHERE {_KEY}"
        " AND first_offset >= ? AND first_offset <= ? ORDER BY first_offset",
        (job_id, attempt, start[0] if start else 0, after + limit),
    )
    out.extend(item for item in _lines(rows) if item[0] > after)
    seen = after + limit
    while len(out) < limit:
        rows = await store.fetchall(
            f"SELECT first_offset, lines FROM log_batches WHERE {_KEY} AND first_offset > ?"
            " ORDER BY first_offset LIMIT ?",
            (job_id, attempt, seen, _PAGE),
        )
        if not rows:
            break
        out.extend(item for item in _lines(rows) if item[0] > after)
        seen = rows[-1][0]
    return out[:limit]


async def _lines_before(
    store: EventStore, job_id: str, attempt: int, before: int, limit: int
) -> list[tuple[int, LogLine]]:
    """The last ``limit`` lines with offsets below ``before``, oldest first."""
    pages: list[list[tuple[int, LogLine]]] = []
    collected = 0
    while collected < limit:
        rows = await store.fetchall(
            f"SELECT first_offset, lines FROM log_batches WHERE {_KEY} AND first_offset < ?"
            " ORDER BY first_offset DESC LIMIT ?",
            (job_id, attempt, before, _PAGE),
        )
        if not rows:
            break
        rows.reverse()
        page = [item for item in _lines(rows) if item[0] < before]
        pages.append(page)
        collected += len(page)
        before = rows[0][0]
    out = [item for page in reversed(pages) for item in page]
    return out[-limit:] if limit else []

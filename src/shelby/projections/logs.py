"""Each attempt's log, kept as the batches it arrived in, addressed by offset.

One row per ``LogLinesAppended`` rather than one per line: agents send lines in
batches, a batch is written and read whole, and a job's log of a million lines is a
few thousand rows. A read seeks to the batch holding its first offset and decodes
only the batches it returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from shelby.events.store import EventStore, Recorded
from shelby.events.types import JobDeleted, LogLine, LogLinesAppended
from shelby.projections._sql import Statement, event_names, to_json

__all__ = ["LogsProjection", "read_lines"]

_decode_lines = msgspec.json.Decoder(list[LogLine]).decode
_PAGE = 64  # batches fetched at a time while collecting lines


class LogsProjection:
    name = "logs"
    version = 3  # 3: one row per batch
    handles = event_names(LogLinesAppended, JobDeleted)
    tables = ("log_batches",)
    ddl = (
        "DROP TABLE IF EXISTS log_lines",  # version 2 kept a row per line
        """CREATE TABLE IF NOT EXISTS log_batches (
            job_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            first_offset BIGINT NOT NULL,
            last_offset BIGINT NOT NULL,
            lines TEXT NOT NULL,
            PRIMARY KEY (job_id, attempt, first_offset)
        ) WITHOUT ROWID""",
    )

    def apply(self, rec: Recorded) -> list[Statement]:
        e = rec.event
        match e:
            case LogLinesAppended():
                return [
                    (
                        "INSERT INTO log_batches (job_id, attempt, first_offset, last_offset,"
                        " lines) VALUES (?, ?, ?, ?, ?)",
                        (
                            e.job_id,
                            e.attempt,
                            e.offset,
                            e.offset + len(e.lines) - 1,
                            to_json(e.lines),
                        ),
                    )
                ]
            case JobDeleted():
                return [("DELETE FROM log_batches WHERE job_id = ?", (e.job_id,))]
            case _:
                raise TypeError(f"{self.name} does not handle {rec.type}")


def _lines(rows: list[tuple[Any, ...]]) -> Iterator[tuple[int, LogLine]]:
    for first, text in rows:
        for i, line in enumerate(_decode_lines(text)):
            yield first + i, line


async def read_lines(
    store: EventStore, job_id: str, attempt: int, *, limit: int, after: int | None
) -> list[tuple[int, LogLine]]:
    """``(offset, line)`` of one attempt, oldest first: those after offset ``after`` (at
    most ``limit``), or without ``after`` the last ``limit``."""
    out: list[tuple[int, LogLine]] = []
    if limit <= 0:
        return out
    if after is not None:
        # From the batch that holds offset after + 1 (the last that starts at or before it).
        cursor = after + 1
        start = await store.fetchone(
            "SELECT first_offset FROM log_batches WHERE job_id = ? AND attempt = ?"
            " AND first_offset <= ? ORDER BY first_offset DESC LIMIT 1",
            (job_id, attempt, cursor),
        )
        from_offset = start[0] if start else 0
        while len(out) < limit:
            rows = await store.fetchall(
                "SELECT first_offset, lines FROM log_batches WHERE job_id = ? AND attempt = ?"
                " AND first_offset >= ? ORDER BY first_offset LIMIT ?",
                (job_id, attempt, from_offset, _PAGE),
            )
            out.extend(item for item in _lines(rows) if item[0] > after)
            if len(rows) < _PAGE:
                break
            from_offset = rows[-1][0] + 1
        return out[:limit]
    before: int | None = None
    pages: list[list[tuple[int, LogLine]]] = []
    collected = 0
    while collected < limit:
        rows = await store.fetchall(
            "SELECT first_offset, lines FROM log_batches WHERE job_id = ? AND attempt = ?"
            + ("" if before is None else " AND first_offset < ?")
            + " ORDER BY first_offset DESC LIMIT ?",
            (job_id, attempt, _PAGE) if before is None else (job_id, attempt, before, _PAGE),
        )
        rows.reverse()
        page = list(_lines(rows))
        pages.append(page)
        collected += len(page)
        if len(rows) < _PAGE:
            break
        before = rows[0][0]
    for page in reversed(pages):
        out.extend(page)
    return out[-limit:]

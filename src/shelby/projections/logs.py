"""Each attempt's log lines, addressed by offset."""

from __future__ import annotations

from shelby.events.store import Recorded
from shelby.events.types import JobDeleted, LogLinesAppended
from shelby.projections._sql import Statement, event_names

__all__ = ["LogsProjection"]

_INSERT = (
    "INSERT INTO log_lines (job_id, attempt, line_offset, line, timestamp, stream, truncated)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class LogsProjection:
    name = "logs"
    handles = event_names(LogLinesAppended, JobDeleted)
    version = 1
    tables = ("log_lines",)
    ddl = (
        """CREATE TABLE IF NOT EXISTS log_lines (
            job_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            line_offset BIGINT NOT NULL,
            line TEXT NOT NULL,
            timestamp DOUBLE PRECISION NOT NULL,
            stream TEXT NOT NULL,
            truncated INTEGER NOT NULL,
            PRIMARY KEY (job_id, attempt, line_offset)
        )""",
    )

    def apply(self, rec: Recorded) -> list[Statement]:
        e = rec.event
        match e:
            case LogLinesAppended():
                return [
                    (
                        _INSERT,
                        (
                            e.job_id,
                            e.attempt,
                            e.offset + i,
                            ln.line,
                            ln.timestamp,
                            ln.stream,
                            int(ln.truncated),
                        ),
                    )
                    for i, ln in enumerate(e.lines)
                ]
            case JobDeleted():
                return [("DELETE FROM log_lines WHERE job_id = ?", (e.job_id,))]
            case _:
                raise TypeError(f"{self.name} does not handle {rec.type}")

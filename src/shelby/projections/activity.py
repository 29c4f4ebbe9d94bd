"""Jobs created, finished and failed per minute: the dashboard's throughput chart."""

from __future__ import annotations

from shelby.events.store import Recorded
from shelby.events.types import JobCreated, JobFailed, JobFinished
from shelby.projections._sql import Statement, event_names

__all__ = ["ActivityProjection"]


class ActivityProjection:
    name = "activity"
    handles = event_names(JobCreated, JobFinished, JobFailed)
    superseded: frozenset[str] = frozenset()
    version = 1
    tables = ("job_activity",)
    ddl = (
        """CREATE TABLE IF NOT EXISTS job_activity (
            minute BIGINT PRIMARY KEY,
            created BIGINT NOT NULL,
            finished BIGINT NOT NULL,
            failed BIGINT NOT NULL
        )""",
    )

    def apply(self, rec: Recorded) -> list[Statement]:
        match rec.event:
            case JobCreated():
                column = "created"
            case JobFinished():
                column = "finished"
            case JobFailed():
                column = "failed"
            case _:
                raise TypeError(f"{self.name} does not handle {rec.type}")
        return [
            (
                "INSERT INTO job_activity (minute, created, finished, failed)"
                " VALUES (?, 0, 0, 0) ON CONFLICT (minute) DO NOTHING",
                (int(rec.timestamp // 60),),
            ),
            (
                f"UPDATE job_activity SET {column} = {column} + 1 WHERE minute = ?",
                (int(rec.timestamp // 60),),
            ),
        ]

"""Resources spent, summed per job (and per node for reports that name no job).

Agents report each attempt's usage once, at its end, so sums are totals over the
job's attempts; the peak is the largest peak any attempt reported.
"""

from __future__ import annotations

from shelby.events.store import Recorded
from shelby.events.types import JobDeleted, UsageReported
from shelby.projections._sql import Statement, event_names

__all__ = ["UsageProjection"]


class UsageProjection:
    name = "usage"
    handles = event_names(UsageReported, JobDeleted)
    superseded: frozenset[str] = frozenset()
    version = 1
    tables = ("usage",)
    ddl = (
        """CREATE TABLE IF NOT EXISTS usage (
            subject TEXT PRIMARY KEY,
            reports BIGINT NOT NULL,
            cpu_seconds DOUBLE PRECISION,
            wall_seconds DOUBLE PRECISION,
            peak_ram_mb DOUBLE PRECISION,
            gpu_seconds DOUBLE PRECISION
        )""",
    )

    def apply(self, rec: Recorded) -> list[Statement]:
        e = rec.event
        match e:
            case UsageReported():
                return [
                    (
                        "INSERT INTO usage (subject, reports, cpu_seconds, wall_seconds,"
                        " peak_ram_mb, gpu_seconds) VALUES (?, 1, ?, ?, ?, ?)"
                        " ON CONFLICT (subject) DO UPDATE SET reports = usage.reports + 1,"
                        " cpu_seconds = " + _add("cpu_seconds") + ","
                        " wall_seconds = " + _add("wall_seconds") + ","
                        " gpu_seconds = " + _add("gpu_seconds") + ","
                        " peak_ram_mb = CASE WHEN usage.peak_ram_mb IS NULL"
                        " OR usage.peak_ram_mb < excluded.peak_ram_mb"
                        " THEN excluded.peak_ram_mb ELSE usage.peak_ram_mb END",
                        (
                            rec.stream,
                            e.cpu_seconds,
                            e.wall_seconds,
                            e.peak_ram_mb,
                            e.gpu_seconds,
                        ),
                    )
                ]
            case JobDeleted():
                return [("DELETE FROM usage WHERE subject = ?", (rec.stream,))]
            case _:
                raise TypeError(f"{self.name} does not handle {rec.type}")


def _add(column: str) -> str:
    """A sum that stays NULL until some report gives a value."""
    return (
        f"CASE WHEN excluded.{column} IS NULL THEN usage.{column}"
        f" ELSE COALESCE(usage.{column}, 0) + excluded.{column} END"
    )

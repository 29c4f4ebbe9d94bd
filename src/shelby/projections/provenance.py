"""Each job's lifecycle, event by event with its hash: everything but log lines."""

from __future__ import annotations

from shelby.events.store import Recorded
from shelby.events.types import (
    EVENT_TYPES,
    JobDeleted,
    LogLinesAppended,
    NodeHeartbeat,
    NodeRegistered,
    actor_of,
)
from shelby.projections._sql import Statement, event_names

__all__ = ["ProvenanceProjection"]


class ProvenanceProjection:
    name = "provenance"
    # Every type but the node-only ones and log lines: a type added later shows in the
    # provenance without anyone having to remember to list it here.
    handles = frozenset(EVENT_TYPES) - event_names(NodeRegistered, NodeHeartbeat, LogLinesAppended)
    superseded: frozenset[str] = frozenset()
    version = 1
    tables = ("provenance",)
    ddl = (
        """CREATE TABLE IF NOT EXISTS provenance (
            job_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            type TEXT NOT NULL,
            timestamp DOUBLE PRECISION NOT NULL,
            actor TEXT NOT NULL,
            hash TEXT NOT NULL,
            data TEXT NOT NULL,
            PRIMARY KEY (job_id, seq)
        ) WITHOUT ROWID""",
    )

    def apply(self, rec: Recorded) -> list[Statement]:
        e = rec.event
        if not rec.stream.startswith("job-") or isinstance(e, LogLinesAppended):
            return []
        job_id = rec.stream[4:]
        if isinstance(e, JobDeleted):
            # The job leaves every view; its history stays in the log for auditors.
            return [("DELETE FROM provenance WHERE job_id = ?", (job_id,))]
        return [
            (
                "INSERT INTO provenance (job_id, seq, type, timestamp, actor, hash, data)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (job_id, rec.seq, rec.type, rec.timestamp, actor_of(e), rec.hash, rec.data),
            )
        ]

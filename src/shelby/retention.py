"""Retention while serving: every ``archive_interval`` seconds, heartbeats and log lines
older than ``retention_days`` move from the SQLite log to archive segments.

The archive transaction runs on the store's one writer, between append batches, like
any other append; each run moves at most ``ARCHIVE_LIMIT`` rows, so a backlog is
worked off in several short transactions rather than one that holds every caller up.
"""

from __future__ import annotations

import structlog

from shelby.clock import Clock
from shelby.events.sqlite import SQLiteEventStore
from shelby.events.store import Recorded
from shelby.events.types import HistoryArchived
from shelby.periodic import Periodic
from shelby.service import Service

__all__ = ["DAY", "Retention", "archive_before"]

log = structlog.get_logger("shelby.retention")

DAY = 86_400.0


async def archive_before(store: SQLiteEventStore, before: float, clock: Clock) -> list[Recorded]:
    """Archive everything older than ``before``, in as many runs as it takes; the
    ``HistoryArchived`` events appended."""
    archived: list[Recorded] = []
    while (rec := await store.archive(before=before, now=clock.now())) is not None:
        archived.append(rec)
        event = rec.event
        assert isinstance(event, HistoryArchived)
        log.info("archived", segment=event.segment, count=event.count, seq=rec.seq)
    return archived


class Retention:
    def __init__(self, service: Service, *, clock: Clock | None = None) -> None:
        store = service.store
        if not isinstance(store, SQLiteEventStore):
            raise ValueError("retention is SQLite-only for now")
        self.store = store
        self.clock = clock or service.clock
        self.days = service.settings.retention_days
        self.interval = service.settings.archive_interval
        self._periodic = Periodic(
            "retention", "archive run", self.archive_once, self.interval, at_start=True
        )

    async def archive_once(self) -> list[Recorded]:
        return await archive_before(self.store, self.clock.now() - self.days * DAY, self.clock)

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

"""Choosing a store from the ``--db`` setting."""

from __future__ import annotations

from shelby.events.store import EventStore, Projection, StoreUnavailable

__all__ = ["open_store"]


def open_store(db: str, projections: list[Projection]) -> EventStore:
    """A store for ``db``: a ``postgresql://`` URL, or else a SQLite file path.

    The store is returned unopened; call ``await store.open()``.
    """
    if db.startswith(("postgresql://", "postgres://")):
        raise StoreUnavailable("the PostgreSQL store is not built yet")
    from shelby.events.sqlite import SQLiteEventStore

    return SQLiteEventStore(db.removeprefix("sqlite:///"), projections)

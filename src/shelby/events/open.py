"""Choosing a store from the ``--db`` setting."""

from __future__ import annotations

from shelby.events.store import EventStore, Projection

__all__ = ["is_postgres_url", "open_store"]


def is_postgres_url(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


def open_store(db: str, projections: list[Projection]) -> EventStore:
    """A store for ``db``: a ``postgresql://`` URL, or else a SQLite file path.

    The store is returned unopened; call ``await store.open()``.
    """
    if is_postgres_url(db):
        from shelby.events.postgres import PostgresEventStore

        return PostgresEventStore(db, projections)
    from shelby.events.sqlite import SQLiteEventStore

    return SQLiteEventStore(db.removeprefix("sqlite:///"), projections)

"""The store interface: what every backend (SQLite, PostgreSQL) promises its callers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

import msgspec

from shelby.events.merkle import NodeKey
from shelby.events.types import Event

__all__ = [
    "ArchiveUnavailable",
    "ConcurrencyError",
    "EventStore",
    "Head",
    "Listener",
    "Projection",
    "Recorded",
    "Statement",
    "StoreError",
    "StoreUnavailable",
    "project",
]


class Recorded(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One row of the log: an event with its place in it and its link in the chain.
    Untracked by the cyclic collector, as events are (``Event``)."""

    seq: int
    stream: str
    version: int
    type: str
    timestamp: float
    data: str  # canonical JSON text, exactly as hashed
    prev_hash: str
    hash: str
    event: Event


class Head(msgspec.Struct, frozen=True):
    seq: int
    hash: str


class StoreError(Exception):
    """Base of the store's own errors; driver errors never leave a backend."""


class ConcurrencyError(StoreError):
    """The stream moved past the version the append expected."""

    def __init__(self, stream: str, expected_version: int) -> None:
        super().__init__(f"stream {stream!r} is no longer at version {expected_version}")
        self.stream = stream
        self.expected_version = expected_version


class StoreUnavailable(StoreError):
    """The database cannot take writes (or reads) right now: disk full, read-only,
    unreachable. Nothing of the failed append was kept."""


class ArchiveUnavailable(StoreError):
    """Events the log moved to an archive segment cannot be read: the segment is
    missing, unreadable, or not the one its ``HistoryArchived`` event names. The
    message says which events and which file."""


Statement = tuple[str, tuple[Any, ...]]
"""One SQL statement with ``?`` placeholders and its parameters; both backends run it."""

Listener = Callable[[Sequence[Recorded]], None]
"""Called on the event loop with each committed batch, in log order. Must not block."""


class Projection(Protocol):
    """A read model kept in tables beside the log.

    ``apply`` is pure: it turns one recorded event into statements, which the store runs
    in the transaction that appends the event, so a projection never lags its log.
    """

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> int:
        """Bump it to have the store rebuild this projection at start-up."""
        ...

    @property
    def handles(self) -> frozenset[str]:
        """The event types ``apply`` turns into statements; others are not offered."""
        ...

    @property
    def superseded(self) -> frozenset[str]:
        """Types of ``handles`` whose event leaves the tables as the stream's next event
        of that type overwrites them: ``apply`` of both equals ``apply`` of the second
        alone, whatever comes between. A replay applies only the last of a run of them
        (a node's heartbeats), and decodes no other. Rows are keyed by what the stream
        names, so this holds only where every such event of a row's subject is in that
        subject's one stream (a node's heartbeats in ``node-<id>``, as the domain
        appends them)."""
        ...

    @property
    def tables(self) -> Sequence[str]:
        """The tables it owns, dropped on rebuild."""
        ...

    @property
    def ddl(self) -> Sequence[str]:
        """Idempotent CREATE statements, in SQL both databases take; ``WITHOUT ROWID``
        (SQLite's clustered table) is the one clause the PostgreSQL store drops."""
        ...

    def apply(self, rec: Recorded) -> list[Statement]: ...


def project(projections: Sequence[Projection], recs: Sequence[Recorded]) -> list[Statement]:
    """Every projection's statements for ``recs``, one projection after another.

    Projections own disjoint tables, so only the order within each one matters; keeping
    a projection's statements together makes long runs of the same SQL, which a store
    runs as one ``executemany``.
    """
    out: list[Statement] = []
    types = {rec.type for rec in recs}
    for proj in projections:
        handles = proj.handles
        if handles.isdisjoint(types):
            continue  # a batch of heartbeats is offered to one projection of six
        for rec in recs:
            if rec.type in handles:
                out.extend(proj.apply(rec))
    return out


class EventStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def append(
        self,
        stream: str,
        events: Sequence[Event],
        *,
        expected_version: int,
        timestamp: float,
    ) -> list[Recorded]:
        """Append atomically if ``stream`` is at ``expected_version`` (0: new stream).

        Returns only once the events and every projection's rows are durable.
        Raises ``ConcurrencyError`` or ``StoreUnavailable``.
        """
        ...

    async def read_stream(self, stream: str, after_version: int = 0) -> list[Recorded]: ...

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[Recorded]: ...

    def iter_raw(self, after: int = 0) -> AsyncIterator[list[tuple[Any, ...]]]:
        """Batches of raw rows ``(seq, stream, version, type, timestamp, data,
        prev_hash, hash)`` in log order up to the head, for verify and rebuild; archived
        rows included (raises ``ArchiveUnavailable`` when they cannot be read)."""
        ...

    async def read_raw(self, after: int, limit: int) -> list[tuple[Any, ...]]:
        """Raw rows with ``seq`` greater than ``after``, at most ``limit``, in log
        order, archived rows included: what an auditor reads."""
        ...

    async def read_raw_stream(self, stream: str) -> list[tuple[Any, ...]]:
        """Every raw row of one stream in version order, archived rows included."""
        ...

    async def check_archive(self) -> list[tuple[int, str]]:
        """What does not hold of the archive segments the log's ``HistoryArchived``
        events list, as ``(seq, reason)``: missing, changed or mismatched files."""
        ...

    async def head(self) -> Head: ...

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...

    async def tree_nodes(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        """The Merkle tree's stored perfect subtrees (``events.merkle``) by key; the tree
        always covers the whole log, so its size is ``head().seq``."""
        ...

    async def ping(self) -> None:
        """Raises ``StoreUnavailable`` when the database cannot be reached."""
        ...

    async def check_writable(self) -> None:
        """Raises ``StoreUnavailable`` while a fault of the database (disk full,
        read-only, unreachable) keeps appends from committing: the last append failed
        for it, and a probe that writes nothing new still fails."""
        ...

    async def rebuild(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Drop every projection and replay the log into it; returns events applied."""
        ...

    def subscribe(self, listener: Listener) -> Callable[[], None]: ...

"""The SQLite event store: the embedded default, one file and nothing else to run.

Writes take one road: ``append`` queues a request and one writer drains the queue,
committing every request that arrived meanwhile in a single transaction (group
commit), so one fsync serves many callers. Each request is checked against its
stream's version and hashed onto the chain inside that transaction, and every
projection's rows are written beside it. A request that fails is rolled back to its
own savepoint and does not disturb the others in its batch.

The writer is one thread with a plain ``sqlite3`` connection rather than an aiosqlite
one: aiosqlite hops between threads once per statement, and a batch is hundreds of
statements, so the batch is handed over whole. Reads use aiosqlite connections.

A fault of the database (disk full, file read-only, I/O error) fails the batch it
struck and nothing else: the transaction is rolled back and reads go on. Unless the
fault was one of room or of contention, the writer's connection is dropped and opened
again for the next batch: a connection that SQLite opened read-only stays read-only
after the file becomes writable. A store that cannot write when it opens still opens,
for reads, and tries again at each write.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import structlog

from shelby.events._append import (
    REBUILD_CHUNK,
    Pending,
    WriteFaults,
    chain,
    pending,
    remember_versions,
    replay_records,
    row_to_recorded,
)
from shelby.events._sqlite_schema import (
    ARCHIVE_PENDING,
    EVENTS_NO_DELETE,
    EVENTS_NO_UPDATE,
    EVENTS_TABLE,
    INSERT_EVENT,
    SELECT_EVENTS,
)
from shelby.events._sqlite_tree import (
    ROWS_OF,
    TREE_DDL,
    append_leaves,
    load_frontier,
    migrate_node_rows,
    nodes_in,
    old_tree_size,
    stored_tree,
    wanted_rows,
)
from shelby.events.archive import (
    ARCHIVE_LIMIT,
    ArchivePlan,
    UnionReader,
    archive_dir,
    check_entries,
    plan_archive,
)
from shelby.events.codec import GENESIS_HASH
from shelby.events.merkle import Frontier, NodeKey
from shelby.events.segments import digest_of
from shelby.events.store import (
    ArchiveUnavailable,
    ConcurrencyError,
    Head,
    Listener,
    Projection,
    Recorded,
    Statement,
    StoreError,
    StoreUnavailable,
    project,
)
from shelby.events.types import ARCHIVE_STREAM, Event, HistoryArchived
from shelby.events.wal import WalCheckpointer

__all__ = ["SQLiteEventStore"]

T = TypeVar("T")

log = structlog.get_logger(__name__)

EVENTS_DDL = [
    EVENTS_TABLE,
    EVENTS_NO_UPDATE,
    ARCHIVE_PENDING,
    EVENTS_NO_DELETE,
    TREE_DDL,  # the Merkle tree (events/merkle.py), kept with the log
    """CREATE TABLE IF NOT EXISTS projection_positions (
        name TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        seq INTEGER NOT NULL
    )""",
]

PAGE_SIZE = 2048
"""Bytes a page, for files this store creates (a file keeps the size it was made with).

Half SQLite's default, for what an append costs: a commit rewrites every page it
touched, and a batch of heartbeats touches one leaf of ``UNIQUE(stream, version)`` per
node, each holding a few dozen bytes that changed. With 2 KB pages the commit writes
half the bytes, and a batch of 20 log lines (about 2.3 KB, which left 40 % of a 4 KB
page empty) fills its pages. Measured (README, "The append and heartbeat ratios"): 8 %
off an append, 44 % off a log line's bytes in batches of 20; a job with its script
takes 28 % more."""

NO_OP_WRITE = "UPDATE projection_positions SET seq = seq"
"""Changes nothing, yet needs a writable file and room in the WAL for its page."""

FREE_AFTER_FULL = 4 << 20
"""After the disk was full, health waits for this much free space before it tries a
write again: a one-page probe could pass where the batch that failed would not."""


def run_statements(conn: sqlite3.Connection, statements: list[Statement]) -> None:
    """Run statements in order, batching runs of the same SQL into ``executemany``."""
    for sql, group in itertools.groupby(statements, key=lambda st: st[0]):
        params = [p for _, p in group]
        if len(params) == 1:
            conn.execute(sql, params[0])
        else:
            conn.executemany(sql, params)


class SQLiteEventStore:
    def __init__(
        self,
        path: str | Path,
        projections: Sequence[Projection] = (),
        *,
        readers: int = 2,
        max_batch: int = 1024,
    ) -> None:
        self.path = Path(path)
        self.projections = list(projections)
        self._n_readers = readers
        self._max_batch = max_batch
        self._queue: list[Pending] = []
        self._writer_task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shelby-writer")
        self._wconn: sqlite3.Connection | None = None
        self._readers: list[Any] = []
        self._reader_cycle: itertools.cycle[Any] | None = None
        self._listeners: list[Listener] = []
        self._head = Head(0, GENESIS_HASH)
        # Each stream's version as this store last wrote or read it, touched only by the
        # writer thread: the version check of an append needs no query when it hits.
        self._versions: dict[str, int] = {}
        self._tree = Frontier()
        self._data_version = -1
        self._wal = WalCheckpointer(self.path)
        self._closed = False
        self.write_faults = WriteFaults()
        self._disk_full = False  # the standing fault is SQLITE_FULL
        self._archiving = asyncio.Lock()  # one archive run at a time

    # --- life cycle -------------------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._open_writer)
        except sqlite3.Error as exc:
            if not _is_fault(exc):
                raise
            # Read-only or full: serve what can be read; each write tries to open again.
            log.error("the event store cannot take writes; serving reads", error=str(exc))
            self._fault(exc)
        for _ in range(self._n_readers):
            conn = await aiosqlite.connect(self.path)
            await conn.execute("PRAGMA busy_timeout = 5000")
            await conn.execute("PRAGMA query_only = 1")
            self._readers.append(conn)
        self._reader_cycle = itertools.cycle(self._readers)

    def _open_writer(self) -> None:
        """Open the writer's connection, create what is missing and catch projections
        up; on any failure the connection is closed again and nothing is kept."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._wconn = conn
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # a new file's; no-op after
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a commit is on disk (the WAL is fsynced) before any caller is answered.
            conn.execute("PRAGMA synchronous = FULL")
            self._wal.attach(conn)
            conn.execute("BEGIN IMMEDIATE")
            _replace_old_delete_trigger(conn)
            for ddl in EVENTS_DDL:
                conn.execute(ddl)
            old_size = old_tree_size(conn)
            if old_size is not None:
                log.info("moving the Merkle tree to a row per batch", leaves=old_size)
                migrate_node_rows(conn, old_size)
            conn.execute("DELETE FROM archive_pending")  # empty between transactions anyway
            # SQLite opens a file it may not write read-only, and says so only at
            # the first write: make that now, not at a caller's append.
            conn.execute(NO_OP_WRITE)
            conn.execute("COMMIT")
            row = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
            self._head = Head(row[0], row[1]) if row else Head(0, GENESIS_HASH)
            self._data_version = -1
            self._versions.clear()
            conn.execute("BEGIN IMMEDIATE")
            self._load_tree(conn)
            conn.execute("COMMIT")
            self._prepare_projections()
        except BaseException:
            self._drop_writer()
            raise

    def _writer(self) -> sqlite3.Connection:
        """The writer's connection, opened again if a fault dropped it."""
        if self._wconn is None:
            if self._closed:
                raise StoreUnavailable("the store is not open")
            self._open_writer()
            log.info("the event store's writer is open again")
        return self._conn()

    def _drop_writer(self) -> None:
        conn, self._wconn = self._wconn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            conn.close()

    def _load_tree(self, conn: sqlite3.Connection) -> None:
        """Load the Merkle frontier, first extending the tree over any events it lacks
        (a log written before the tree existed, or copied in from elsewhere). Runs in
        the caller's transaction."""
        tree = load_frontier(conn)
        if tree.size < self._head.seq:
            log.info("extending the Merkle tree", size=tree.size, head=self._head.seq)
            rows = conn.execute("SELECT hash FROM events WHERE seq > ? ORDER BY seq", (tree.size,))
            append_leaves(conn, tree, (bytes.fromhex(h) for (h,) in rows))
        self._tree = tree

    def _prepare_projections(self) -> None:
        """Create missing projections, rebuild those whose version changed, and bring
        any that lag the log (new ones, or an interrupted rebuild) up to its head."""
        conn = self._conn()
        stale: list[Projection] = []
        behind: dict[int, list[Projection]] = {}
        for proj in self.projections:
            row = conn.execute(
                "SELECT version, seq FROM projection_positions WHERE name = ?", (proj.name,)
            ).fetchone()
            if row is None or row[0] != proj.version:
                stale.append(proj)
            elif row[1] < self._head.seq:
                behind.setdefault(row[1], []).append(proj)
        if stale:
            self._reset(stale)
            behind.setdefault(0, []).extend(stale)
        if self._head.seq == 0:
            return  # a new log: nothing to catch up on
        for after, projs in sorted(behind.items()):
            log.info("projections catching up", names=[p.name for p in projs], after=after)
            self._replay(projs, after, None)

    async def close(self) -> None:
        self._closed = True
        if self._writer_task is not None:
            with contextlib.suppress(Exception):
                await self._writer_task
        self._reader_cycle = None
        for conn in self._readers:
            await conn.close()
        self._readers.clear()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._wal.close)
        if self._wconn is not None:
            await loop.run_in_executor(self._executor, self._wconn.close)
            self._wconn = None
        self._executor.shutdown(wait=True)

    def _conn(self) -> sqlite3.Connection:
        if self._wconn is None:
            raise StoreUnavailable("the store is not open")
        return self._wconn

    # --- appending ----------------------------------------------------------------------

    async def append(
        self,
        stream: str,
        events: Sequence[Event],
        *,
        expected_version: int,
        timestamp: float,
    ) -> list[Recorded]:
        if not events:
            return []
        # Encoding happens here, on the loop, while the writer thread waits on fsync.
        p = pending(stream, events, expected_version, timestamp)
        self._queue.append(p)
        if self._writer_task is None or self._writer_task.done():
            self._writer_task = asyncio.create_task(self._drain())
        return await p.future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            try:
                results = await loop.run_in_executor(self._executor, self._write_batch, batch)
            except asyncio.CancelledError:
                # The loop is shutting down; the thread may still commit this batch, so
                # its callers are told the outcome is unknown, not that it failed.
                _fail(batch, "the store closed while this append was written; it may stand")
                raise
            except Exception as exc:  # the thread itself failed: nobody was written
                _fail(batch, f"the event store cannot take writes: {exc}")
                continue
            committed: list[Recorded] = []
            for p, result in zip(batch, results, strict=True):
                if p.future.done():  # the caller was cancelled; its write stands
                    pass
                elif isinstance(result, BaseException):
                    p.future.set_exception(result)
                else:
                    p.future.set_result(result)
                if not isinstance(result, BaseException):
                    committed.extend(result)
            if committed:
                self._publish(committed)

    def _write_batch(self, batch: list[Pending]) -> list[list[Recorded] | BaseException]:
        """One transaction for the whole batch. Versions are checked and hashes chained
        in memory first, so the common case is a few ``executemany`` calls; only if a
        statement is refused does the batch run again, each append in a savepoint."""
        try:
            conn = self._writer()
        except sqlite3.Error as exc:
            if not _is_fault(exc):
                raise
            return [self._fault(exc)] * len(batch)
        try:
            conn.execute("BEGIN IMMEDIATE")
            self._check_head(conn)
            versions: dict[str, int] = {}
            staged = self._stage(conn, batch, self._head, versions)
            recs = [r for result in staged if isinstance(result, list) for r in result]
            tree = self._tree.copy()
            try:
                self._insert(conn, recs, tree)
            except Exception as exc:
                if _is_fault(exc):
                    raise
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                versions.clear()
                tree = self._tree.copy()
                staged = self._write_isolated(conn, batch, versions, tree)
                recs = [r for result in staged if isinstance(result, list) for r in result]
            head = Head(recs[-1].seq, recs[-1].hash) if recs else self._head
            conn.execute("UPDATE projection_positions SET seq = ?", (head.seq,))
            conn.execute("COMMIT")
        except Exception as exc:
            return [self._abandon(conn, exc)] * len(batch)
        self._committed(conn, head, tree, versions)
        return staged

    def _abandon(self, conn: sqlite3.Connection, exc: Exception) -> StoreError:
        """Roll back a failed write transaction; the error its callers get.

        Whatever the transaction loaded into memory may have been rolled back with it:
        an impossible head makes the next one reload head, versions and tree."""
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        self._head = Head(-1, "")
        if isinstance(exc, StoreError):  # raised on purpose, with its own words
            return exc
        if _is_fault(exc):
            log.warning("the event store cannot take writes", error=str(exc))
            err = self._fault(exc)
            if _breaks_connection(exc):
                self._drop_writer()  # the next transaction opens it again
            return err
        log.exception("the writer failed")
        return StoreError(f"the event store failed: {exc}")

    def _committed(
        self, conn: sqlite3.Connection, head: Head, tree: Frontier, versions: dict[str, int]
    ) -> None:
        """Adopt what a committed write transaction made."""
        self.write_faults.succeeded()
        self._head = head
        self._tree = tree
        remember_versions(self._versions, versions)
        self._wal.committed(conn)

    def _fault(self, exc: BaseException) -> StoreUnavailable:
        """Note a fault of the database for health, and the error its callers get."""
        err = _unavailable(exc)
        self.write_faults.failed(err)
        self._disk_full = _is_full(exc)
        return err

    def _check_head(self, conn: sqlite3.Connection) -> None:
        """The store is the only writer of its file; if the log moved after all (another
        process appended, or the last batch failed), what is cached is read again.

        ``data_version`` changes only when another connection commits, so the common
        case costs no read of the log."""
        data_version = conn.execute("PRAGMA data_version").fetchone()[0]
        if data_version == self._data_version and self._head.seq >= 0:
            return
        self._data_version = data_version
        row = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        head = Head(row[0], row[1]) if row else Head(0, GENESIS_HASH)
        if head != self._head:
            if self._head.seq >= 0:  # not merely our own failed batch being forgotten
                log.warning("the log moved under this store; reloading its head", seq=head.seq)
            self._head = head
            self._versions.clear()
            self._load_tree(conn)

    def _stage(
        self,
        conn: sqlite3.Connection,
        batch: list[Pending],
        head: Head,
        versions: dict[str, int],
    ) -> list[list[Recorded] | BaseException]:
        """Check each append's expected version and chain its events onto ``head``;
        ``versions`` collects the streams' new versions."""
        results: list[list[Recorded] | BaseException] = []
        seq, prev = head.seq, head.hash
        for p in batch:
            current = versions.get(p.stream)
            if current is None:
                current = self._stream_version(conn, p.stream)
            if current != p.expected_version:
                results.append(ConcurrencyError(p.stream, p.expected_version))
                continue
            recs = chain(p, seq, prev)
            seq, prev = recs[-1].seq, recs[-1].hash
            versions[p.stream] = recs[-1].version
            results.append(recs)
        return results

    def _write_isolated(
        self,
        conn: sqlite3.Connection,
        batch: list[Pending],
        versions: dict[str, int],
        tree: Frontier,
    ) -> list[list[Recorded] | BaseException]:
        """The slow road: each append in its own savepoint, so that one refused by a
        projection (a bug) fails alone and the rest of its batch still commits."""
        results: list[list[Recorded] | BaseException] = []
        head = self._head
        for p in batch:
            trial = dict(versions)
            (result,) = self._stage(conn, [p], head, trial)
            if isinstance(result, list):
                conn.execute("SAVEPOINT append")
                trial_tree = tree.copy()
                try:
                    self._insert(conn, result, trial_tree)
                except Exception as exc:
                    if _is_fault(exc):
                        raise
                    conn.execute("ROLLBACK TO append")
                    log.error("projection refused an append", stream=p.stream, error=str(exc))
                    result = StoreError(f"a projection refused the append: {exc}")
                else:
                    versions.update(trial)
                    tree.adopt(trial_tree)
                    head = Head(result[-1].seq, result[-1].hash)
                conn.execute("RELEASE append")
            results.append(result)
        return results

    def _insert(self, conn: sqlite3.Connection, recs: list[Recorded], tree: Frontier) -> None:
        """Write events, their Merkle nodes (advancing ``tree``) and projection rows."""
        conn.executemany(
            INSERT_EVENT,
            [
                (r.seq, r.stream, r.version, r.type, r.timestamp, r.data, r.prev_hash, r.hash)
                for r in recs
            ],
        )
        append_leaves(conn, tree, [bytes.fromhex(r.hash) for r in recs])
        run_statements(conn, self._project(recs))

    def _stream_version(self, conn: sqlite3.Connection, stream: str) -> int:
        version = self._versions.get(stream)
        if version is None:
            row = conn.execute(
                "SELECT max(version) FROM events WHERE stream = ?", (stream,)
            ).fetchone()
            version = row[0] or 0
        return version

    def _project(self, recs: list[Recorded]) -> list[Statement]:
        return project(self.projections, recs)

    # --- archiving ----------------------------------------------------------------------

    @property
    def archive_dir(self) -> Path:
        return archive_dir(self.path)

    async def archive(
        self, *, before: float, now: float, limit: int = ARCHIVE_LIMIT
    ) -> Recorded | None:
        """Move up to ``limit`` heartbeats and log batches older than ``before`` to a new
        segment (``events.archive``); the ``HistoryArchived`` event appended, or
        ``None`` when there was nothing to move."""
        async with self._archiving:
            plan = await self.plan_archive(before=before, now=now, limit=limit)
            if plan is None:
                return None
            return await self.commit_archive(plan, now=now)

    async def plan_archive(
        self, *, before: float, now: float, limit: int = ARCHIVE_LIMIT
    ) -> ArchivePlan | None:
        """Step one: the segment written and fsynced; the log is only read."""

        return await self._on_own_connection(
            lambda conn: plan_archive(conn, self.archive_dir, before=before, now=now, limit=limit)
        )

    async def commit_archive(self, plan: ArchivePlan, *, now: float) -> Recorded:
        """Step two, through the writer like any append: ``HistoryArchived`` appended
        and the segment's rows deleted, in one transaction."""
        p = pending(ARCHIVE_STREAM, [plan.event], plan.expected_version, now)
        loop = asyncio.get_running_loop()
        recs = await loop.run_in_executor(self._executor, self._write_archive, p, plan.seqs)
        self._publish(recs)
        return recs[0]

    def _write_archive(self, p: Pending, seqs: list[int]) -> list[Recorded]:
        try:
            conn = self._writer()
        except sqlite3.Error as exc:
            if not _is_fault(exc):
                raise
            raise self._fault(exc) from exc
        try:
            conn.execute("BEGIN IMMEDIATE")
            self._check_head(conn)
            versions: dict[str, int] = {}
            (staged,) = self._stage(conn, [p], self._head, versions)
            if isinstance(staged, BaseException):
                raise staged
            tree = self._tree.copy()
            self._insert(conn, staged, tree)
            # The rows leaving must be the segment's, hash for hash: the delete trigger
            # lets go of the seqs listed here, and only while HistoryArchived is newest.
            conn.executemany("INSERT INTO archive_pending (seq) VALUES (?)", [(s,) for s in seqs])
            hashes = conn.execute(
                "SELECT e.hash FROM archive_pending AS a JOIN events AS e ON e.seq = a.seq"
                " ORDER BY a.seq"
            ).fetchall()
            event = staged[0].event
            assert isinstance(event, HistoryArchived)
            if len(hashes) != len(seqs) or digest_of(h for (h,) in hashes) != event.digest:
                raise StoreError("the log's rows are not the segment's; nothing was archived")
            conn.execute("DELETE FROM events WHERE seq IN (SELECT seq FROM archive_pending)")
            conn.execute("DELETE FROM archive_pending")
            head = Head(staged[-1].seq, staged[-1].hash)
            conn.execute("UPDATE projection_positions SET seq = ?", (head.seq,))
            conn.execute("COMMIT")
        except Exception as exc:
            err = self._abandon(conn, exc)
            if err is exc:
                raise
            raise err from exc
        self._committed(conn, head, tree, versions)
        return staged

    async def check_archive(self) -> list[tuple[int, str]]:
        return await self._on_own_connection(lambda conn: check_entries(conn, self.archive_dir))

    # --- subscribers --------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _publish(self, recs: list[Recorded]) -> None:
        for listener in list(self._listeners):
            try:
                listener(recs)
            except Exception:
                log.exception("event listener failed")

    # --- reading ------------------------------------------------------------------------

    def _reader(self) -> Any:
        if self._reader_cycle is None:
            raise StoreUnavailable("the store is not open")
        return next(self._reader_cycle)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            rows = await self._reader().execute_fetchall(sql, params)
        except sqlite3.Error as exc:
            if _is_fault(exc):
                raise StoreUnavailable(f"the event store cannot be read: {exc}") from exc
            raise StoreError(f"the store refused a query: {exc}") from exc
        except ValueError as exc:  # aiosqlite: the connection is closed
            raise StoreUnavailable(f"the event store cannot be read: {exc}") from exc
        return list(rows)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def read_stream(self, stream: str, after_version: int = 0) -> list[Recorded]:
        rows = await self.fetchall(
            f"{SELECT_EVENTS} WHERE stream = ? AND version > ? ORDER BY version",
            (stream, after_version),
        )
        return [row_to_recorded(r) for r in rows]

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[Recorded]:
        rows = await self.fetchall(
            f"{SELECT_EVENTS} WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        )
        return [row_to_recorded(r) for r in rows]

    async def iter_raw(self, after: int = 0) -> AsyncIterator[list[tuple[Any, ...]]]:
        conn = await asyncio.to_thread(self._connect_reader)
        reader = UnionReader(conn, self.archive_dir)
        try:
            head = await asyncio.to_thread(reader.head)
            while after < head:
                high = min(after + REBUILD_CHUNK, head)
                yield await asyncio.to_thread(reader.window, after, high)
                after = high
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the event store cannot be read: {exc}") from exc
        finally:
            reader.close()
            conn.close()

    async def read_raw(self, after: int, limit: int) -> list[tuple[Any, ...]]:
        head = (await self.head()).seq
        high = min(after + limit, head)
        if high <= after:
            return []
        rows = await self.fetchall(
            f"{SELECT_EVENTS} WHERE seq > ? AND seq <= ? ORDER BY seq", (after, high)
        )
        if len(rows) == high - after:
            return rows
        return await self._read_union(lambda reader: reader.window(after, high))

    async def read_raw_stream(self, stream: str) -> list[tuple[Any, ...]]:
        rows = await self.fetchall(f"{SELECT_EVENTS} WHERE stream = ? ORDER BY version", (stream,))
        if not rows or rows[-1][2] == len(rows):
            return rows
        return await self._read_union(lambda reader: reader.stream(stream))

    def _connect_reader(self) -> sqlite3.Connection:
        """A connection of its own, apart from the writer's and the readers'. Its text
        survives bytes that are not UTF-8 (a tampered file): they come back as lone
        surrogates, and verify names the row."""
        conn = sqlite3.connect(self.path, check_same_thread=False)
        conn.execute("PRAGMA query_only = 1")
        conn.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
        return conn

    async def _on_own_connection(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work`` in a thread of its own, on a connection of its own."""

        def run() -> T:
            conn = self._connect_reader()
            try:
                return work(conn)
            finally:
                conn.close()

        try:
            return await asyncio.to_thread(run)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the event store cannot be read: {exc}") from exc

    async def _read_union(
        self, read: Callable[[UnionReader], list[tuple[Any, ...]]]
    ) -> list[tuple[Any, ...]]:
        def work(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            reader = UnionReader(conn, self.archive_dir)
            try:
                return read(reader)
            finally:
                reader.close()

        return await self._on_own_connection(work)

    async def head(self) -> Head:
        row = await self.fetchone("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
        return Head(row[0], row[1]) if row else Head(0, GENESIS_HASH)

    async def tree_nodes(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        leaf_of, wanted = wanted_rows(keys)
        with stored_tree():
            rows = await self.fetchall(ROWS_OF, (wanted,))
        return nodes_in(leaf_of, rows)

    async def ping(self) -> None:
        await self.fetchone("SELECT 1 FROM projection_positions LIMIT 1")

    async def check_writable(self) -> None:
        loop = asyncio.get_running_loop()

        async def probe() -> None:
            await loop.run_in_executor(self._executor, self._probe_write)

        await self.write_faults.check(probe)

    def _probe_write(self) -> None:
        """A write that changes nothing but needs what every write needs: the file
        open for writing, its lock, and room for a page in the WAL."""
        if self.write_faults.fault is not None and self._disk_full:
            # A one-page write may fit where the failed batch did not: wait for room.
            stat = os.statvfs(self.path.parent)
            free = stat.f_bavail * stat.f_frsize
            if free < FREE_AFTER_FULL:
                raise StoreUnavailable(
                    f"the event store cannot take writes: the disk is full ({free} bytes free)"
                )
        try:
            conn = self._writer()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(NO_OP_WRITE)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if not _is_fault(exc):
                raise StoreError(f"the event store failed: {exc}") from exc
            if _breaks_connection(exc):
                self._drop_writer()
            raise self._fault(exc) from exc

    # --- rebuilding ---------------------------------------------------------------------

    async def rebuild(self, progress: Callable[[int, int], None] | None = None) -> int:
        loop = asyncio.get_running_loop()

        def run() -> int:
            # Refuse before dropping anything: a replay without every segment would
            # rebuild views that the live ones are not.
            problems = check_entries(self._writer(), self.archive_dir)
            if problems:
                raise ArchiveUnavailable("; ".join(reason for _, reason in problems))
            self._reset(self.projections)
            return self._replay(self.projections, 0, progress)

        return await loop.run_in_executor(self._executor, run)

    def _reset(self, projs: Sequence[Projection]) -> None:
        conn = self._writer()
        conn.execute("BEGIN IMMEDIATE")
        for proj in projs:
            for table in proj.tables:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
            for ddl in proj.ddl:
                conn.execute(ddl)
            conn.execute(
                "INSERT INTO projection_positions (name, version, seq) VALUES (?, ?, 0)"
                " ON CONFLICT (name) DO UPDATE SET version = excluded.version, seq = 0",
                (proj.name, proj.version),
            )
        conn.execute("COMMIT")

    def _replay(
        self,
        projs: Sequence[Projection],
        after: int,
        progress: Callable[[int, int], None] | None,
    ) -> int:
        """Apply the log after ``after`` to ``projs``, one transaction per chunk, each
        saving the position it reached: an interrupted replay resumes where it stopped."""
        conn = self._writer()
        total = self._head.seq
        applied = 0
        names = [p.name for p in projs]
        marks = ",".join("?" * len(names))
        own = self._connect_reader()  # a cursor of its own, apart from the writes
        # Plain text: a replay decodes every row it keeps, so it has no use for the
        # surrogates that let verify name a row that is not UTF-8, and making them
        # costs a Python call per column (a tenth of a rebuild).
        own.text_factory = str
        reader = UnionReader(own, self.archive_dir)
        try:
            while after < total:
                high = min(after + REBUILD_CHUNK, total)
                try:
                    rows = reader.window(after, high)
                except sqlite3.OperationalError as exc:
                    if "UTF-8" not in str(exc):
                        raise
                    raise StoreError(
                        f"an event after seq {after} is not valid UTF-8; shelby verify names it"
                    ) from exc
                statements = project(projs, replay_records(projs, rows))
                after = high
                conn.execute("BEGIN IMMEDIATE")
                try:
                    run_statements(conn, statements)
                    conn.execute(
                        f"UPDATE projection_positions SET seq = ? WHERE name IN ({marks})",
                        (after, *names),
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                self._wal.committed(conn)
                applied += len(rows)
                if progress is not None:
                    progress(applied, total)
        finally:
            reader.close()
            own.close()
        return applied


def _unavailable(exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"the event store cannot take writes: {exc}")


def _is_full(exc: BaseException) -> bool:
    return getattr(exc, "sqlite_errorname", "").startswith("SQLITE_FULL")


# Faults after which the writer's connection is still good: the disk or memory was
# full, or another process held the lock. After any other (read-only, I/O, the file
# replaced) it is opened again.
_KEEPS_CONNECTION = frozenset({"SQLITE_FULL", "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_NOMEM"})


def _breaks_connection(exc: BaseException) -> bool:
    name = getattr(exc, "sqlite_errorname", None) or ""
    return "_".join(name.split("_")[:2]) not in _KEEPS_CONNECTION


def _replace_old_delete_trigger(conn: sqlite3.Connection) -> None:
    """A log made before retention has a delete trigger that refuses even archiving."""
    row = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'events_no_delete'"
    ).fetchone()
    if row is not None and "archive_pending" not in row[0]:
        conn.execute("DROP TRIGGER events_no_delete")


def _fail(batch: list[Pending], reason: str) -> None:
    for p in batch:
        if not p.future.done():
            p.future.set_exception(StoreUnavailable(reason))


# Result codes that mean the database itself is in trouble (its disk, its file, its
# locks), as against a statement that is wrong or that a constraint refused.
_FAULTS = frozenset(
    {
        "SQLITE_BUSY",
        "SQLITE_LOCKED",
        "SQLITE_NOMEM",
        "SQLITE_READONLY",
        "SQLITE_IOERR",
        "SQLITE_CORRUPT",
        "SQLITE_FULL",
        "SQLITE_CANTOPEN",
        "SQLITE_PROTOCOL",
        "SQLITE_NOTADB",
        "SQLITE_NOLFS",
        "SQLITE_AUTH",
        "SQLITE_PERM",
    }
)


def _is_fault(exc: BaseException) -> bool:
    """A fault of the database (full, read-only, I/O, locked): ``StoreUnavailable``.
    Anything else is a statement the database refused, or a bug of ours."""
    if not isinstance(exc, sqlite3.Error):
        return False
    name = getattr(exc, "sqlite_errorname", None)
    if name is None:  # raised by the sqlite3 module itself, e.g. on a closed connection
        return not isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError)
    primary = "_".join(name.split("_")[:2])  # SQLITE_IOERR_WRITE -> SQLITE_IOERR
    return primary in _FAULTS

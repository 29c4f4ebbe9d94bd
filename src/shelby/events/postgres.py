"""The PostgreSQL event store: one database that several ``shelby serve`` replicas share.

It keeps the SQLite store's tables and behaviour (API.md, "Storage"), and adds what
several writers need:

- Order. Every append transaction first locks the one row of ``event_head``
  (``SELECT seq, hash ... FOR UPDATE``) and holds it until it commits. The next seq
  and the previous hash are read under that lock, so seqs are handed out gap-free and
  in commit order, whichever replica appends: a reader that follows ``seq`` never
  passes an event that is still to commit below it, and the hash chain stays whole.
- Group commit, as in SQLite: ``append`` queues a request and one writer task per
  process commits everything queued meanwhile in one transaction, so the head lock
  and the commit's fsync are paid once per batch, not once per caller.
- Projections are written in the append's transaction, so any replica reads its own
  writes, and every replica reads the same views.
- ``subscribe`` hears every replica: each commit sends ``NOTIFY shelby_events`` with
  its last seq; every store LISTENs, reads the events after the last one it handed
  out, and gives them to its listeners in seq order. Its own commits skip the read.

A lost connection is not a lost write: the writer reconnects and retries the batch,
and first checks under the head lock whether the batch it was committing when the
connection broke is in the log already (its last hash at its seq), in which case that
outcome is what its callers get.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]
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
from shelby.events.codec import GENESIS_HASH
from shelby.events.merkle import Frontier, NodeKey, keys_for_root
from shelby.events.store import (
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
from shelby.events.types import Event

__all__ = ["CHANNEL", "PostgresEventStore", "map_error", "to_dollar_params"]

log = structlog.get_logger(__name__)

CHANNEL = "shelby_events"

# Serialises schema creation and projection preparation between replicas that start
# at once: CREATE ... IF NOT EXISTS is not safe against a concurrent twin in PostgreSQL.
_SCHEMA_LOCK = 0x5E1B7_0001

EVENTS_DDL = [
    """CREATE TABLE IF NOT EXISTS events (
        seq BIGINT PRIMARY KEY,
        stream TEXT NOT NULL,
        version BIGINT NOT NULL,
        type TEXT NOT NULL,
        timestamp DOUBLE PRECISION NOT NULL,
        data TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        UNIQUE (stream, version)
    )""",
    """CREATE OR REPLACE FUNCTION shelby_refuse_change() RETURNS trigger
       LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION 'the event log is append-only'; END $$""",
    """CREATE OR REPLACE TRIGGER events_no_update BEFORE UPDATE ON events
       FOR EACH ROW EXECUTE FUNCTION shelby_refuse_change()""",
    """CREATE OR REPLACE TRIGGER events_no_delete BEFORE DELETE ON events
       FOR EACH ROW EXECUTE FUNCTION shelby_refuse_change()""",
    # SQLite has no TRUNCATE; PostgreSQL does, and it skips row triggers.
    """CREATE OR REPLACE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
       FOR EACH STATEMENT EXECUTE FUNCTION shelby_refuse_change()""",
    # The head of the log: the row every append locks, so appends commit one after
    # another in seq order whichever replica makes them.
    """CREATE TABLE IF NOT EXISTS event_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq BIGINT NOT NULL,
        hash TEXT NOT NULL
    )""",
    f"INSERT INTO event_head (id, seq, hash) VALUES (1, 0, '{GENESIS_HASH}')"
    " ON CONFLICT (id) DO NOTHING",
    # The Merkle tree's perfect subtrees (events/merkle.py), kept with the log.
    """CREATE TABLE IF NOT EXISTS merkle_nodes (
        level INTEGER NOT NULL,
        idx BIGINT NOT NULL,
        hash BYTEA NOT NULL,
        PRIMARY KEY (level, idx)
    )""",
    """CREATE TABLE IF NOT EXISTS projection_positions (
        name TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        seq BIGINT NOT NULL
    )""",
]

COLUMNS = ("seq", "stream", "version", "type", "timestamp", "data", "prev_hash", "hash")
INSERT_NODE = "INSERT INTO merkle_nodes (level, idx, hash) VALUES ($1, $2, $3)"
# A batch's events and Merkle nodes in one statement and one round trip: arrays, one
# per column, rather than a row at a time.
INSERT_EVENTS_AND_NODES = """WITH new_events AS (
    INSERT INTO events (seq, stream, version, type, timestamp, data, prev_hash, hash)
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[],
                         $5::float8[], $6::text[], $7::text[], $8::text[])
)
INSERT INTO merkle_nodes (level, idx, hash)
SELECT * FROM unnest($9::int[], $10::bigint[], $11::bytea[])"""
SELECT_SINCE = "SELECT seq, stream, version, hash FROM events WHERE seq > $1 ORDER BY seq"
SELECT_NODES = (
    "SELECT n.level, n.idx, n.hash FROM merkle_nodes n"
    " JOIN unnest($1::int[], $2::bigint[]) AS k (level, idx) USING (level, idx)"
)
SELECT_EVENTS = "SELECT seq, stream, version, type, timestamp, data, prev_hash, hash FROM events"
LOCK_HEAD = "SELECT seq, hash FROM event_head WHERE id = 1 FOR UPDATE"
SELECT_VERSIONS = (
    "SELECT stream, max(version) FROM events WHERE stream = ANY($1::text[]) GROUP BY stream"
)

CATCH_UP_LIMIT = 20_000  # further behind than this, reload rather than replay
PUBLISH_CHUNK = 1_000
WRITE_ATTEMPTS = 3
CONNECT_TIMEOUT = 5.0
PING_TIMEOUT = 3.0

Result = list[Recorded] | BaseException


# --- SQL and errors -----------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def to_dollar_params(sql: str) -> str:
    """``?`` placeholders (the projections' and the readers' dialect) as ``$1..$n``.

    A ``?`` inside a quoted string or identifier is text, not a placeholder.
    """
    out: list[str] = []
    quote = ""
    n = 0
    for ch in sql:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "?":
            n += 1
            out.append(f"${n}")
            continue
        out.append(ch)
    return "".join(out)


# SQLSTATE classes of a statement that the database refused (a constraint, bad data,
# bad SQL): the request's own fault, not the database's.
_REFUSED_CLASSES = frozenset({"21", "22", "23", "2B", "42", "44", "P0"})


def _sqlstate(exc: BaseException) -> str:
    return str(getattr(exc, "sqlstate", "") or "")


def is_refusal(exc: BaseException) -> bool:
    """A statement the database refused, as against a fault of the database itself."""
    if isinstance(exc, asyncpg.exceptions.InvalidCachedStatementError):
        return False  # the schema changed under a prepared statement: retry afresh
    if isinstance(exc, asyncpg.PostgresError):
        return _sqlstate(exc)[:2] in _REFUSED_CLASSES
    # asyncpg's own check of an argument against its column type, before sending.
    return isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError)


def map_error(exc: BaseException, *, stream: str = "", expected_version: int = 0) -> StoreError:
    """The project's exception for a driver error (the documented mapping):

    - a duplicate ``(stream, version)`` in ``events``: ``ConcurrencyError``;
    - a refused statement (constraint, data, SQL, trigger): ``StoreError``;
    - anything else (no connection, disk full, read-only, shut down, timeouts):
      ``StoreUnavailable``.
    """
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, asyncpg.UniqueViolationError) and exc.table_name == "events":
        return ConcurrencyError(stream, expected_version)
    if is_refusal(exc):
        err = StoreError(f"the database refused the statement: {exc}")
    else:
        err = StoreUnavailable(f"the PostgreSQL event store is unavailable: {exc!r}")
    err.__cause__ = exc
    return err


def _decode_numeric(text: str) -> int | float:
    # sum() over BIGINT is NUMERIC in PostgreSQL; callers expect the int SQLite gives.
    return float(text) if any(c in text for c in ".eENI") else int(text)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "numeric", schema="pg_catalog", encoder=str, decoder=_decode_numeric, format="text"
    )


def _runs(statements: list[Statement]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """Consecutive statements with the same SQL, grouped to run as one ``executemany``."""
    return [
        (to_dollar_params(sql), [p for _, p in group])
        for sql, group in itertools.groupby(statements, key=lambda st: st[0])
    ]


async def _run_statements(conn: asyncpg.Connection, statements: list[Statement]) -> None:
    for sql, params in _runs(statements):
        if len(params) == 1:
            await conn.execute(sql, *params[0])
        else:
            await conn.executemany(sql, params)


# --- the store ----------------------------------------------------------------------


class _Plan:
    """What a batch's transaction was about to commit, kept in case the connection
    breaks while the COMMIT is on its way and its outcome is unknown."""

    __slots__ = ("last", "results")

    def __init__(self) -> None:
        self.results: list[Result] = []
        self.last: Recorded | None = None


class _Lost(Exception):
    """The connection broke, or the server asked for a retry; nothing is known to be
    committed beyond what ``plan`` says might be."""

    def __init__(self, cause: BaseException, plan: _Plan) -> None:
        super().__init__(repr(cause))
        self.cause = cause
        self.plan = plan


class PostgresEventStore:
    def __init__(
        self,
        dsn: str,
        projections: Sequence[Projection] = (),
        *,
        readers: int = 4,
        max_batch: int = 1024,
    ) -> None:
        self.dsn = dsn
        self.projections = list(projections)
        self._n_readers = readers
        self._max_batch = max_batch
        self._pool: asyncpg.Pool | None = None
        self._wconn: asyncpg.Connection | None = None
        self._lconn: asyncpg.Connection | None = None
        self._queue: list[Pending] = []
        self._writer_task: asyncio.Task[None] | None = None
        self._listeners: list[Listener] = []
        self.write_faults = WriteFaults()
        # Publication: ``_published`` is the last seq handed to listeners, ``_known``
        # the highest seq known to be committed (by a NOTIFY or our own commit), and
        # ``_local`` our own committed batches by first seq, not yet handed out.
        self._published = 0
        self._known = 0
        self._local: dict[int, list[Recorded]] = {}
        self._wake = asyncio.Event()
        self._publisher: asyncio.Task[None] | None = None
        self._relisten: asyncio.Task[None] | None = None
        self._closing = False
        # What the writer knows of the log as of seq ``_synced``: the Merkle frontier
        # and the versions of streams it has seen. When another replica has appended
        # since, the writer folds in the events after ``_synced`` under the head lock
        # (one query), so a version check needs no query for a stream it knows.
        self._synced = -1
        self._tree: Frontier | None = None
        self._versions: dict[str, int] = {}

    # --- life cycle -------------------------------------------------------------------

    async def _connect(self) -> asyncpg.Connection:
        try:
            conn: asyncpg.Connection = await asyncpg.connect(
                self.dsn, timeout=CONNECT_TIMEOUT, statement_cache_size=512
            )
            await _init_connection(conn)
        except Exception as exc:
            raise map_error(exc) from exc
        return conn

    async def open(self) -> None:
        self._closing = False
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self._n_readers,
                init=_init_connection,
                timeout=CONNECT_TIMEOUT,
                statement_cache_size=512,
            )
        except Exception as exc:
            raise map_error(exc) from exc
        try:
            self._wconn = await self._connect()
            await self._create_schema(self._wconn)
            await self._prepare_projections(self._wconn)
            await self._listen()
            head = await self.head()
            self._published = self._known = head.seq
            self._publisher = asyncio.create_task(self._publish_loop())
        except BaseException:
            await self.close()
            raise

    async def _create_schema(self, conn: asyncpg.Connection) -> None:
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                for ddl in EVENTS_DDL:
                    await conn.execute(ddl)
        except Exception as exc:
            raise map_error(exc) from exc

    async def _prepare_projections(self, conn: asyncpg.Connection) -> None:
        """Create missing projections, rebuild those whose version changed, and bring
        any that lag the log up to its head: under the head lock, in one transaction,
        so that replicas starting together do it once and nobody appends meanwhile."""
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                head_seq = (await conn.fetchrow(LOCK_HEAD))[0]
                await self._extend_tree(conn, head_seq)
                rows = await conn.fetch("SELECT name, version, seq FROM projection_positions")
                positions = {name: (version, seq) for name, version, seq in rows}
                stale: list[Projection] = []
                behind: dict[int, list[Projection]] = {}
                for proj in self.projections:
                    pos = positions.get(proj.name)
                    if pos is None or pos[0] != proj.version:
                        stale.append(proj)
                    elif pos[1] < head_seq:
                        behind.setdefault(pos[1], []).append(proj)
                if stale:
                    await self._reset(conn, stale)
                    behind.setdefault(0, []).extend(stale)
                for after, projs in sorted(behind.items()):
                    log.info("projections catching up", names=[p.name for p in projs], after=after)
                    await self._replay(conn, projs, after, head_seq, None)
        except StoreError:
            raise
        except Exception as exc:
            raise map_error(exc) from exc

    async def _sync(self, conn: asyncpg.Connection, head_seq: int) -> Frontier:
        """Bring the writer's frontier and versions up to ``head_seq`` (under the head
        lock); returns a copy of the frontier to extend."""
        behind = head_seq - self._synced
        if self._tree is not None and 0 < behind <= CATCH_UP_LIMIT:
            rows = await conn.fetch(SELECT_SINCE, self._synced)
            if len(rows) == behind:
                for _seq, stream, version, hash_ in rows:
                    self._tree.append(bytes.fromhex(hash_))
                    self._versions.pop(stream, None)
                    self._versions[stream] = version
                self._synced = head_seq
        if self._tree is None or self._synced != head_seq:
            self._tree = await self._frontier(conn, head_seq)
            self._versions.clear()
            self._synced = head_seq
        return self._tree.copy()

    async def _stream_versions(
        self, conn: asyncpg.Connection, batch: list[Pending]
    ) -> dict[str, int]:
        """Each batch stream's version: known ones from memory, the rest from the log."""
        known = self._versions
        versions = {p.stream: known[p.stream] for p in batch if p.stream in known}
        missing = list({p.stream for p in batch if p.stream not in versions})
        if missing:
            found = dict(await conn.fetch(SELECT_VERSIONS, missing))
            versions.update({stream: found.get(stream, 0) for stream in missing})
        return versions

    def _committed_state(self, tree: Frontier, versions: dict[str, int]) -> None:
        self._tree = tree
        self._synced = tree.size
        remember_versions(self._versions, versions)

    async def _frontier(self, conn: asyncpg.Connection, size: int) -> Frontier:
        """The tree's frontier at ``size`` leaves, from its O(log n) stored nodes."""
        keys = keys_for_root(size)
        rows = await conn.fetch(SELECT_NODES, [k[0] for k in keys], [k[1] for k in keys])
        nodes = {(level, idx): bytes(h) for level, idx, h in rows}
        return Frontier.load(size, lambda level, index: nodes[level, index])

    async def _extend_tree(self, conn: asyncpg.Connection, head_seq: int) -> None:
        """Extend the tree over any events it lacks (a log copied in, or written before
        the tree existed), in the caller's transaction."""
        size = await conn.fetchval(
            "SELECT coalesce(max(idx) + 1, 0) FROM merkle_nodes WHERE level = 0"
        )
        if size >= head_seq:
            return
        log.info("extending the Merkle tree", size=size, head=head_seq)
        tree = await self._frontier(conn, size)
        after = size
        while True:
            rows = await conn.fetch(
                "SELECT seq, hash FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
                after,
                REBUILD_CHUNK,
            )
            if not rows:
                break
            await conn.executemany(
                INSERT_NODE, [n for _, h in rows for n in tree.append(bytes.fromhex(h))]
            )
            after = rows[-1][0]

    async def close(self) -> None:
        self._closing = True
        if self._writer_task is not None:
            with contextlib.suppress(Exception):
                await self._writer_task
        for task in (self._publisher, self._relisten):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._publisher = self._relisten = None
        for conn in (self._lconn, self._wconn):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 5)
        self._lconn = self._wconn = None
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pool.close(), 5)
            self._pool = None

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
        if self._pool is None or self._closing:
            raise StoreUnavailable("the store is not open")
        p = pending(stream, events, expected_version, timestamp)
        self._queue.append(p)
        if self._writer_task is None or self._writer_task.done():
            self._writer_task = asyncio.create_task(self._drain())
        return await p.future

    async def _drain(self) -> None:
        while self._queue:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            try:
                results = await self._commit(batch)
            except asyncio.CancelledError:
                # Shutting down mid-batch: the commit may or may not have happened.
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(
                            StoreUnavailable("the store closed while this append was written")
                        )
                raise
            except Exception as exc:  # the writer itself failed: nobody was written
                results = [StoreUnavailable(f"the event store cannot take writes: {exc!r}")]
                results *= len(batch)
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
            fault = next((r for r in results if isinstance(r, StoreUnavailable)), None)
            if fault is not None:
                self.write_faults.failed(fault)
            elif committed:
                self.write_faults.succeeded()
            if committed:
                self._committed_here(committed)

    async def _commit(self, batch: list[Pending]) -> list[Result]:
        """Commit ``batch``, reconnecting and retrying when the connection breaks."""
        prior: _Plan | None = None
        last_error: BaseException | None = None
        for attempt in range(WRITE_ATTEMPTS):
            if attempt:
                await asyncio.sleep(0.1 * 4 ** (attempt - 1))  # 0.1 s, then 0.4 s
            try:
                conn = await self._writer()
            except StoreUnavailable as exc:
                last_error = exc
                continue
            try:
                return await self._write_batch(conn, batch, prior, isolate=False)
            except _Lost as lost:
                last_error = lost.cause
                prior = lost.plan if lost.plan.last is not None else prior
                log.warning("append batch retried", error=repr(lost.cause), attempt=attempt + 1)
                await self._drop_writer()
            except StoreError as exc:
                return [exc] * len(batch)
            except Exception as exc:
                if not is_refusal(exc):
                    return [map_error(exc)] * len(batch)
                # A statement was refused: find whose, one savepoint per request, so
                # that it fails alone and the rest of the batch commits.
                try:
                    return await self._write_batch(conn, batch, prior, isolate=True)
                except _Lost as lost:
                    last_error = lost.cause
                    prior = lost.plan if lost.plan.last is not None else prior
                    await self._drop_writer()
                except Exception as exc2:
                    return [map_error(exc2)] * len(batch)
        err = StoreUnavailable(f"the event store cannot take writes: {last_error!r}")
        err.__cause__ = last_error
        return [err] * len(batch)

    async def _writer(self) -> asyncpg.Connection:
        if self._wconn is None or self._wconn.is_closed():
            self._wconn = await self._connect()
        return self._wconn

    async def _drop_writer(self) -> None:
        conn, self._wconn = self._wconn, None
        if conn is not None:
            conn.terminate()

    async def _write_batch(
        self,
        conn: asyncpg.Connection,
        batch: list[Pending],
        prior: _Plan | None,
        *,
        isolate: bool,
    ) -> list[Result]:
        plan = _Plan()
        try:
            await conn.execute("BEGIN")
            seq, head = await conn.fetchrow(LOCK_HEAD)
            if prior is not None and prior.last is not None:
                # Under the lock, so a COMMIT still in flight has landed or never will.
                found = await conn.fetchval(
                    "SELECT hash FROM events WHERE seq = $1", prior.last.seq
                )
                if found == prior.last.hash:
                    await conn.execute("ROLLBACK")
                    return prior.results
            tree = await self._sync(conn, seq)
            versions = await self._stream_versions(conn, batch)
            fresh: list[Recorded] = []
            for p in batch:
                if versions[p.stream] != p.expected_version:
                    plan.results.append(ConcurrencyError(p.stream, p.expected_version))
                    continue
                recs = chain(p, seq, head)
                if isolate:
                    await conn.execute("SAVEPOINT append")
                    trial = tree.copy()
                    try:
                        await self._insert(conn, recs, trial)
                    except Exception as exc:
                        if not is_refusal(exc) or conn.is_closed():
                            raise
                        await conn.execute("ROLLBACK TO SAVEPOINT append")
                        log.error("the database refused an append", stream=p.stream, error=str(exc))
                        plan.results.append(
                            map_error(exc, stream=p.stream, expected_version=p.expected_version)
                        )
                        continue
                    await conn.execute("RELEASE SAVEPOINT append")
                    tree.adopt(trial)
                else:
                    fresh.extend(recs)
                seq, head = recs[-1].seq, recs[-1].hash
                versions[p.stream] = recs[-1].version
                plan.results.append(recs)
                plan.last = recs[-1]
            if fresh:
                await self._insert(conn, fresh, tree)
            if plan.last is None:
                await conn.execute("COMMIT")
            else:
                # One round trip: both positions, the notice to every replica, the commit.
                await conn.execute(
                    f"UPDATE event_head SET seq = {seq:d}, hash = '{head}' WHERE id = 1;"
                    f" UPDATE projection_positions SET seq = {seq:d};"
                    f" NOTIFY {CHANNEL}, '{seq:d}';"
                    " COMMIT"
                )
            self._committed_state(tree, versions)
        except BaseException as exc:
            if conn.is_closed() or _retryable(exc):
                raise _Lost(exc, plan) from exc
            with contextlib.suppress(Exception):
                await conn.execute("ROLLBACK")
            if conn.is_closed():
                raise _Lost(exc, plan) from exc
            raise
        return plan.results

    async def _insert(self, conn: asyncpg.Connection, recs: list[Recorded], tree: Frontier) -> None:
        """Write events, their Merkle nodes (advancing ``tree``) and projection rows."""
        nodes = [n for r in recs for n in tree.append(bytes.fromhex(r.hash))]
        await conn.execute(
            INSERT_EVENTS_AND_NODES,
            [r.seq for r in recs],
            [r.stream for r in recs],
            [r.version for r in recs],
            [r.type for r in recs],
            [r.timestamp for r in recs],
            [r.data for r in recs],
            [r.prev_hash for r in recs],
            [r.hash for r in recs],
            [n[0] for n in nodes],
            [n[1] for n in nodes],
            [n[2] for n in nodes],
        )
        await _run_statements(conn, self._project(recs))

    def _project(self, recs: list[Recorded]) -> list[Statement]:
        return project(self.projections, recs)

    # --- subscribers --------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _publish(self, recs: list[Recorded]) -> None:
        self._published = recs[-1].seq
        for listener in list(self._listeners):
            try:
                listener(recs)
            except Exception:
                log.exception("event listener failed")

    def _committed_here(self, recs: list[Recorded]) -> None:
        self._known = max(self._known, recs[-1].seq)
        if recs[0].seq == self._published + 1:
            self._publish(recs)  # the usual case: nobody else committed in between
        else:
            self._local[recs[0].seq] = recs
            self._wake.set()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        with contextlib.suppress(ValueError):
            self._known = max(self._known, int(payload))
            self._wake.set()

    async def _publish_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._catch_up()
            except Exception as exc:
                log.warning("could not read new events for subscribers", error=repr(exc))
                await asyncio.sleep(0.5)
                self._wake.set()

    async def _catch_up(self) -> None:
        """Hand listeners every committed event after ``_published``, in seq order."""
        while self._published < self._known:
            local = self._local.pop(self._published + 1, None)
            if local is not None:
                self._publish(local)
                continue
            if not self._listeners:
                self._published = self._known
            else:
                read = await self.read_all(self._published, PUBLISH_CHUNK)
                if not read:
                    return
                self._known = max(self._known, read[-1].seq)
                # Our own commit may have been handed out while this read was on its way.
                recs = [r for r in read if r.seq > self._published]
                if recs:
                    self._publish(recs)
            for first in [s for s in self._local if s <= self._published]:
                del self._local[first]

    async def _listen(self) -> None:
        conn = await self._connect()
        try:
            await conn.add_listener(CHANNEL, self._on_notify)
        except Exception as exc:
            conn.terminate()
            raise map_error(exc) from exc
        conn.add_termination_listener(self._on_listener_lost)
        self._lconn = conn

    def _on_listener_lost(self, _conn: Any) -> None:
        if not self._closing and (self._relisten is None or self._relisten.done()):
            self._relisten = asyncio.create_task(self._listen_again())

    async def _listen_again(self) -> None:
        """LISTEN on a new connection, then read the head: whatever committed while
        nobody listened is published from the log like any other notice."""
        delay = 0.05
        while not self._closing:
            try:
                await self._listen()
                head = await self.head()
            except StoreError as exc:
                log.warning("cannot LISTEN for new events yet", error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self._known = max(self._known, head.seq)
            self._wake.set()
            return

    # --- reading ------------------------------------------------------------------------

    def _readers(self) -> asyncpg.Pool:
        if self._pool is None or self._closing:
            raise StoreUnavailable("the store is not open")
        return self._pool

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            rows = await self._readers().fetch(to_dollar_params(sql), *params)
        except Exception as exc:
            raise map_error(exc) from exc
        return [tuple(r) for r in rows]

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
        while True:
            rows = await self.fetchall(
                f"{SELECT_EVENTS} WHERE seq > ? ORDER BY seq LIMIT ?", (after, REBUILD_CHUNK)
            )
            if not rows:
                return
            yield rows
            after = rows[-1][0]

    async def read_raw(self, after: int, limit: int) -> list[tuple[Any, ...]]:
        return await self.fetchall(
            f"{SELECT_EVENTS} WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        )

    async def read_raw_stream(self, stream: str) -> list[tuple[Any, ...]]:
        return await self.fetchall(f"{SELECT_EVENTS} WHERE stream = ? ORDER BY version", (stream,))

    async def check_archive(self) -> list[tuple[int, str]]:
        return []  # retention is SQLite-only: a PostgreSQL log archives nothing

    async def head(self) -> Head:
        row = await self.fetchone("SELECT seq, hash FROM event_head WHERE id = 1")
        return Head(row[0], row[1]) if row else Head(0, GENESIS_HASH)

    async def tree_nodes(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        wanted = sorted(set(keys))
        try:
            rows = await self._readers().fetch(
                SELECT_NODES, [k[0] for k in wanted], [k[1] for k in wanted]
            )
        except Exception as exc:
            raise map_error(exc) from exc
        return {(level, idx): bytes(h) for level, idx, h in rows}

    async def ping(self) -> None:
        try:
            await asyncio.wait_for(self._readers().fetchval("SELECT 1"), PING_TIMEOUT)
        except Exception as exc:
            raise map_error(exc) from exc

    async def check_writable(self) -> None:
        await self.write_faults.check(self._probe_write)

    async def _probe_write(self) -> None:
        """A write that changes nothing (the head row, updated to itself) on a pooled
        connection: it needs a writable database with room for its WAL record."""

        async def probe() -> None:
            async with self._readers().acquire() as conn, conn.transaction():
                await conn.execute("UPDATE event_head SET seq = seq WHERE id = 1")

        try:
            await asyncio.wait_for(probe(), PING_TIMEOUT)
        except Exception as exc:
            raise map_error(exc) from exc

    # --- rebuilding ---------------------------------------------------------------------

    async def rebuild(self, progress: Callable[[int, int], None] | None = None) -> int:
        """One transaction under the head lock: replicas that keep serving wait for it
        and never see a half-built view (PostgreSQL's DDL is transactional)."""
        conn = await self._connect()
        try:
            async with conn.transaction():
                head_seq = (await conn.fetchrow(LOCK_HEAD))[0]
                await self._reset(conn, self.projections)
                return await self._replay(conn, self.projections, 0, head_seq, progress)
        except StoreError:
            raise
        except Exception as exc:
            raise map_error(exc) from exc
        finally:
            await conn.close()

    async def _reset(self, conn: asyncpg.Connection, projs: Sequence[Projection]) -> None:
        for proj in projs:
            for table in proj.tables:
                await conn.execute(f"DROP TABLE IF EXISTS {table}")
            for ddl in proj.ddl:
                await conn.execute(to_postgres_ddl(ddl))
            await conn.execute(
                "INSERT INTO projection_positions (name, version, seq) VALUES ($1, $2, 0)"
                " ON CONFLICT (name) DO UPDATE SET version = excluded.version, seq = 0",
                proj.name,
                proj.version,
            )

    async def _replay(
        self,
        conn: asyncpg.Connection,
        projs: Sequence[Projection],
        after: int,
        total: int,
        progress: Callable[[int, int], None] | None,
    ) -> int:
        """Apply the log after ``after`` to ``projs`` inside the caller's transaction."""
        applied = 0
        names = [p.name for p in projs]
        while True:
            rows = await conn.fetch(
                f"{SELECT_EVENTS} WHERE seq > $1 ORDER BY seq LIMIT $2", after, REBUILD_CHUNK
            )
            if not rows:
                break
            statements = project(projs, replay_records(projs, rows))
            await _run_statements(conn, statements)
            after = rows[-1][0]
            applied += len(rows)
            if progress is not None:
                progress(applied, total)
        await conn.execute(
            "UPDATE projection_positions SET seq = $1 WHERE name = ANY($2::text[])", after, names
        )
        return applied

    # --- moving a log in ----------------------------------------------------------------

    async def import_log(
        self,
        batches: AsyncIterator[list[tuple[Any, ...]]],
        check: Callable[[list[tuple[Any, ...]]], None] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Copy raw rows, verbatim, into an empty log, in one transaction: a copy that
        fails (``check`` raising on a batch, or the database refusing one) leaves the
        log empty. Projections are not touched; rebuild them after."""
        conn = await self._connect()
        copied = 0
        try:
            async with conn.transaction():
                seq, _ = await conn.fetchrow(LOCK_HEAD)
                if seq or await conn.fetchval("SELECT count(*) FROM events"):
                    raise StoreError("the destination already holds events; copy into an empty one")
                last: tuple[Any, ...] | None = None
                tree = Frontier()
                async for rows in batches:
                    if check is not None:
                        check(rows)
                    await conn.copy_records_to_table("events", records=rows, columns=COLUMNS)
                    await conn.copy_records_to_table(
                        "merkle_nodes",
                        records=[n for r in rows for n in tree.append(bytes.fromhex(r[7]))],
                        columns=("level", "idx", "hash"),
                    )
                    copied += len(rows)
                    last = rows[-1] if rows else last
                    if progress is not None:
                        progress(copied)
                if last is not None:
                    await conn.execute(
                        "UPDATE event_head SET seq = $1, hash = $2 WHERE id = 1", last[0], last[7]
                    )
        except StoreError:
            raise
        except Exception as exc:
            raise map_error(exc) from exc
        finally:
            await conn.close()
        return copied


def to_postgres_ddl(ddl: str) -> str:
    """Projection DDL is written for both databases but for one SQLite clause: a table
    clustered by its primary key, which is what a PostgreSQL heap with a primary key
    index amounts to here."""
    return ddl.replace(" WITHOUT ROWID", "")


def _retryable(exc: BaseException) -> bool:
    """Worth a fresh connection and another go: the link broke, the server is
    restarting, or a prepared statement went stale after a schema change."""
    if isinstance(exc, OSError | ConnectionError | asyncio.TimeoutError):
        return True
    if isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.exceptions.InvalidCachedStatementError
        | asyncpg.exceptions.OutdatedSchemaCacheError,
    ):
        return True
    state = _sqlstate(exc)
    # 40: serialization failure or deadlock; 57P: admin shutdown, crash, restarting.
    return state.startswith(("40", "57P", "08"))

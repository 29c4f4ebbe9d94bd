"""The store interface's contract, run against every backend (SQLite and PostgreSQL).

Each backend is a subclass of ``StoreContract`` that says how to make a store on a
fresh database, how to reach that database with its plain driver (to check what the
database itself enforces), and how to make the database fail under a store (to check
that the failure reaches callers as ``StoreUnavailable``). PostgreSQL runs at
``$SHELBY_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/test``);
each test gets a database of its own, dropped after it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import pytest

from shelby.events.codec import GENESIS_HASH
from shelby.events.merkle import Frontier, keys_for_root, root
from shelby.events.open import open_store
from shelby.events.store import (
    ConcurrencyError,
    EventStore,
    Head,
    Projection,
    Recorded,
    Statement,
    StoreError,
    StoreUnavailable,
)
from shelby.events.types import (
    EVENT_TYPES,
    Event,
    JobAcked,
    JobAssigned,
    JobCreated,
    JobDeleted,
    JobFinished,
    LogLine,
    LogLinesAppended,
    NodeHeartbeat,
    NodeRegistered,
    ScriptUploaded,
    UsageReported,
    job_stream,
    node_stream,
)
from shelby.events.verify import verify_store
from shelby.projections import all_projections

ADMIN_URL = os.environ.get("SHELBY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")

Row = tuple[Any, ...]


class Backend(Protocol):
    """What the contract needs to know of a backend."""

    db: str  # the --db setting for this test's fresh database

    async def raw(self, sql: str, *params: Any) -> list[Row]:
        """Run one statement with the plain driver, outside any store."""
        ...

    def outage(self, store: EventStore) -> Any:
        """An async context manager during which the database fails ``store``'s writes."""
        ...


class RefusingProjection:
    """A projection that the database refuses for jobs named ``refuse-*``: it inserts
    the same primary key twice. Stands for a projection bug."""

    name = "refusing"
    version = 1
    handles = frozenset({"JobCreated"})
    superseded: frozenset[str] = frozenset()
    tables = ("refusals",)
    ddl = ("CREATE TABLE IF NOT EXISTS refusals (job_id TEXT PRIMARY KEY)",)

    def apply(self, rec: Recorded) -> list[Statement]:
        e = rec.event
        if not isinstance(e, JobCreated):
            return []
        insert = ("INSERT INTO refusals (job_id) VALUES (?)", (e.job_id,))
        return [insert, insert] if e.job_id.startswith("refuse-") else [insert]


class CountingProjection:
    """Counts events per type; its ``version`` is settable to test rebuild at open."""

    name = "counting"
    handles = frozenset(EVENT_TYPES)
    superseded: frozenset[str] = frozenset()
    tables = ("type_counts",)
    ddl = ("CREATE TABLE IF NOT EXISTS type_counts (type TEXT PRIMARY KEY, n BIGINT NOT NULL)",)

    def __init__(self, version: int = 1) -> None:
        self.version = version

    def apply(self, rec: Recorded) -> list[Statement]:
        return [
            (
                "INSERT INTO type_counts (type, n) VALUES (?, 1)"
                " ON CONFLICT (type) DO UPDATE SET n = type_counts.n + 1",
                (rec.type,),
            )
        ]


def created(job: str) -> list[JobCreated]:
    return [JobCreated(job_id=job, dataset_name=f"data of {job}")]


def beat(node: str, k: int = 0) -> list[NodeHeartbeat]:
    return [NodeHeartbeat(node_id=node, specs={"k": k})]


def raw_of(rec: Recorded) -> Row:
    return (
        rec.seq,
        rec.stream,
        rec.version,
        rec.type,
        rec.timestamp,
        rec.data,
        rec.prev_hash,
        rec.hash,
    )


def assert_chain(rows: Sequence[Row]) -> str:
    """Every row is in place and hashes as the README's recipe says (written out here
    with ``json`` and ``hashlib`` alone); returns the head hash."""
    prev = GENESIS_HASH
    for n, (seq, stream, version, type_, timestamp, data, prev_hash, hash_) in enumerate(
        rows, start=1
    ):
        assert seq == n, f"seq {seq} where {n} was expected"
        assert prev_hash == prev, f"prev_hash of seq {n} is not the hash before it"
        canonical = json.dumps(
            {
                "data": json.loads(data),
                "seq": seq,
                "stream": stream,
                "timestamp": timestamp,
                "type": type_,
                "version": version,
            },
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        prev = hashlib.sha256(bytes.fromhex(prev) + canonical.encode()).hexdigest()
        assert prev == hash_, f"hash of seq {n} does not match its contents"
    return prev


async def append_sample_log(store: EventStore, jobs: int = 3) -> None:
    """A small but realistic log: nodes registering and heartbeating, jobs going
    through their lifecycle with log lines (some non-ASCII) and usage."""
    ts = 1_700_000_000.0

    async def put(stream: str, events: list[Event]) -> None:
        nonlocal ts
        ts += 0.25
        version = len(await store.read_stream(stream))
        await store.append(stream, events, expected_version=version, timestamp=ts)

    for n in ("n1", "n2"):
        await put(
            node_stream(n),
            [NodeRegistered(node_id=n, name=f"box-{n}", token_hash=n, specs={"cpuCount": 8})],
        )
    for j in range(jobs):
        job, node = f"job{j}", f"n{j % 2 + 1}"
        stream = job_stream(job)
        await put(stream, [JobCreated(job_id=job, meta={"lr": 1e-5, "name": f"ß-{j}"})])
        await put(stream, [ScriptUploaded(job_id=job, script="print(1)", script_hash="sha256:0")])
        await put(stream, [JobAssigned(job_id=job, node_id=node, attempt=1)])
        await put(stream, [JobAcked(job_id=job, node_id=node, attempt=1)])
        await put(node_stream(node), [NodeHeartbeat(node_id=node, specs={"cpuUsage": 12.5})])
        lines = [
            LogLine(line="epoch 1 loss=0.3 — ok ✓", timestamp=ts),
            LogLine(line="warning: ☃", timestamp=ts + 0.1, stream="stderr", truncated=True),
        ]
        await put(
            stream,
            [LogLinesAppended(job_id=job, node_id=node, attempt=1, offset=0, lines=lines)],
        )
        await put(
            stream,
            [
                UsageReported(node_id=node, job_id=job, attempt=1, cpu_seconds=1.5),
                JobFinished(job_id=job, node_id=node, attempt=1, model_hash="sha256:ff"),
            ],
        )


async def all_raw(store: EventStore, after: int = 0) -> list[Row]:
    return [tuple(r) for rows in [b async for b in store.iter_raw(after)] for r in rows]


PROJECTION_TABLES = {
    "jobs": "job_id",
    "job_counts": "status",
    "scripts": "job_id",
    "nodes": "node_id",
    "log_batches": "job_id, attempt, first_offset",
    "provenance": "job_id, seq",
    "usage": "subject",
    "job_activity": "minute",
}


async def snapshot(store: EventStore) -> dict[str, list[Row]]:
    return {
        table: await store.fetchall(f"SELECT * FROM {table} ORDER BY {key}")
        for table, key in PROJECTION_TABLES.items()
    }


class StoreContract:
    """Every backend passes these. Subclasses provide the ``backend`` fixture."""

    @pytest.fixture
    async def backend(self, tmp_path: Path) -> AsyncIterator[Backend]:
        raise NotImplementedError
        yield

    @pytest.fixture
    async def make(self, backend: Backend) -> AsyncIterator[Callable[..., Awaitable[EventStore]]]:
        """Opens stores on the test's database; closes them all afterwards."""
        opened: list[EventStore] = []

        async def make(projections: Sequence[Projection] | None = None) -> EventStore:
            chosen = all_projections() if projections is None else list(projections)
            store = open_store(backend.db, chosen)
            await store.open()
            opened.append(store)
            return store

        yield make
        for store in opened:
            await store.close()

    @pytest.fixture
    async def store(self, make: Callable[..., Awaitable[EventStore]]) -> EventStore:
        return await make()

    # --- appending and reading ----------------------------------------------------------

    async def test_a_new_log_is_empty(self, store: EventStore) -> None:
        """A fresh store has no events, the genesis head, and answers ping."""
        assert await store.head() == Head(0, GENESIS_HASH)
        assert await store.read_all() == []
        assert await all_raw(store) == []
        await store.ping()

    async def test_appended_events_read_back_exactly(self, store: EventStore) -> None:
        """What append returns is what read_stream, read_all and iter_raw give back:
        seqs and versions from 1, the exact timestamp, the event itself."""
        events = [
            NodeRegistered(node_id="n1", name="bøx ☃", token_hash="t", specs={"x": 1e-5}),
            *beat("n1", 1),
            *beat("n1", 2),
        ]
        recs = await store.append(
            node_stream("n1"), events, expected_version=0, timestamp=1_700_000_000.123456
        )
        assert [(r.seq, r.version) for r in recs] == [(1, 1), (2, 2), (3, 3)]
        assert [r.event for r in recs] == events
        assert await store.read_stream(node_stream("n1")) == recs
        assert await store.read_all() == recs
        assert await all_raw(store) == [raw_of(r) for r in recs]
        assert all(r.timestamp == 1_700_000_000.123456 for r in recs)

    async def test_the_chain_follows_the_readme_recipe(self, store: EventStore) -> None:
        """Every stored row hashes as the README says, linked from the genesis hash,
        and verify agrees."""
        await append_sample_log(store)
        rows = await all_raw(store)
        head = assert_chain(rows)
        verdict = await verify_store(store)
        assert verdict.ok and verdict.count == len(rows) and verdict.head_hash == head
        assert await store.head() == Head(len(rows), head)

    async def test_read_stream_after_a_version(self, store: EventStore) -> None:
        """read_stream(after_version=v) gives only the stream's later events."""
        await store.append(node_stream("a"), beat("a") * 3, expected_version=0, timestamp=1.0)
        await store.append(node_stream("b"), beat("b"), expected_version=0, timestamp=1.0)
        later = await store.read_stream(node_stream("a"), after_version=1)
        assert [(r.version, r.stream) for r in later] == [(2, "node-a"), (3, "node-a")]
        assert await store.read_stream("node-nobody") == []

    async def test_read_all_pages_by_seq(self, store: EventStore) -> None:
        """read_all(after, limit) pages through the log in seq order."""
        for i in range(7):
            await store.append(node_stream(f"n{i}"), beat("x"), expected_version=0, timestamp=1.0)
        page = await store.read_all(after=2, limit=3)
        assert [r.seq for r in page] == [3, 4, 5]
        assert [r.seq for r in await store.read_all(after=5)] == [6, 7]

    async def test_iter_raw_resumes_after_a_seq(self, store: EventStore) -> None:
        """iter_raw(after) yields the raw 8-column rows after ``after`` in order."""
        for i in range(5):
            await store.append(node_stream(f"n{i}"), beat("x"), expected_version=0, timestamp=2.5)
        rows = await all_raw(store, after=3)
        assert [r[0] for r in rows] == [4, 5]
        assert all(len(r) == 8 and isinstance(r[4], float) for r in rows)

    # --- versions -----------------------------------------------------------------------

    async def test_a_stale_expected_version_is_refused(self, store: EventStore) -> None:
        """An append expecting a version the stream is not at raises ConcurrencyError
        and writes nothing."""
        stream = job_stream("j")
        await store.append(stream, created("j"), expected_version=0, timestamp=1.0)
        for wrong in (0, 2, 7):
            with pytest.raises(ConcurrencyError) as info:
                await store.append(stream, created("j"), expected_version=wrong, timestamp=1.0)
            assert info.value.stream == stream and info.value.expected_version == wrong
        with pytest.raises(ConcurrencyError):
            await store.append(job_stream("new"), created("new"), expected_version=1, timestamp=1)
        assert (await store.head()).seq == 1
        assert await store.fetchall("SELECT job_id FROM jobs") == [("j",)]

    async def test_of_racing_appends_at_one_version_exactly_one_wins(
        self, store: EventStore
    ) -> None:
        """Twenty appends to one stream at the same version: one commits, nineteen get
        ConcurrencyError."""
        stream = node_stream("n")
        await store.append(stream, beat("n"), expected_version=0, timestamp=1.0)
        results = await asyncio.gather(
            *(
                store.append(stream, beat("n", k), expected_version=1, timestamp=2.0)
                for k in range(20)
            ),
            return_exceptions=True,
        )
        wins = [r for r in results if isinstance(r, list)]
        assert len(wins) == 1
        assert all(isinstance(r, ConcurrencyError) for r in results if not isinstance(r, list))
        assert [r.version for r in await store.read_stream(stream)] == [1, 2]

    async def test_the_database_enforces_one_event_per_stream_version(
        self, store: EventStore, backend: Backend
    ) -> None:
        """UNIQUE(stream, version) holds even for a writer that bypasses the store."""
        [rec] = await store.append(node_stream("n"), beat("n"), expected_version=0, timestamp=1.0)
        row = list(raw_of(rec))
        row[0] = 2
        with pytest.raises(Exception, match=r"(?i)unique"):
            await backend.raw(
                "INSERT INTO events (seq, stream, version, type, timestamp, data, prev_hash, hash)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                *row,
            )

    async def test_the_database_refuses_update_and_delete_of_events(
        self, store: EventStore, backend: Backend
    ) -> None:
        """The append-only triggers refuse UPDATE and DELETE on events, whoever asks."""
        await store.append(node_stream("n"), beat("n"), expected_version=0, timestamp=1.0)
        for sql in ("UPDATE events SET type = 'Forged'", "DELETE FROM events"):
            with pytest.raises(Exception, match="append-only"):
                await backend.raw(sql)
        assert [r.type for r in await store.read_all()] == ["NodeHeartbeat"]

    # --- group commit -------------------------------------------------------------------

    async def test_concurrent_appends_share_commits_and_keep_the_chain(
        self, store: EventStore
    ) -> None:
        """Three hundred concurrent appends all commit, with gap-free seqs and one
        intact chain; each caller's events are contiguous."""
        results = await asyncio.gather(
            *(
                store.append(
                    node_stream(f"n{i}"),
                    beat("x") * (1 + i % 3),
                    expected_version=0,
                    timestamp=float(i),
                )
                for i in range(300)
            )
        )
        seqs = sorted(r.seq for recs in results for r in recs)
        assert seqs == list(range(1, len(seqs) + 1))
        for recs in results:
            assert [r.seq for r in recs] == list(range(recs[0].seq, recs[0].seq + len(recs)))
        assert_chain(await all_raw(store))

    async def test_a_refused_append_fails_alone(self, make: Callable[..., Any]) -> None:
        """When the database refuses one append's projection rows, that caller gets an
        error and nothing of it is kept; the appends committed beside it stand."""
        store = await make([*all_projections(), RefusingProjection()])
        jobs = [f"ok-{i}" for i in range(10)] + ["refuse-1"] + [f"ok-{i}" for i in range(10, 20)]
        results = await asyncio.gather(
            *(
                store.append(job_stream(j), created(j), expected_version=0, timestamp=1.0)
                for j in jobs
            ),
            return_exceptions=True,
        )
        failed = [j for j, r in zip(jobs, results, strict=True) if isinstance(r, BaseException)]
        assert failed == ["refuse-1"]
        assert not isinstance(results[10], ConcurrencyError | StoreUnavailable)
        assert await store.read_stream(job_stream("refuse-1")) == []
        assert await store.fetchone("SELECT * FROM jobs WHERE job_id = ?", ("refuse-1",)) is None
        kept = await store.fetchall("SELECT job_id FROM refusals ORDER BY job_id")
        assert len(kept) == 20
        assert_chain(await all_raw(store))

    # --- projections --------------------------------------------------------------------

    async def test_projections_are_readable_as_soon_as_append_returns(
        self, store: EventStore
    ) -> None:
        """An append's projection rows are committed with it: the next read sees them,
        and every projection's position is the head."""
        await store.append(job_stream("j"), created("j"), expected_version=0, timestamp=60.5)
        assert await store.fetchone(
            "SELECT status, dataset_name FROM jobs WHERE job_id = ?", ("j",)
        ) == ("pending", "data of j")
        assert await store.fetchone("SELECT n FROM job_counts WHERE status = 'pending'") == (1,)
        positions = await store.fetchall("SELECT name, seq FROM projection_positions")
        assert {seq for _, seq in positions} == {1}
        assert {name for name, _ in positions} == {p.name for p in all_projections()}

    async def test_fetchall_binds_question_marks_but_not_quoted_ones(
        self, store: EventStore
    ) -> None:
        """``?`` placeholders bind in order; a ``?`` inside a string literal stays text."""
        await store.append(job_stream("j?"), created("j?"), expected_version=0, timestamp=1.0)
        row = await store.fetchone(
            "SELECT job_id, 'what?' FROM jobs WHERE job_id = ? AND status = ?", ("j?", "pending")
        )
        assert row == ("j?", "what?")
        [(total,)] = await store.fetchall("SELECT sum(n) FROM job_counts")
        assert total == 1 and isinstance(total, int)

    async def test_a_malformed_query_raises_a_store_error(self, store: EventStore) -> None:
        """A query the database cannot run surfaces as the store's own error."""
        with pytest.raises(StoreError):
            await store.fetchall("SELECT nothing FROM no_such_table")

    async def test_rebuild_reproduces_every_projection(self, store: EventStore) -> None:
        """Dropping and replaying the projections gives the same rows; rebuild reports
        its progress and the number of events it applied."""
        await append_sample_log(store, jobs=5)
        await store.append(
            job_stream("job0"), [JobDeleted(job_id="job0")], expected_version=7, timestamp=2e9
        )
        before = await snapshot(store)
        head = await store.head()
        seen: list[tuple[int, int]] = []
        applied = await store.rebuild(lambda done, total: seen.append((done, total)))
        assert applied == head.seq
        assert seen[-1] == (head.seq, head.seq)
        assert await snapshot(store) == before

    async def test_a_projection_whose_version_changed_is_rebuilt_at_open(
        self, make: Callable[..., Any]
    ) -> None:
        """Reopening with a projection at a new version rebuilds it from the log; the
        log itself is kept."""
        first = await make([CountingProjection(1)])
        for i in range(4):
            await first.append(node_stream(f"n{i}"), beat("x"), expected_version=0, timestamp=1)
        await first.close()
        second = await make([CountingProjection(2)])
        assert await second.fetchall("SELECT type, n FROM type_counts") == [("NodeHeartbeat", 4)]
        assert await second.fetchone(
            "SELECT version, seq FROM projection_positions WHERE name = 'counting'"
        ) == (2, 4)
        assert (await second.head()).seq == 4

    # --- the Merkle tree ----------------------------------------------------------------

    async def test_the_merkle_tree_covers_the_whole_log(self, store: EventStore) -> None:
        """The stored subtrees give the same root as a tree built from the events'
        hashes alone."""
        await append_sample_log(store)
        rows = await all_raw(store)
        tree = Frontier()
        for row in rows:
            tree.append(bytes.fromhex(row[7]))
        nodes = await store.tree_nodes(keys_for_root(len(rows)))
        assert root(len(rows), lambda level, index: nodes[level, index]) == tree.root()

    # --- subscribers --------------------------------------------------------------------

    async def test_subscribers_get_every_batch_once_in_order(self, store: EventStore) -> None:
        """A listener receives every committed event once, in seq order, in batches;
        after unsubscribing it receives nothing."""
        got: list[list[int]] = []
        unsubscribe = store.subscribe(lambda recs: got.append([r.seq for r in recs]))
        await asyncio.gather(
            *(
                store.append(node_stream(f"n{i}"), beat("x"), expected_version=0, timestamp=1.0)
                for i in range(50)
            )
        )
        await store.append(node_stream("last"), beat("x") * 2, expected_version=0, timestamp=1.0)
        await wait_for(lambda: sum(map(len, got)) >= 52)
        assert [s for batch in got for s in batch] == list(range(1, 53))
        unsubscribe()
        await store.append(node_stream("after"), beat("x"), expected_version=0, timestamp=1.0)
        await asyncio.sleep(0.05)
        assert sum(map(len, got)) == 52

    async def test_a_failing_listener_does_not_fail_the_append(self, store: EventStore) -> None:
        """A listener that raises is logged; the append and other listeners go on."""
        got: list[int] = []

        def broken(recs: Sequence[Recorded]) -> None:
            raise RuntimeError("listener bug")

        store.subscribe(broken)
        store.subscribe(lambda recs: got.extend(r.seq for r in recs))
        await store.append(node_stream("n"), beat("n"), expected_version=0, timestamp=1.0)
        await wait_for(lambda: got == [1])

    # --- failures -----------------------------------------------------------------------

    async def test_an_outage_reaches_callers_as_store_unavailable(
        self, store: EventStore, backend: Backend
    ) -> None:
        """While the database cannot take writes, append raises StoreUnavailable and
        keeps nothing; once it can, appends go on from the same head."""
        await store.append(node_stream("n"), beat("n"), expected_version=0, timestamp=1.0)
        big = [LogLine(line="x" * 16_384, timestamp=1.0)] * 64
        async with backend.outage(store):
            with pytest.raises(StoreUnavailable):
                await store.append(
                    job_stream("j"),
                    [LogLinesAppended(job_id="j", node_id="n", attempt=1, offset=0, lines=big)],
                    expected_version=0,
                    timestamp=2.0,
                )
        await store.append(node_stream("n"), beat("n"), expected_version=1, timestamp=3.0)
        rows = await all_raw(store)
        assert [(r[0], r[1]) for r in rows] == [(1, "node-n"), (2, "node-n")]
        assert_chain(rows)

    async def test_a_closed_store_is_unavailable(self, make: Callable[..., Any]) -> None:
        """Every call on a closed store raises StoreUnavailable."""
        store = await make()
        await store.close()
        with pytest.raises(StoreUnavailable):
            await store.append(node_stream("n"), beat("n"), expected_version=0, timestamp=1.0)
        for call in (store.ping, store.head, lambda: store.fetchall("SELECT 1")):
            with pytest.raises(StoreUnavailable):
                await call()


async def wait_for(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Listeners run on the loop after the commit; give them a moment."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# --- SQLite -------------------------------------------------------------------------


class SQLiteBackend:
    def __init__(self, path: Path) -> None:
        self.db = str(path)

    async def raw(self, sql: str, *params: Any) -> list[Row]:
        conn = sqlite3.connect(self.db)
        try:
            with conn:
                return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    @asynccontextmanager
    async def outage(self, store: EventStore) -> AsyncIterator[None]:
        """The disk is full: the store's own connection may not grow the file."""
        conn = store._wconn  # type: ignore[attr-defined]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        try:
            yield
        finally:
            conn.execute("PRAGMA max_page_count = 1073741823")


class TestSQLite(StoreContract):
    @pytest.fixture
    async def backend(self, tmp_path: Path) -> AsyncIterator[Backend]:
        yield SQLiteBackend(tmp_path / "shelby.db")


# --- PostgreSQL ---------------------------------------------------------------------


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A new, empty database for one test; dropped afterwards, whoever is connected."""
    name = f"shelby_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


class PostgresBackend:
    def __init__(self, url: str) -> None:
        self.db = url
        self.name = url.rsplit("/", 1)[1]

    async def raw(self, sql: str, *params: Any) -> list[Row]:
        from shelby.events.postgres import to_dollar_params

        conn = await asyncpg.connect(self.db)
        try:
            return [tuple(r) for r in await conn.fetch(to_dollar_params(sql), *params)]
        finally:
            await conn.close()

    @asynccontextmanager
    async def outage(self, store: EventStore) -> AsyncIterator[None]:
        """The database refuses connections and drops the ones it has."""
        admin = await asyncpg.connect(ADMIN_URL)
        try:
            await admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                self.name,
            )
            try:
                yield
            finally:
                await admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')
        finally:
            await admin.close()


class TestPostgres(StoreContract):
    @pytest.fixture
    async def backend(self) -> AsyncIterator[Backend]:
        async with fresh_database() as url:
            yield PostgresBackend(url)

    async def test_ping_fails_during_an_outage_and_recovers(
        self, store: EventStore, backend: Backend
    ) -> None:
        """ping raises StoreUnavailable while the database is unreachable, and passes
        again once it is back."""
        async with backend.outage(store):
            with pytest.raises(StoreUnavailable):
                await store.ping()
        await store.ping()

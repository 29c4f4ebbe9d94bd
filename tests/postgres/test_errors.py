"""Driver errors become the project's exceptions: each case provoked for real on
PostgreSQL, then passed through the store's mapping (and through the store)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from shelby.events.postgres import PostgresEventStore, map_error, to_dollar_params
from shelby.events.store import ConcurrencyError, StoreError, StoreUnavailable
from shelby.events.types import NodeHeartbeat, node_stream
from shelby.projections import all_projections

from .conftest import StoreFactory, database_url


async def raised(url: str, sql: str, *args: object) -> BaseException:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql, *args)
    except Exception as exc:
        return exc
    finally:
        await conn.close()
    raise AssertionError(f"{sql!r} did not fail")


async def test_a_duplicate_stream_version_is_a_concurrency_error(
    pg_url: str, stores: StoreFactory
) -> None:
    """UNIQUE(stream, version) refusing a row maps to ConcurrencyError for its stream."""
    store = await stores()
    [rec] = await store.append(
        node_stream("n"), [NodeHeartbeat(node_id="n")], expected_version=0, timestamp=1.0
    )
    exc = await raised(
        pg_url,
        "INSERT INTO events (seq, stream, version, type, timestamp, data, prev_hash, hash)"
        " VALUES (2, $1, 1, 'NodeHeartbeat', 1.0, '{}', $2, $2)",
        rec.stream,
        rec.hash,
    )
    assert isinstance(exc, asyncpg.UniqueViolationError)
    mapped = map_error(exc, stream=rec.stream, expected_version=0)
    assert isinstance(mapped, ConcurrencyError) and mapped.stream == rec.stream


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE events SET type = 'Forged'",  # the append-only trigger
        "DELETE FROM events",
        "TRUNCATE events",
        "INSERT INTO event_head (id, seq, hash) VALUES (2, 0, 'x')",  # CHECK (id = 1)
        "INSERT INTO jobs (job_id) VALUES ('j')",  # NOT NULL columns
        "SELECT * FROM no_such_table",
        "SELEC 1",
        "SELECT 1 / 0",
    ],
)
async def test_a_refused_statement_is_a_store_error_not_an_outage(
    pg_url: str, stores: StoreFactory, sql: str
) -> None:
    """Constraints, triggers, bad SQL and bad data are the request's fault: StoreError,
    never StoreUnavailable (which would make health report the database down)."""
    store = await stores()
    await store.append(
        node_stream("n"), [NodeHeartbeat(node_id="n")], expected_version=0, timestamp=1.0
    )
    exc = await raised(pg_url, sql)
    mapped = map_error(exc)
    assert type(mapped) is StoreError
    assert mapped.__cause__ is exc


async def test_a_wrongly_typed_argument_is_a_store_error(stores: StoreFactory) -> None:
    """asyncpg refusing an argument for its column type (before sending) is StoreError."""
    store = await stores()
    with pytest.raises(StoreError) as info:
        await store.fetchall("SELECT * FROM jobs WHERE created_seq = ?", ("not a number",))
    assert not isinstance(info.value, StoreUnavailable)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:1/test",  # nothing listens
        database_url("shelby_no_such_database"),
        "postgresql://no_such_role@127.0.0.1:5432/test",
    ],
)
async def test_a_database_out_of_reach_is_unavailable(url: str) -> None:
    """Opening a store on a server that refuses or lacks the database raises
    StoreUnavailable."""
    store = PostgresEventStore(url, all_projections())
    with pytest.raises(StoreUnavailable):
        await store.open()
    await store.close()


async def test_a_terminated_session_is_unavailable(pg_url: str, admin: asyncpg.Connection) -> None:
    """The server ending a session (admin shutdown) maps to StoreUnavailable."""
    conn = await asyncpg.connect(pg_url)
    try:
        await admin.fetchval("SELECT pg_terminate_backend($1)", conn.get_server_pid())
        with pytest.raises(Exception) as info:
            await conn.fetchval("SELECT 1")
        assert isinstance(map_error(info.value), StoreUnavailable)
    finally:
        conn.terminate()


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM t WHERE a = ? AND b = ?", "SELECT * FROM t WHERE a = $1 AND b = $2"),
        ("SELECT 'why?' FROM t WHERE a = ?", "SELECT 'why?' FROM t WHERE a = $1"),
        (
            "SELECT 'it''s?', \"odd?col\" FROM t WHERE a = ?",
            "SELECT 'it''s?', \"odd?col\" FROM t WHERE a = $1",
        ),
        ("INSERT INTO t VALUES (?, '{}', ?)", "INSERT INTO t VALUES ($1, '{}', $2)"),
        ("SELECT 1", "SELECT 1"),
    ],
)
def test_question_marks_become_numbered_parameters(sql: str, expected: str) -> None:
    """``?`` placeholders outside quotes become ``$1..$n``, in order."""
    assert to_dollar_params(sql) == expected


async def test_a_read_only_database_is_unwritable_until_it_is_writable_again(
    pg_url: str, stores: StoreFactory, admin: asyncpg.Connection
) -> None:
    """A database turned read-only (its sessions ended, as a failover to a standby
    would): append raises StoreUnavailable and keeps nothing, ``check_writable``
    raises too, and both pass again once it takes writes, without reopening the store."""
    store = await stores()
    name = pg_url.rsplit("/", 1)[1]

    async def read_only(on: bool) -> None:
        setting = "SET default_transaction_read_only = on" if on else "RESET ALL"
        await admin.execute(f'ALTER DATABASE "{name}" {setting}')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )

    await store.append(
        node_stream("n"), [NodeHeartbeat(node_id="n")], expected_version=0, timestamp=1.0
    )
    await read_only(True)
    with pytest.raises(StoreUnavailable, match="read-only"):
        await store.append(
            node_stream("n"), [NodeHeartbeat(node_id="n")], expected_version=1, timestamp=2.0
        )
    with pytest.raises(StoreUnavailable):
        await store.check_writable()
    await read_only(False)
    deadline = asyncio.get_running_loop().time() + 10
    while True:  # the probe runs at most once a second
        try:
            await store.check_writable()
            break
        except StoreUnavailable:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.2)
    await store.append(
        node_stream("n"), [NodeHeartbeat(node_id="n")], expected_version=1, timestamp=3.0
    )
    assert [r.timestamp for r in await store.read_stream(node_stream("n"))] == [1.0, 3.0]

"""``shelby copy-log``: a SQLite log moved up to PostgreSQL, run as the real command."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import asyncpg

from events._history import DAY, build_history
from shelby.events.open import open_store
from shelby.events.sqlite import SQLiteEventStore
from shelby.projections import all_projections

from .conftest import StoreFactory
from .test_parity import TABLES, contents, run_scenario


def shelby(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELBY_")}
    return subprocess.run(
        [sys.executable, "-m", "shelby", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


async def sqlite_log(path: Path) -> dict[str, object]:
    store = SQLiteEventStore(path, all_projections())
    await store.open()
    try:
        await run_scenario(store)
        return await contents(store)
    finally:
        await store.close()


async def test_copy_log_moves_the_whole_log_and_its_views(
    pg_url: str, stores: StoreFactory, tmp_path: Path
) -> None:
    """The copy holds the same rows (so the same hashes and Merkle root), verifies at
    the destination with ``shelby verify``, has its views rebuilt, and takes appends."""
    source = tmp_path / "shelby.db"
    expected = await sqlite_log(source)
    done = shelby("copy-log", "--from", str(source), "--to", pg_url)
    assert done.returncode == 0, done.stderr
    events = expected["events"]
    assert isinstance(events, list)
    head = events[-1][7]
    assert f"copied {len(events)} events" in done.stdout and head in done.stdout
    verified = shelby("verify", "--db", pg_url)
    assert verified.returncode == 0, verified.stderr
    assert f"ok: {len(events)} events, head {head}" in verified.stdout
    store = await stores()
    got = await contents(store)
    for key in ("events", "root", *TABLES):
        assert got[key] == expected[key], key
    assert (await store.head()).seq == len(events)


async def test_copy_log_moves_archived_history_back_into_the_log(
    pg_url: str, stores: StoreFactory, tmp_path: Path
) -> None:
    """A SQLite log that archived old history copies whole: the segments' rows land in
    their places, and the views PostgreSQL rebuilds, archived lines included, are the
    SQLite log's."""
    source = tmp_path / "shelby.db"
    clock = await build_history(source)
    store = SQLiteEventStore(source, all_projections())
    await store.open()
    try:
        assert await store.archive(before=clock.now() - 7 * DAY, now=clock.now())
        expected = await contents(store)
    finally:
        await store.close()
    done = shelby("copy-log", "--from", str(source), "--to", pg_url)
    assert done.returncode == 0, done.stderr
    got = await contents(await stores())
    for key in ("events", "root", *TABLES):
        assert got[key] == expected[key], key
    assert expected["log_archived"]


async def test_copy_log_refuses_a_destination_that_has_a_log(
    pg_url: str, stores: StoreFactory, tmp_path: Path
) -> None:
    """Copying into a database that already holds events fails and changes nothing."""
    source = tmp_path / "shelby.db"
    await sqlite_log(source)
    store = await stores()
    await run_scenario(store)
    before = await contents(store)
    done = shelby("copy-log", "--from", str(source), "--to", pg_url)
    assert done.returncode != 0 and "already holds events" in done.stderr
    assert await contents(store) == before


async def test_a_broken_source_copies_nothing(pg_url: str, tmp_path: Path) -> None:
    """A source whose chain does not verify is refused, naming the seq, and the
    destination keeps no event of it."""
    source = tmp_path / "shelby.db"
    await sqlite_log(source)
    conn = sqlite3.connect(source)
    with conn:
        conn.execute("DROP TRIGGER events_no_update")  # what a forger would do first
        conn.execute("UPDATE events SET data = replace(data, 'MNIST 3', 'MNIST 9')")
    conn.close()
    done = shelby("copy-log", "--from", str(source), "--to", pg_url)
    assert done.returncode != 0
    assert "source log is broken at seq" in done.stderr
    db = await asyncpg.connect(pg_url)
    try:
        assert await db.fetchval("SELECT count(*) FROM events") == 0
        assert await db.fetchval("SELECT seq FROM event_head") == 0
        assert await db.fetchval("SELECT count(*) FROM merkle_nodes") == 0
    finally:
        await db.close()


def test_copy_log_wants_a_sqlite_file_and_a_postgresql_url(tmp_path: Path) -> None:
    """A missing source or a destination that is not PostgreSQL is a usage error."""
    missing = shelby("copy-log", "--from", str(tmp_path / "nope.db"), "--to", "postgresql://x/y")
    assert missing.returncode != 0 and "no event log" in missing.stderr
    (tmp_path / "a.db").touch()
    wrong = shelby("copy-log", "--from", str(tmp_path / "a.db"), "--to", str(tmp_path / "b.db"))
    assert wrong.returncode != 0 and "postgresql://" in wrong.stderr


async def test_open_store_picks_the_backend_from_the_setting(pg_url: str, tmp_path: Path) -> None:
    """A postgresql:// (or postgres://) URL opens the PostgreSQL store; a path, SQLite."""
    for db in (pg_url, pg_url.replace("postgresql://", "postgres://", 1)):
        store = open_store(db, all_projections())
        assert type(store).__name__ == "PostgresEventStore"
        await store.open()
        await store.ping()
        await store.close()
    assert type(open_store(str(tmp_path / "x.db"), [])).__name__ == "SQLiteEventStore"

"""The background WAL checkpointer keeps the WAL bounded under a steady stream of
commits, which a passive checkpoint alone would not (it rarely catches the WAL's end
while the writer keeps appending)."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from shelby.events.wal import WalCheckpointer

PAGE = 4096


def _writer(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")  # as the store writes: commits take time
    conn.execute("CREATE TABLE t (x BLOB)")
    return conn


def test_the_wal_stays_bounded_and_every_row_reaches_the_database(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    conn = _writer(path)
    wal = WalCheckpointer(path, every_commits=4, reset_frames=200)
    wal.attach(conn)
    try:
        sizes = []
        for i in range(1500):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (?)", (os.urandom(3000),))
            conn.execute("COMMIT")
            wal.committed(conn)
            if i % 100 == 99:
                sizes.append(os.path.getsize(f"{path}-wal"))
    finally:
        wal.close()
    # Each commit adds about three frames: without restarts the WAL would end near
    # 4,500 frames (18 MB). It starts over whenever the writer finishes a copy, so its
    # high-water mark is the reset mark plus what one background copy lets through.
    written = 1500 * 3 * (PAGE + 24)
    assert max(sizes) < written / 3, sizes
    # The checkpoints copied into the database file: a new connection that reads only
    # the database file (the WAL checkpointed and gone) sees every row.
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    assert os.path.getsize(path) > 1500 * 3000
    check = sqlite3.connect(path)
    assert check.execute("SELECT count(*) FROM t").fetchone()[0] == 1500
    check.close()


def test_the_writer_no_longer_checkpoints_on_its_own(tmp_path: Path) -> None:
    conn = _writer(tmp_path / "log.db")
    wal = WalCheckpointer(tmp_path / "log.db")
    wal.attach(conn)
    try:
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    finally:
        wal.close()
        conn.close()


def test_a_checkpointer_that_could_not_open_the_log_tries_again(tmp_path: Path) -> None:
    """The log cannot be opened when the checkpointer first tries (its directory is
    away, as when no file descriptor is left): it tries again at the next checkpoint
    rather than ending, and a writer opened again can still hand it over."""
    home = tmp_path / "log"
    home.mkdir()
    path = home / "log.db"
    conn = _writer(path)
    wal = WalCheckpointer(path, every_commits=1)
    home.rename(tmp_path / "away")
    try:
        wal.attach(conn)
        conn.execute("INSERT INTO t VALUES (?)", (os.urandom(3000),))
        wal.committed(conn)  # a checkpoint, which cannot open the log
        time.sleep(0.3)
        (tmp_path / "away").rename(home)
        wal.attach(conn)  # as after a fault, when the writer's connection is opened again
        for _ in range(20):
            conn.execute("INSERT INTO t VALUES (?)", (os.urandom(3000),))
            wal.committed(conn)
        deadline = time.monotonic() + 10
        while os.path.getsize(path) < 20 * 3000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.path.getsize(path) >= 20 * 3000  # the WAL's pages reached the database
    finally:
        wal.close()
        conn.close()

"""Checkpointing the SQLite write-ahead log from a thread of its own.

By default SQLite checkpoints inside a commit: every thousand pages or so, one
unlucky commit also copies the whole WAL into the database file and fsyncs it, and
every caller in that batch waits for it (a latency spike of several milliseconds,
and a share of the writer's time). Here the writer turns that off and a background
connection copies the WAL with ``PASSIVE`` checkpoints, which never block the writer.

A passive checkpoint racing a busy writer rarely catches the WAL's very end, and the
WAL only starts over from its beginning once it has been copied completely. So when
the WAL grows past ``reset_frames`` the checkpointer asks the writer to finish the
job between two of its transactions (``finish``): by then there is little left to
copy, and the next transaction starts the WAL again from the top.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import structlog

__all__ = ["WalCheckpointer"]

log = structlog.get_logger(__name__)


class WalCheckpointer:
    def __init__(self, path: Path, *, every_commits: int = 8, reset_frames: int = 4000) -> None:
        self._path = path
        self._every = every_commits
        self._reset_frames = reset_frames
        self._commits = 0
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one checkpoint at a time, ours or the writer's
        self._closing = False
        # Set by the checkpointer thread, read and cleared by the writer thread; a
        # stale read only moves the writer's catch-up by one commit.
        self._reset_wanted = False
        self._thread = threading.Thread(target=self._run, name="shelby-wal", daemon=True)

    def attach(self, writer: sqlite3.Connection) -> None:
        """Take over checkpointing from a (new) writer connection."""
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        if not self._thread.is_alive() and not self._closing:
            if self._thread.ident is not None:  # it ran and ended: a thread starts once
                self._thread = threading.Thread(target=self._run, name="shelby-wal", daemon=True)
            self._thread.start()

    def committed(self, writer: sqlite3.Connection) -> None:
        """Called by the writer thread after each commit, outside any transaction."""
        if self._reset_wanted:
            # Waits at most for the background copy under way, which then has little
            # left to do; the background thread starts none while a reset is wanted.
            with self._lock:
                self._reset_wanted = not self.finish(writer)
        self._commits += 1
        if self._commits >= self._every:
            self._commits = 0
            self._wake.set()

    def finish(self, writer: sqlite3.Connection) -> bool:
        """Copy what is left of the WAL from the writer's own connection, so that its
        next transaction restarts the WAL; False if that must be tried again (the
        background checkpoint held the checkpoint lock, or a reader held old pages)."""
        try:
            busy, frames, copied = writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            log.warning("the writer could not checkpoint the WAL", error=str(exc))
            return False
        return not busy and frames == copied

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            # The copy into the database file is fsynced before the WAL is reused.
            conn.execute("PRAGMA synchronous = FULL")
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self) -> None:
        # Opened at the first checkpoint and, should that fail (no file descriptor
        # left), at the next: with the writer's own checkpoints off, a thread that
        # ended here would leave the WAL to grow for as long as the server runs.
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._closing:
                    return
                if self._reset_wanted:
                    continue  # the writer finishes this one
                try:
                    if conn is None:
                        conn = self._connect()
                    with self._lock:
                        _busy, frames, _copied = conn.execute(
                            "PRAGMA wal_checkpoint(PASSIVE)"
                        ).fetchone()
                except sqlite3.Error as exc:
                    log.warning("the WAL checkpoint failed", error=str(exc))
                    continue
                if frames >= self._reset_frames:
                    self._reset_wanted = True
        finally:
            if conn is not None:
                conn.close()

"""The SQLite ``events`` table, shared by the log and its archive segments, which hold
archived rows in the very same layout (README, "Retention and archives")."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ARCHIVABLE",
    "ARCHIVE_PENDING",
    "EVENTS_NO_DELETE",
    "EVENTS_NO_UPDATE",
    "EVENTS_TABLE",
    "INSERT_EVENT",
    "SELECT_EVENTS",
    "Row",
]

Row = tuple[Any, ...]
"""``(seq, stream, version, type, timestamp, data, prev_hash, hash)``"""

# The event types retention may move out of the log: nothing a view shows depends on
# any but the newest of each stream, which always stays.
ARCHIVABLE = ("NodeHeartbeat", "LogLinesAppended")

EVENTS_TABLE = """CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    version INTEGER NOT NULL,
    type TEXT NOT NULL,
    timestamp DOUBLE PRECISION NOT NULL,
    data TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    UNIQUE (stream, version)
)"""

EVENTS_NO_UPDATE = """CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
   BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END"""

# The seqs one archive transaction moves out, listed for the delete trigger and emptied
# again before that transaction commits: outside it the table is always empty.
ARCHIVE_PENDING = "CREATE TABLE IF NOT EXISTS archive_pending (seq INTEGER PRIMARY KEY)"

# A row may leave the log only inside an archive transaction: it is of an archivable
# type, its seq is listed in archive_pending, and the log's newest event is the
# HistoryArchived that transaction appended, which names the segment holding the row.
# Every other DELETE is refused, as before retention existed.
EVENTS_NO_DELETE = f"""CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
   WHEN OLD.type NOT IN ({", ".join(f"'{t}'" for t in ARCHIVABLE)})
     OR NOT EXISTS (SELECT 1 FROM archive_pending WHERE seq = OLD.seq)
     OR (SELECT type FROM events ORDER BY seq DESC LIMIT 1) IS NOT 'HistoryArchived'
   BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END"""

INSERT_EVENT = (
    "INSERT INTO events (seq, stream, version, type, timestamp, data, prev_hash, hash)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
SELECT_EVENTS = "SELECT seq, stream, version, type, timestamp, data, prev_hash, hash FROM events"

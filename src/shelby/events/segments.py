"""Archive segments: SQLite files holding rows moved out of the log, byte for byte.

A segment is written whole, fsynced and renamed into place before the log lets go of
anything, and never written again: it is opened read-only and ``immutable`` from then
on, so its bytes (whose SHA-256 the ``HistoryArchived`` event keeps) never change. Its
``events`` table has the log's own layout, so every row still recomputes its hash with
the README's recipe, and its ``manifest`` says which rows it holds and the log's head
when they left.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import msgspec

from shelby.events._sqlite_schema import (
    EVENTS_NO_UPDATE,
    EVENTS_TABLE,
    INSERT_EVENT,
    SELECT_EVENTS,
    Row,
)
from shelby.events._sqlite_tree import leaves_between
from shelby.events.merkle import leaf_hash
from shelby.events.types import HistoryArchived
from shelby.events.verify import row_problem

__all__ = [
    "FORMAT",
    "Manifest",
    "check_segment",
    "digest_of",
    "file_sha256",
    "open_segment",
    "read_manifest",
    "segment_name",
    "segment_rows",
    "write_segment",
]

FORMAT = 1
_CHUNK = 5000
_MAX_PROBLEMS = 10

_MANIFEST_DDL = [
    """CREATE TABLE manifest (
        format INTEGER NOT NULL,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        count INTEGER NOT NULL,
        digest TEXT NOT NULL,
        through_seq INTEGER NOT NULL,
        through_hash TEXT NOT NULL,
        before DOUBLE PRECISION NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    )""",
    """CREATE TRIGGER events_no_delete BEFORE DELETE ON events
       BEGIN SELECT RAISE(ABORT, 'an archive segment is read-only'); END""",
    """CREATE TRIGGER manifest_no_update BEFORE UPDATE ON manifest
       BEGIN SELECT RAISE(ABORT, 'an archive segment is read-only'); END""",
    """CREATE TRIGGER manifest_no_delete BEFORE DELETE ON manifest
       BEGIN SELECT RAISE(ABORT, 'an archive segment is read-only'); END""",
]


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """What a segment holds: ``count`` rows from ``first_seq`` to ``last_seq`` (not
    contiguous: the rows that stayed lie between), ``digest`` over their hashes, and
    the log's head (``through_seq``, ``through_hash``) they were chosen against."""

    format: int = FORMAT
    first_seq: int
    last_seq: int
    count: int
    digest: str
    through_seq: int
    through_hash: str
    before: float
    created_at: float


def segment_name(first_seq: int, last_seq: int) -> str:
    return f"segment-{first_seq}-{last_seq}.db"


def digest_of(hashes: Iterable[str]) -> str:
    """SHA-256 over the rows' 32-byte hashes, in ``seq`` order."""
    h = hashlib.sha256()
    for value in hashes:
        h.update(bytes.fromhex(value))
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def write_segment(directory: Path, rows: Sequence[Row], manifest: Manifest) -> Path:
    """Write ``rows`` (in ``seq`` order) as a segment in ``directory``: on disk and named
    only once whole, so a crash leaves either nothing or a complete file."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / segment_name(manifest.first_seq, manifest.last_seq)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        # No journal: a file cut short by a crash is never renamed, so never read.
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("BEGIN")
        conn.execute(EVENTS_TABLE)
        for ddl in _MANIFEST_DDL:
            conn.execute(ddl)
        conn.executemany(INSERT_EVENT, rows)
        conn.execute(
            "INSERT INTO manifest (format, first_seq, last_seq, count, digest, through_seq,"
            " through_hash, before, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                manifest.format,
                manifest.first_seq,
                manifest.last_seq,
                manifest.count,
                manifest.digest,
                manifest.through_seq,
                manifest.through_hash,
                manifest.before,
                manifest.created_at,
            ),
        )
        conn.execute(EVENTS_NO_UPDATE)
        conn.execute("COMMIT")
    finally:
        conn.close()
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync(directory)
    return path


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_segment(path: Path) -> sqlite3.Connection:
    """Read-only and ``immutable``: reading never writes a byte of it. Text that is not
    UTF-8 (a tampered file) comes back with lone surrogates, for the check to name."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    conn = sqlite3.connect(
        f"{path.absolute().as_uri()}?mode=ro&immutable=1", uri=True, check_same_thread=False
    )
    conn.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
    return conn


def read_manifest(conn: sqlite3.Connection) -> Manifest:
    row = conn.execute(
        "SELECT format, first_seq, last_seq, count, digest, through_seq, through_hash,"
        " before, created_at FROM manifest"
    ).fetchone()
    if row is None:
        raise sqlite3.DatabaseError("the segment has no manifest")
    fields = (
        "format",
        "first_seq",
        "last_seq",
        "count",
        "digest",
        "through_seq",
        "through_hash",
        "before",
        "created_at",
    )
    return msgspec.convert(dict(zip(fields, row, strict=True)), Manifest)


def segment_rows(conn: sqlite3.Connection, low: int, high: int) -> list[Row]:
    """The rows with ``low <= seq <= high``, in ``seq`` order."""
    return conn.execute(
        f"{SELECT_EVENTS} WHERE seq >= ? AND seq <= ? ORDER BY seq", (low, high)
    ).fetchall()


def _chunks(conn: sqlite3.Connection) -> Iterator[list[Row]]:
    after = 0
    while rows := conn.execute(
        f"{SELECT_EVENTS} WHERE seq > ? ORDER BY seq LIMIT ?", (after, _CHUNK)
    ).fetchall():
        yield rows
        after = rows[-1][0]


def check_segment(
    path: Path,
    *,
    entry: HistoryArchived | None = None,
    log: sqlite3.Connection | None = None,
) -> tuple[Manifest | None, list[str]]:
    """Everything a segment can be checked for, and what does not hold (empty: all).

    Alone: each row's hash recomputes from its ``prev_hash`` and canonical bytes, rows
    whose seqs follow each other link, and count, range and digest are the manifest's.
    With the ``HistoryArchived`` event that names it (``entry``): the file's SHA-256 and
    the event's count, range and digest. With the log (``log``): each row's hash is the
    leaf the log's Merkle tree holds for its seq.
    """
    problems: list[str] = []
    if entry is not None and path.is_file():
        actual = file_sha256(path)
        if actual != entry.file_hash:
            problems.append(
                f"its bytes changed: SHA-256 {actual}, the HistoryArchived event says"
                f" {entry.file_hash}"
            )
    try:
        conn = open_segment(path)
    except (FileNotFoundError, sqlite3.Error) as exc:
        return None, [*problems, str(exc)]
    try:
        manifest = read_manifest(conn)
        found = _check_rows(conn, log, problems)
    except (sqlite3.Error, msgspec.ValidationError) as exc:
        return None, [*problems, f"{path.name} cannot be read: {exc}"]
    finally:
        conn.close()
    count, first, last, digest = found
    said = (manifest.count, manifest.first_seq, manifest.last_seq, manifest.digest)
    if (count, first, last, digest) != said:
        problems.append(
            f"its rows are {count} events (seq {first}..{last}, digest {digest}), its manifest"
            f" says {said[0]} (seq {said[1]}..{said[2]}, digest {said[3]})"
        )
    if entry is not None:
        listed = (entry.count, entry.first_seq, entry.last_seq, entry.digest)
        if listed != said:
            problems.append(
                f"the HistoryArchived event lists {listed[0]} events (seq {listed[1]}..{listed[2]},"
                f" digest {listed[3]}), its manifest {said[0]} (seq {said[1]}..{said[2]},"
                f" digest {said[3]})"
            )
    return manifest, problems


def _check_rows(
    conn: sqlite3.Connection, log: sqlite3.Connection | None, problems: list[str]
) -> tuple[int, int, int, str]:
    digest = hashlib.sha256()
    count = first = last = 0
    prev: tuple[int, str] | None = None

    def note(problem: str) -> None:
        # Only the first few are named, but every row is still counted and digested:
        # stopping early would add a count or digest mismatch that is not there.
        if len(problems) < _MAX_PROBLEMS:
            problems.append(problem)

    for rows in _chunks(conn):
        leaves = leaves_between(log, rows[0][0], rows[-1][0]) if log is not None else {}
        for row in rows:
            seq, prev_hash, hash_ = row[0], row[6], row[7]
            if len(problems) < _MAX_PROBLEMS:  # the costly check, while it can be named
                reason = row_problem(row)
                if reason is not None:
                    note(f"event {seq}: {reason}")
            if prev is not None and seq == prev[0] + 1 and prev_hash != prev[1]:
                note(f"event {seq}: prev_hash is not the hash of event {seq - 1}")
            try:
                entry = bytes.fromhex(hash_)
            except ValueError:
                note(f"event {seq}: its hash is not hex")
                entry = b""
            digest.update(entry)
            if log is not None and leaves.get(seq) != leaf_hash(entry):
                note(f"event {seq}: its hash is not the log's Merkle leaf {seq - 1}")
            first = first or seq
            last, count, prev = seq, count + 1, (seq, hash_)
    return count, first, last, digest.hexdigest()

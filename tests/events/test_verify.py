"""``verify`` finds any tampering with the log: a changed byte in any column of any
row, a removed row, a swapped pair; and the triggers refuse UPDATE and DELETE."""

from __future__ import annotations

import asyncio
import sqlite3
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cli._logfile import rebuild, verify
from shelby.events.verify import Verdict, verify_store

from ._helpers import COLUMNS, assert_chain, copy_db, opened, raw_rows

Tamper = Callable[[sqlite3.Connection], object]

TAMPER_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def verify_in_process(path: Path) -> Verdict:
    async def run() -> Verdict:
        async with opened(path) as store:
            return await verify_store(store)

    return asyncio.run(run())


def tampered(src: Path, dst_dir: Path, change: Tamper) -> Path:
    """A copy of ``src`` changed by ``change`` on a connection of its own, after the
    append-only triggers were dropped (the only way to edit the log in place)."""
    path = copy_db(src, dst_dir)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute("DROP TRIGGER events_no_delete")
        conn.execute("BEGIN")
        change(conn)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return path


def set_value(seq: int, column: str, value: Any) -> Tamper:
    return lambda conn: conn.execute(f"UPDATE events SET {column} = ? WHERE seq = ?", (value, seq))


def changed_byte(text: str, index: int, byte: int) -> str | None:
    """``text`` with its UTF-8 byte at ``index`` replaced, or None when that is no
    change or no longer UTF-8 text."""
    raw = bytearray(text.encode("utf-8"))
    index %= len(raw)
    if raw[index] == byte:
        return None
    raw[index] = byte
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def flipped_mantissa_bit(value: float, bit: int) -> float:
    (bits,) = struct.unpack("<Q", struct.pack("<d", value))
    (flipped,) = struct.unpack("<d", struct.pack("<Q", bits ^ (1 << bit)))
    return float(flipped)


# --- a good log ----------------------------------------------------------------------


def test_good_log_verifies(sample_db: Path) -> None:
    """An untouched log verifies, with its count and head hash."""
    rows = raw_rows(sample_db)
    head = assert_chain(rows)
    assert verify_in_process(sample_db) == Verdict(len(rows), head, None)


def test_cli_verify_good_log_exits_0_with_count_and_head(sample_db: Path, tmp_path: Path) -> None:
    """``shelby verify`` on a good log exits 0 and prints the count and head hash."""
    path = copy_db(sample_db, tmp_path)
    rows = raw_rows(path)
    done = verify(path)
    assert done.returncode == 0, done.stderr
    assert f"ok: {len(rows)} events, head {rows[-1][7]}" in done.stdout


def test_empty_log_verifies(tmp_path: Path) -> None:
    """A log with no events verifies with count 0 and the genesis hash."""

    async def run() -> Verdict:
        async with opened(tmp_path / "empty.db") as store:
            return await verify_store(store)

    assert asyncio.run(run()) == Verdict(0, "0" * 64, None)


# --- the triggers --------------------------------------------------------------------


@pytest.mark.parametrize("column", COLUMNS)
def test_trigger_refuses_update(sample_db: Path, tmp_path: Path, column: str) -> None:
    """Every UPDATE of the events table is refused by the database, whatever column."""
    path = copy_db(sample_db, tmp_path)
    before = raw_rows(path)
    conn = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute(f"UPDATE events SET {column} = {column} WHERE seq = 2")
    finally:
        conn.close()
    assert raw_rows(path) == before


def test_trigger_refuses_delete(sample_db: Path, tmp_path: Path) -> None:
    """Every DELETE from the events table is refused by the database."""
    path = copy_db(sample_db, tmp_path)
    before = raw_rows(path)
    conn = sqlite3.connect(path)
    try:
        for where in ("seq = 1", f"seq = {len(before)}", "1"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                conn.execute(f"DELETE FROM events WHERE {where}")
    finally:
        conn.close()
    assert raw_rows(path) == before


# --- tampering, picked by hypothesis -------------------------------------------------

TEXT_COLUMNS = ("stream", "type", "data", "prev_hash", "hash")


@TAMPER_SETTINGS
@given(
    row=st.integers(min_value=0),
    column=st.sampled_from(TEXT_COLUMNS),
    index=st.integers(min_value=0, max_value=100_000),
    byte=st.integers(min_value=0x20, max_value=0x7E),
)
def test_changed_byte_in_a_text_column_is_reported(
    sample_db: Path, row: int, column: str, index: int, byte: int
) -> None:
    """Changing any byte of stream, type, data, prev_hash or hash is reported at its seq."""
    rows = raw_rows(sample_db)
    seq = row % len(rows) + 1
    original = rows[seq - 1][COLUMNS.index(column)]
    value = changed_byte(original, index, byte)
    assume(value is not None)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = tampered(sample_db, Path(tmp), set_value(seq, column, value))
        except sqlite3.IntegrityError:  # a (stream, version) that exists already
            assume(False)
        verdict = verify_in_process(path)
    assert verdict.problem is not None
    assert verdict.problem.seq == seq


@TAMPER_SETTINGS
@given(row=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=51))
def test_changed_timestamp_is_reported(sample_db: Path, row: int, bit: int) -> None:
    """Changing any bit of an event's timestamp is reported at its seq."""
    rows = raw_rows(sample_db)
    seq = row % len(rows) + 1
    value = flipped_mantissa_bit(rows[seq - 1][4], bit)
    with tempfile.TemporaryDirectory() as tmp:
        path = tampered(sample_db, Path(tmp), set_value(seq, "timestamp", value))
        verdict = verify_in_process(path)
    assert verdict.problem is not None
    assert verdict.problem.seq == seq


@TAMPER_SETTINGS
@given(row=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=40))
def test_changed_version_is_reported(sample_db: Path, row: int, bit: int) -> None:
    """Changing an event's version is reported at its seq."""
    rows = raw_rows(sample_db)
    seq = row % len(rows) + 1
    value = rows[seq - 1][2] ^ (1 << bit)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = tampered(sample_db, Path(tmp), set_value(seq, "version", value))
        except sqlite3.IntegrityError:  # a (stream, version) that exists already
            assume(False)
        verdict = verify_in_process(path)
    assert verdict.problem is not None
    assert verdict.problem.seq == seq


@TAMPER_SETTINGS
@given(row=st.integers(min_value=0))
def test_removed_row_is_reported(sample_db: Path, row: int) -> None:
    """Removing any event but the newest is reported as a gap at its seq."""
    rows = raw_rows(sample_db)
    seq = row % (len(rows) - 1) + 1
    with tempfile.TemporaryDirectory() as tmp:
        path = tampered(
            sample_db, Path(tmp), lambda c: c.execute("DELETE FROM events WHERE seq = ?", (seq,))
        )
        verdict = verify_in_process(path)
    assert verdict.problem is not None
    assert verdict.problem.seq == seq
    assert "missing" in verdict.problem.reason


def swap(first: int, second: int) -> Tamper:
    """Exchange two events' contents, each keeping its place (seq)."""

    def change(conn: sqlite3.Connection) -> None:
        cols = ", ".join(COLUMNS[1:])
        a = conn.execute(f"SELECT {cols} FROM events WHERE seq = ?", (first,)).fetchone()
        b = conn.execute(f"SELECT {cols} FROM events WHERE seq = ?", (second,)).fetchone()
        # Park the first out of the way so that (stream, version) stays unique meanwhile.
        conn.execute("UPDATE events SET version = -version WHERE seq = ?", (first,))
        sets = ", ".join(f"{c} = ?" for c in COLUMNS[1:])
        conn.execute(f"UPDATE events SET {sets} WHERE seq = ?", (*a, second))
        conn.execute(f"UPDATE events SET {sets} WHERE seq = ?", (*b, first))

    return change


@TAMPER_SETTINGS
@given(pair=st.tuples(st.integers(min_value=0), st.integers(min_value=0)))
def test_swapped_pair_is_reported(sample_db: Path, pair: tuple[int, int]) -> None:
    """Swapping two events is reported at the earlier one."""
    n = len(raw_rows(sample_db))
    first, second = sorted((pair[0] % n + 1, pair[1] % n + 1))
    assume(first != second)
    with tempfile.TemporaryDirectory() as tmp:
        path = tampered(sample_db, Path(tmp), swap(first, second))
        verdict = verify_in_process(path)
    assert verdict.problem is not None
    assert verdict.problem.seq == first


# --- the real command ----------------------------------------------------------------


def cli_cases(n: int) -> list[tuple[str, int, Tamper]]:
    return [
        ("data", 5, set_value(5, "data", '{"type":"JobCreated","jobId":"forged"}')),
        ("type", 6, set_value(6, "type", "JobDeleted")),
        ("stream", 7, set_value(7, "stream", "job-forged")),
        ("timestamp", 8, set_value(8, "timestamp", 1_700_000_999.5)),
        ("version", 9, set_value(9, "version", 999)),
        ("prev_hash", 10, set_value(10, "prev_hash", "1" * 64)),
        ("hash", n, set_value(n, "hash", "2" * 64)),
        ("removed", 4, lambda c: c.execute("DELETE FROM events WHERE seq = 4")),
        ("swapped", 3, swap(3, 11)),
    ]


@pytest.mark.parametrize("case", range(9), ids=lambda i: f"case{i}")
def test_cli_verify_names_the_first_bad_seq(sample_db: Path, tmp_path: Path, case: int) -> None:
    """``shelby verify`` exits 1 naming the first bad seq, for every kind of tampering."""
    name, seq, change = cli_cases(len(raw_rows(sample_db)))[case]
    path = tampered(sample_db, tmp_path, change)
    done = verify(path)
    assert done.returncode == 1, (name, done.stdout, done.stderr)
    assert f"FAILED at seq {seq}:" in done.stderr, (name, done.stderr)
    assert "ok:" not in done.stdout


def test_cli_verify_of_a_missing_file_fails_without_creating_it(tmp_path: Path) -> None:
    """``shelby verify`` on a path with no log fails and leaves no file behind."""
    path = tmp_path / "nothing.db"
    done = verify(path)
    assert done.returncode != 0
    assert not path.exists()


def not_utf8_at_seq_5(sample_db: Path, tmp_path: Path) -> Path:
    return tampered(
        sample_db,
        tmp_path,
        lambda c: c.execute(
            "UPDATE events SET data = CAST(? AS TEXT) WHERE seq = 5", (b'{"type":"\xff"}',)
        ),
    )


def test_cli_verify_names_a_row_that_is_no_longer_utf8(sample_db: Path, tmp_path: Path) -> None:
    """A changed byte that leaves invalid UTF-8 in ``data`` is reported at its seq."""
    path = not_utf8_at_seq_5(sample_db, tmp_path)
    done = verify(path)
    assert done.returncode == 1
    assert "FAILED at seq 5:" in done.stderr


def test_cli_rebuild_refuses_a_row_that_is_no_longer_utf8(sample_db: Path, tmp_path: Path) -> None:
    """A replay reads plain text: a row that is not UTF-8 stops ``shelby rebuild`` with
    a clear error that points at ``shelby verify``, not with a traceback."""
    path = not_utf8_at_seq_5(sample_db, tmp_path)
    done = rebuild(path)
    assert done.returncode == 1
    assert "is not valid UTF-8; shelby verify names it" in done.stderr
    assert "Traceback" not in done.stderr


def test_removed_newest_row_is_reported(sample_db: Path, tmp_path: Path) -> None:
    """Removing the newest event (truncating the log) is reported too."""
    n = len(raw_rows(sample_db))
    path = tampered(
        sample_db, tmp_path, lambda c: c.execute("DELETE FROM events WHERE seq = ?", (n,))
    )
    assert not verify_in_process(path).ok

"""``shelby archive``, ``shelby verify [--segment]`` and ``shelby rebuild`` on a log with
archived history, as real processes on a real file."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from events._history import DAY, build_history
from shelby.cli._lock import hold_log

from ._logfile import dump, rebuild, verify
from .test_log_lock import _shelby


@pytest.fixture(scope="module")
def archived(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A log whose first five days of hourly heartbeats, ten days old, were archived by
    ``shelby archive --vacuum``: the log, its segment, and what it printed."""
    path = tmp_path_factory.mktemp("archived") / "shelby.db"
    # Ending about now: the archive command reads the real time.
    asyncio.run(build_history(path, start=time.time() - 15 * DAY, beats=120, batches=20))
    done = _shelby("archive", "--db", str(path), "--older-than-days", "7", "--vacuum")
    assert done.returncode == 0, done.stderr
    (segment,) = (path.parent / "archive").glob("segment-*.db")
    return path, segment, done.stdout


@pytest.fixture
def copy(archived: tuple[Path, Path, str], tmp_path: Path) -> tuple[Path, Path]:
    path, segment, _ = archived
    (tmp_path / "archive").mkdir()
    shutil.copy(path, tmp_path / path.name)
    shutil.copy(segment, tmp_path / "archive" / segment.name)
    return tmp_path / path.name, tmp_path / "archive" / segment.name


def test_archive_moves_the_old_day_out_and_the_file_shrinks(
    archived: tuple[Path, Path, str],
) -> None:
    """It reports what it moved and the file's size before and after (VACUUM gives the
    freed pages back)."""
    _path, segment, printed = archived
    moved = sqlite3.connect(segment).execute("SELECT count(*) FROM events").fetchone()[0]
    assert f"archived {moved} events to 1 segments" in printed
    sizes = printed.split("the log's file: ")[1]
    before, after = (int(part.split()[0].replace(",", "")) for part in sizes.split(", "))
    print(f"\nlog file {before:,} -> {after:,} bytes; segment {segment.stat().st_size:,} bytes")
    assert after < before * 0.7


def test_verify_passes_across_the_segment_and_checks_it_alone(copy: tuple[Path, Path]) -> None:
    """verify walks every event; ``--segment`` checks the file alone, and against the
    log: its hash, digest and every Merkle leaf."""
    path, segment = copy
    whole = verify(path)
    assert whole.returncode == 0, whole.stderr
    assert "archive segments)" in whole.stdout
    alone = _shelby("verify", "--segment", str(segment))
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.startswith(f"ok: {segment.name}: ")
    against = _shelby("verify", "--segment", str(segment), "--db", str(path))
    assert against.returncode == 0, against.stderr
    assert "every Merkle leaf match" in against.stdout


def test_a_changed_segment_fails_its_check(copy: tuple[Path, Path]) -> None:
    """One flipped byte in an archived heartbeat fails ``verify --segment``, naming the
    event."""
    _path, segment = copy
    data = bytearray(segment.read_bytes())
    data[data.index(b'"cpuUsage":') + 2] ^= 0x01
    segment.write_bytes(bytes(data))
    alone = _shelby("verify", "--segment", str(segment))
    assert alone.returncode == 1
    assert "hash does not match the event's contents" in alone.stderr


def test_rebuild_replays_the_segment_and_refuses_without_it(copy: tuple[Path, Path]) -> None:
    """With its segment, rebuild gives the same projections; without it, verify names
    the missing file and rebuild refuses before dropping anything."""
    path, segment = copy
    live = dump(path)
    done = rebuild(path)
    assert done.returncode == 0, done.stderr
    assert dump(path) == live
    segment.unlink()
    whole = verify(path)
    assert whole.returncode == 1
    assert f"{segment.name}" in whole.stderr and "which is missing" in whole.stderr
    refused = rebuild(path)
    assert refused.returncode == 1
    assert "nothing was rebuilt" in refused.stderr and segment.name in refused.stderr
    assert dump(path) == live


def test_archive_waits_for_the_server(copy: tuple[Path, Path]) -> None:
    """While another process holds the log (a running server), archive refuses."""
    path, _segment = copy
    fd = hold_log(str(path), "shelby serve")
    try:
        refused = _shelby("archive", "--db", str(path), "--older-than-days", "1")
    finally:
        assert fd is not None
        os.close(fd)
    assert refused.returncode != 0
    assert "in use (shelby serve" in refused.stderr

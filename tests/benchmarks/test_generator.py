"""The benchmarks' log generator writes a log that verifies and rebuilds to itself."""

from __future__ import annotations

import itertools
import sqlite3
import statistics
from pathlib import Path

import pytest
from bench._generator import HEARTBEAT_SECONDS, Shape, cached_log, generate, long_job_id

from cli._logfile import dump, rebuild, verify
from shelby.events.types import EVENT_TYPES

SHAPE = Shape(events=4000, nodes=20, jobs=100)


def test_generated_log_verifies_and_rebuilds_equal(tmp_path: Path) -> None:
    """Exactly the events asked for, every event type and every job status in them;
    ``shelby verify`` accepts the chain and ``shelby rebuild`` gives back every
    projection row for row, so what the store wrote live is what replay makes."""
    path = tmp_path / "gen.db"
    built = generate(path, SHAPE)
    assert built.events == SHAPE.events
    assert set(built.statuses) == {"pending", "assigned", "running", "finished", "failed"}
    assert all(n > 0 for n in built.statuses.values()), built.statuses
    assert built.deleted > 0 and built.log_lines > built.long_job_lines > 0

    conn = sqlite3.connect(path)
    try:
        types = {t for (t,) in conn.execute("SELECT DISTINCT type FROM events")}
        # Every type but retention's own, which the generator leaves off.
        assert types == set(EVENT_TYPES) - {"HistoryArchived"}
        (backwards,) = conn.execute(
            "SELECT count(*) FROM events a JOIN events b ON b.seq = a.seq + 1"
            " WHERE b.timestamp < a.timestamp"
        ).fetchone()
        assert backwards == 0
        beats = conn.execute(
            "SELECT timestamp FROM events WHERE stream = 'node-node-0007' ORDER BY seq"
        ).fetchall()
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(beats[1:])]  # after registering
        assert 0.5 * HEARTBEAT_SECONDS < statistics.median(gaps) < 2 * HEARTBEAT_SECONDS
        (long_lines,) = conn.execute(
            "SELECT max(last_offset) + 1 FROM log_batches WHERE job_id = ?", (long_job_id(),)
        ).fetchone()
        assert long_lines == built.long_job_lines
    finally:
        conn.close()

    verified = verify(path)
    assert verified.returncode == 0, verified.stderr
    assert f"ok: {SHAPE.events} events" in verified.stdout
    before = dump(path)
    rebuilt = rebuild(path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert dump(path) == before


def test_cached_log_is_built_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second call reuses the file the first built, under ``$BENCH_DIR``."""
    monkeypatch.setenv("BENCH_DIR", str(tmp_path))
    said: list[str] = []
    shape = Shape(events=600, nodes=10)
    first = cached_log(shape, echo=said.append)
    assert first.parent.parent == tmp_path and first.exists()
    made = first.stat().st_mtime_ns
    assert cached_log(shape, echo=said.append) == first
    assert first.stat().st_mtime_ns == made
    assert any("reusing" in line for line in said)
    assert not list(first.parent.glob("*.building-*"))

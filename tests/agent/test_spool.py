"""The log spool keeps every line on disk until the server acknowledges it."""

from __future__ import annotations

from pathlib import Path

import pytest

from shelby.agent.spool import LogSpool


def lines(start: int, count: int, stream: str = "stdout") -> list[dict[str, object]]:
    return [
        {"line": f"line {i}", "timestamp": 1000.0 + i, "stream": stream}
        for i in range(start, start + count)
    ]


def test_pending_starts_at_the_acknowledged_offset(tmp_path: Path) -> None:
    """Lines are handed out from the acked offset, in order, until acknowledged."""
    spool = LogSpool(tmp_path)
    spool.append(lines(0, 5))
    offset, batch = spool.pending(100, 1 << 20)
    assert offset == 0 and [b["line"] for b in batch] == [f"line {i}" for i in range(5)]
    spool.ack(3)
    offset, batch = spool.pending(100, 1 << 20)
    assert offset == 3 and [b["line"] for b in batch] == ["line 3", "line 4"]
    spool.ack(5)
    assert spool.drained and spool.pending(100, 1 << 20) == (5, [])


def test_batches_respect_line_and_byte_limits(tmp_path: Path) -> None:
    """A batch holds at most max_lines and max_bytes, but always at least one line."""
    spool = LogSpool(tmp_path)
    spool.append(lines(0, 10))
    assert len(spool.pending(4, 1 << 20)[1]) == 4
    one_line_bytes = len('{"line":"line 0","timestamp":1000.0,"stream":"stdout"}\n')
    assert len(spool.pending(100, one_line_bytes * 2)[1]) == 2
    spool.append([{"line": "x" * 10_000, "timestamp": 1.0, "stream": "stderr"}])
    spool.ack(10)
    assert len(spool.pending(100, 10)[1]) == 1


def test_unacknowledged_lines_survive_a_restart(tmp_path: Path) -> None:
    """Reopening the spool resumes from the saved ack; nothing is resent twice or lost."""
    spool = LogSpool(tmp_path)
    spool.append(lines(0, 6))
    spool.ack(4)
    spool.close()
    again = LogSpool(tmp_path)
    assert again.acked == 4 and again.written == 6
    offset, batch = again.pending(100, 1 << 20)
    assert offset == 4 and [b["line"] for b in batch] == ["line 4", "line 5"]
    again.append(lines(6, 1))
    assert again.written == 7


def test_a_torn_last_line_is_dropped_on_reopen(tmp_path: Path) -> None:
    """Half a line left by a crash mid-write is cut off, not sent as garbage."""
    spool = LogSpool(tmp_path)
    spool.append(lines(0, 2))
    spool.close()
    with open(tmp_path / "lines.jsonl", "ab") as f:
        f.write(b'{"line":"half')
    again = LogSpool(tmp_path)
    assert again.written == 2
    again.append(lines(2, 1))
    assert [b["line"] for b in again.pending(100, 1 << 20)[1]] == ["line 0", "line 1", "line 2"]


def test_rewind_resends_from_an_earlier_offset(tmp_path: Path) -> None:
    """When the server says it expects an earlier offset, lines from there come again."""
    spool = LogSpool(tmp_path)
    spool.append(lines(0, 5))
    spool.ack(5)
    spool.rewind(2)
    offset, batch = spool.pending(100, 1 << 20)
    assert offset == 2 and [b["line"] for b in batch] == ["line 2", "line 3", "line 4"]


def test_acking_beyond_what_was_written_is_refused(tmp_path: Path) -> None:
    """An ack past the written lines is a bug, not something to record."""
    spool = LogSpool(tmp_path)
    spool.append(lines(0, 2))
    with pytest.raises(ValueError):
        spool.ack(3)
    spool.ack(1)
    spool.ack(0)  # an older ack changes nothing
    assert spool.acked == 1


def test_unicode_and_control_characters_round_trip(tmp_path: Path) -> None:
    """Whatever text a script prints comes back from the spool unchanged."""
    spool = LogSpool(tmp_path)
    text = 'é ✓ "quoted" \\ back\ttab \x1b[31mred\x1b[0m'
    spool.append([{"line": text, "timestamp": 1.5, "stream": "stderr"}])
    assert spool.pending(10, 1 << 20)[1] == [{"line": text, "timestamp": 1.5, "stream": "stderr"}]


def test_flushed_lines_are_on_disk_without_a_close(tmp_path: Path) -> None:
    """After flush, a killed agent (no close) still leaves every line for its next start."""
    spool = LogSpool(tmp_path)
    spool.append(lines(0, 3))
    spool.flush()
    reader = LogSpool(tmp_path)  # the next start, while the first never closed
    assert reader.written == 3
    assert [b["line"] for b in reader.pending(10, 1 << 20)[1]] == ["line 0", "line 1", "line 2"]

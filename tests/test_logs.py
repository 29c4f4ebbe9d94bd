"""Shelby's own log lines: the timestamp processor that formats each second once."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from shelby import logs
from shelby.logs import _UtcTimestamp


def _parse(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    "times",
    [
        # across a second's boundary, and back (a clock stepped back by NTP)
        [1_700_000_000.999999, 1_700_000_001.0, 1_700_000_001.000001, 1_700_000_000.5],
        [1_700_000_000.9999996, 1_700_000_001.0000004],  # rounded up into the next second
        [0.25, 59.75, 60.0, 3_600.0, 86_399.999999, 86_400.0],
    ],
)
def test_timestamps_are_iso_utc_and_follow_the_clock(
    monkeypatch: pytest.MonkeyPatch, times: list[float]
) -> None:
    stamp = _UtcTimestamp()
    for now in times:
        # logs' own ``time`` only: the clock everyone else reads is left alone.
        monkeypatch.setattr(logs, "time", SimpleNamespace(time=lambda now=now: now))
        text = stamp(None, "info", {})["timestamp"]
        expected = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert text == expected
        assert len(text) == len("2026-11-26T10:00:00.123456Z")


def test_timestamps_track_the_real_clock() -> None:
    stamp = _UtcTimestamp()
    for _ in range(1000):
        before = time.time()
        at = _parse(stamp(None, "info", {})["timestamp"])
        assert before - 1e-6 <= at <= time.time() + 1e-6

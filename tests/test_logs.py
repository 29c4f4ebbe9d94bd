"""Shelby's own log lines: the timestamp processor that formats each second once."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from shelby.logs import _UtcTimestamp


def test_timestamps_are_iso_utc_and_follow_the_clock_across_seconds() -> None:
    stamp = _UtcTimestamp()
    seen_seconds = set()
    deadline = time.time() + 1.2  # crosses at least one second's boundary
    while time.time() < deadline:
        before = time.time()
        text = stamp(None, "info", {})["timestamp"]
        after = time.time()
        assert len(text) == len("2026-11-26T10:00:00.123456Z") and text.endswith("Z")
        at = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
        assert before - 1e-6 <= at <= after + 1e-6
        seen_seconds.add(text[:19])
    assert len(seen_seconds) >= 2

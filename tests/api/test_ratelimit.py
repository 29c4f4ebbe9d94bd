"""The rate limiter itself, on the real ``limits`` library: what it keeps in memory."""

from __future__ import annotations

import time

import pytest

from shelby.api.errors import ApiError
from shelby.api.ratelimit import RateLimit


def test_a_token_past_its_limit_is_refused_and_others_are_not() -> None:
    limit = RateLimit("3/second")
    for _ in range(3):
        limit.check("t:a")
    with pytest.raises(ApiError) as refused:
        limit.check("t:a")
    assert refused.value.status == 429 and "Retry-After" in refused.value.headers
    limit.check("t:b")


def test_expired_counters_are_swept_within_two_windows() -> None:
    """A token has a counter per window it was seen in; those of past windows go,
    so the server's memory stays flat under a steady fleet."""
    limit = RateLimit("1000/second")
    for i in range(200):
        limit.check(f"t:{i}")
    assert limit.counters() == 200
    time.sleep(2.1)  # a counter lives two windows: the current and, weighted, the next
    limit.check("t:new")
    assert limit.counters() == 1

"""Backoff grows exponentially to a cap, with jitter, and starts over after a success."""

from __future__ import annotations

import random

import pytest

from shelby.agent.backoff import Backoff


def test_delays_double_up_to_the_cap_without_jitter() -> None:
    """With jitter 0 the delays are base, 2*base, … capped."""
    backoff = Backoff(base=0.5, factor=2, cap=4, jitter=0)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1, 2, 4, 4, 4]


def test_jitter_keeps_each_delay_within_its_band() -> None:
    """Equal jitter: each delay lies in [ceiling/2, ceiling], and they differ."""
    rng = random.Random(7)
    backoff = Backoff(base=1, factor=2, cap=8, jitter=0.5, rand=rng.random)
    ceilings = [1, 2, 4, 8, 8, 8, 8, 8]
    delays = [backoff.next_delay() for _ in ceilings]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays[3:])) > 1


def test_reset_starts_over() -> None:
    """After a success the next failure waits the base delay again."""
    backoff = Backoff(base=0.25, cap=10, jitter=0)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.failures == 0 and backoff.next_delay() == 0.25


def test_many_failures_do_not_overflow() -> None:
    """Thousands of failures still give the cap, not an overflow."""
    backoff = Backoff(base=0.25, cap=30, jitter=0)
    for _ in range(5000):
        delay = backoff.next_delay()
    assert delay == 30


def test_nonsense_settings_are_refused() -> None:
    """A cap below the base, or jitter outside [0, 1], is an error."""
    with pytest.raises(ValueError):
        Backoff(base=5, cap=1)
    with pytest.raises(ValueError):
        Backoff(jitter=1.5)

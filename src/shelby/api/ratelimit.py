"""Requests per token (per client address without one), with the ``limits`` library.

A sliding-window counter: as fair as a moving window for bursts at a window's edge,
at the cost of two counters per key instead of one timestamp per request.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from shelby.api.errors import ApiError

__all__ = ["RateLimit"]


class RateLimit:
    def __init__(self, expression: str | None) -> None:
        """``expression`` as ``limits`` parses it (``50/second``); ``None``: no limit."""
        self._item: RateLimitItem | None = None if expression is None else parse(expression)
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())

    @property
    def enabled(self) -> bool:
        return self._item is not None

    def check(self, key: str) -> None:
        """Count one request for ``key``; raise the 429 when it is over the limit."""
        item = self._item
        if item is None or self._limiter.hit(item, key):
            return
        reset_at, _remaining = self._limiter.get_window_stats(item, key)
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise ApiError(
            429,
            f"rate limit of {item} exceeded; retry after {retry_after} s",
            {"Retry-After": str(retry_after)},
        )

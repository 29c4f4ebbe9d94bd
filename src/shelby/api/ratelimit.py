"""Requests per token (per client address without one), with the ``limits`` library.

A sliding-window counter: as fair as a moving window for bursts at a window's edge,
at the cost of two counters per key instead of one timestamp per request.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from shelby.api.errors import ApiError

__all__ = ["RateLimit"]


class _NoLocks(dict[str, Any]):
    """Stands in for ``MemoryStorage.locks``, a lock per key: every call comes from the
    event loop's one thread, so they guard nothing, and a sliding window's keys change
    with every window, which made a new ``RLock`` per token every second."""

    def __missing__(self, key: str) -> contextlib.nullcontext[None]:
        return _NO_LOCK


_NO_LOCK: contextlib.nullcontext[None] = contextlib.nullcontext()


class _LazyMemoryStorage(MemoryStorage):
    """``MemoryStorage`` without its expiry timer and its locks.

    The stock storage starts a ``threading.Timer`` whenever the last one has ended,
    which under steady load is a new thread every few milliseconds. Expired counters
    are already dropped when they are next read (``get``); what the timer adds is only
    the collection of keys nobody uses any more, which ``collect`` does on the event
    loop's schedule instead.
    """

    def __init__(self) -> None:
        super().__init__()
        self.locks = _NoLocks()  # type: ignore[assignment]

    def _MemoryStorage__schedule_expiry(self) -> None:  # the name the base class calls
        pass

    def collect(self) -> None:
        now = time.time()
        for key in [k for k, at in self.expirations.items() if at <= now]:
            self.storage.pop(key, None)
            self.expirations.pop(key, None)
            self.locks.pop(key, None)


class RateLimit:
    def __init__(self, expression: str | None) -> None:
        """``expression`` as ``limits`` parses it (``50/second``); ``None``: no limit."""
        self._item: RateLimitItem | None = None if expression is None else parse(expression)
        self._storage = _LazyMemoryStorage()
        self._limiter = SlidingWindowCounterRateLimiter(self._storage)
        # Expired counters are swept once a window: each token has a counter per window,
        # so a sweep only every minute let a second's limit hold sixty per token.
        self.collect_every = 1.0 if self._item is None else float(self._item.get_expiry())
        self._next_collect = time.monotonic() + self.collect_every

    @property
    def enabled(self) -> bool:
        return self._item is not None

    def counters(self) -> int:
        """How many counters are held (a token has one per window it was seen in)."""
        return len(self._storage.storage)

    def check(self, key: str) -> None:
        """Count one request for ``key``; raise the 429 when it is over the limit."""
        item = self._item
        if item is None:
            return
        if time.monotonic() >= self._next_collect:
            self._next_collect = time.monotonic() + self.collect_every
            self._storage.collect()
        if self._limiter.hit(item, key):
            return
        reset_at, _remaining = self._limiter.get_window_stats(item, key)
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise ApiError(
            429,
            f"rate limit of {item} exceeded; retry after {retry_after} s",
            {"Retry-After": str(retry_after)},
        )

"""How long to wait before trying an unreachable server again.

Exponential growth so that a long outage costs few requests, and jitter so that a
fleet of agents cut off together does not come back in lockstep and hammer the
server the moment it returns.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """Delays ``base * factor**n`` capped at ``cap``, each scaled by a random factor in
    ``[1 - jitter, 1]`` ("equal jitter" when ``jitter`` is 0.5). ``reset`` after a success."""

    def __init__(
        self,
        *,
        base: float = 0.25,
        factor: float = 2.0,
        cap: float = 30.0,
        jitter: float = 0.5,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if base <= 0 or factor < 1 or cap < base or not 0 <= jitter <= 1:
            raise ValueError("backoff needs 0 < base <= cap, factor >= 1, 0 <= jitter <= 1")
        self._base = base
        self._factor = factor
        self._cap = cap
        self._jitter = jitter
        self._rand = rand
        self.failures = 0

    def next_delay(self) -> float:
        """The wait before the next try, counting one more failure."""
        ceiling = min(self._cap, self._base * self._factor ** min(self.failures, 64))
        self.failures += 1
        return ceiling * (1 - self._jitter * self._rand())

    def reset(self) -> None:
        self.failures = 0

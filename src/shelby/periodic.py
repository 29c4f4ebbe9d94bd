"""A reaction's heartbeat: one background task that runs a step every so often and
outlives the step's failures (a store that cannot be reached now may be back next time)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from shelby.events.store import StoreError

__all__ = ["Periodic"]

log = structlog.get_logger("shelby.periodic")


class Periodic:
    """Runs ``step`` every ``interval`` seconds, the first time after one interval, or at
    once with ``at_start``; a failure is logged as ``what`` skipped or failed."""

    def __init__(
        self,
        name: str,
        what: str,
        step: Callable[[], Awaitable[object]],
        interval: float,
        *,
        at_start: bool = False,
    ) -> None:
        self.name = name
        self.what = what
        self.step = step
        self.interval = interval
        self.at_start = at_start
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        if not self.at_start:
            await asyncio.sleep(self.interval)
        while True:
            try:
                await self.step()
            except StoreError as exc:  # the store's own refusal: the next run may pass
                log.warning(f"{self.what} skipped", error=str(exc))
            except Exception:
                log.exception(f"{self.what} failed")
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

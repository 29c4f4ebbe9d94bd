"""Deadlines for reading request bodies, kept by one watchdog rather than a timer each.

``asyncio.timeout`` costs about 6 us a request (a ``Timeout``, a timer handle pushed onto
the loop's heap and cancelled again, two coroutines), paid by every heartbeat although
its small body has always arrived by the time it is read. Here a request only enters
and leaves a dict; a watchdog task wakes every ``tick`` seconds while any request is
reading, and cancels those past their deadline. A deadline is so kept to within one
tick, which is a quarter of the timeout at most.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["Deadlines"]


class Deadlines:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.tick = min(1.0, timeout / 4)
        self._due: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[Any]:
        """Start the current task's clock; it must call ``ended`` whatever happens."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline needs a task")
        loop = task.get_loop()
        self._due[task] = loop.time() + self.timeout
        watchdog = self._watchdog
        # A new one also when the app moved to another loop (a test client's, say), where
        # the old one, never finished, would otherwise watch nothing.
        if watchdog is None or watchdog.done() or watchdog.get_loop() is not loop:
            self._watchdog = loop.create_task(self._watch(loop))
        return task

    def ended(self, task: asyncio.Task[Any]) -> bool:
        """Stop ``task``'s clock; whether it ran out (and the watchdog cancelled the task,
        a cancellation taken back here, as ``asyncio.timeout`` does)."""
        del self._due[task]
        if task in self._expired:
            self._expired.discard(task)
            task.uncancel()
            return True
        return False

    async def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        # Ends once nobody is reading, so an idle server keeps no task waking up; the
        # next request starts another.
        while self._due:
            await asyncio.sleep(self.tick)
            now = loop.time()
            for task, due in list(self._due.items()):
                if due <= now and task not in self._expired and task.get_loop() is loop:
                    self._expired.add(task)
                    task.cancel()

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

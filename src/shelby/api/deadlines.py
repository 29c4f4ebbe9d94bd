"""Deadlines for reading request bodies, kept by one watchdog rather than a timer each.

``asyncio.timeout`` costs about 6 us a request (a ``Timeout``, a timer handle pushed onto
the loop's heap and cancelled again, two coroutines), paid by every heartbeat although
its small body has always arrived by the time it is read. Here a request only enters
and leaves a dict; a watchdog task wakes every ``tick`` seconds while any request is
reading, and cancels those past their deadline. A deadline is so kept to within one
tick, which is a quarter of the timeout at most.

One ``Deadlines`` serves one event loop at a time (an app's); it is not shared between
loops running in different threads.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["Deadlines"]


class Deadlines:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.tick = min(1.0, timeout / 4)
        # task -> (its deadline, how many cancellations it had pending when it started)
        self._due: dict[asyncio.Task[Any], tuple[float, int]] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[Any]:
        """Start the current task's clock; it must call ``ended`` whatever happens."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline needs a task")
        loop = task.get_loop()
        self._due[task] = (loop.time() + self.timeout, task.cancelling())
        watchdog = self._watchdog
        # A new one also when the app moved to another loop (a test client's, say), where
        # the old one, never finished, would otherwise watch nothing.
        if watchdog is None or watchdog.done() or watchdog.get_loop() is not loop:
            self._watchdog = loop.create_task(self._watch(loop))
        return task

    def ended(self, task: asyncio.Task[Any]) -> bool:
        """Stop ``task``'s clock; whether it ran out. The watchdog's cancellation is
        taken back; as with ``asyncio.timeout``, if someone else cancelled the task too
        (a shutdown), it did not simply run out: ``False``, and that cancellation stands."""
        entry = self._due.pop(task, None)
        if entry is None:  # dropped by a watchdog: its loop was closed under it
            return False
        _due, pending_before = entry
        if task in self._expired:
            self._expired.discard(task)
            return task.uncancel() <= pending_before
        return False

    async def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        # Sleeps first: a body that has arrived is read without the task ever yielding,
        # so at the watchdog's first step its reader is usually gone already, and it
        # must not end there, or every request would start a new one. It ends at the
        # first tick that finds nobody on this loop reading, so an idle server keeps no
        # task waking up. Readers left on a loop that was closed under them never end
        # their clocks: they are dropped.
        while True:
            await asyncio.sleep(self.tick)
            now = loop.time()
            mine = False
            for task, (due, _) in list(self._due.items()):
                if task.get_loop() is loop:
                    mine = True
                    if due <= now and task not in self._expired:
                        self._expired.add(task)
                        task.cancel()
                elif task.get_loop().is_closed():
                    del self._due[task]
                    self._expired.discard(task)
            if not mine:
                return

    def close(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and not watchdog.done() and not watchdog.get_loop().is_closed():
            watchdog.cancel()

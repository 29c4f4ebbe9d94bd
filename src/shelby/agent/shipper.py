"""Carries an attempt's spooled log lines to ``POST /api/jobs/stream-log``.

Lines reach the server within a fraction of a second of being printed: the shipper
wakes when lines arrive, waits a short moment so that a burst travels as one batch,
and sends everything unacknowledged. While the server is unreachable it waits with
backoff and then resends from the acknowledged offset.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial

import structlog

from shelby.agent.backoff import Backoff
from shelby.agent.client import AgentClient, AttemptGone, OffsetGap, Rejected, persist
from shelby.agent.spool import LogSpool, SpooledLine

__all__ = ["LogShipper"]

log = structlog.get_logger("shelby.agent")

MAX_BATCH_LINES = 500
MAX_BATCH_BYTES = 256 * 1024
"""Well under the server's 1,000 lines and 1 MiB per request, JSON overhead included."""


class LogShipper:
    def __init__(
        self,
        client: AgentClient,
        spool: LogSpool,
        *,
        job_id: str,
        attempt: int,
        node_id: Callable[[], str],
        backoff: Backoff,
        reregister: Callable[[], Awaitable[None]],
        on_gone: Callable[[], None],
        linger: float = 0.1,
    ) -> None:
        self._client = client
        self._spool = spool
        self._job_id = job_id
        self._attempt = attempt
        self._node_id = node_id
        self._backoff = backoff
        self._reregister = reregister
        self._on_gone = on_gone
        self._linger = linger
        self._wake = asyncio.Event()
        self._flush_pending = False
        self._lock = asyncio.Lock()
        self.gone = False
        self.broken = False

    def append(self, lines: list[SpooledLine]) -> None:
        self._spool.append(lines)
        if not self._flush_pending:
            # Flushed once the lines of this read from the pipe are all appended: one
            # write per burst, and nothing left in a buffer by the next await.
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)
        self._wake.set()

    def _flush(self) -> None:
        self._flush_pending = False
        self._spool.flush()

    def line(self, stream: str, text: str, at: float) -> None:
        """A ``LineSink``: one line printed by the attempt."""
        self.append([{"line": text, "timestamp": at, "stream": stream}])

    async def run(self) -> None:
        """Ship as lines come, until cancelled."""
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._linger)
            self._wake.clear()
            await self.drain()

    async def _send(self, offset: int, lines: list[SpooledLine]) -> int:
        return await self._client.stream_log(
            self._job_id, self._node_id(), self._attempt, offset, lines
        )

    async def drain(self) -> bool:
        """Send every spooled line; false when the attempt is gone or the server
        refuses the lines outright."""
        async with self._lock:
            while not self._spool.drained and not (self.gone or self.broken):
                offset, lines = self._spool.pending(MAX_BATCH_LINES, MAX_BATCH_BYTES)
                try:
                    next_offset = await persist(
                        partial(self._send, offset, lines),
                        self._backoff,
                        what="stream-log",
                        on_not_registered=self._reregister,
                    )
                except OffsetGap as gap:
                    log.warning("log offset gap", expected=gap.expected, sent=offset)
                    if gap.expected > self._spool.acked:
                        self.broken = True  # the server is ahead of our own spool
                    else:
                        self._spool.rewind(gap.expected)
                    continue
                except AttemptGone:
                    self.gone = True
                    self._on_gone()
                    break
                except Rejected as exc:
                    log.error("the server refuses log lines", error=str(exc))
                    self.broken = True
                    break
                self._spool.ack(min(next_offset, self._spool.written))
            return not (self.gone or self.broken)

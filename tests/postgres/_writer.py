"""A replica in a process of its own, for the tests: appends heartbeats to its own
streams from many tasks at once, so that its commits interleave with other writers'.

    python _writer.py URL NAME STREAMS APPENDS_PER_STREAM

Prints ``ready`` once its store is open, waits for a line on stdin, appends, prints
``done``.
"""

from __future__ import annotations

import asyncio
import sys
import time

from shelby.events.postgres import PostgresEventStore
from shelby.events.types import NodeHeartbeat, node_stream
from shelby.logs import configure_logging
from shelby.projections import all_projections


async def main(url: str, name: str, streams: int, appends: int) -> None:
    configure_logging(json=True)  # on stderr: stdout carries the protocol
    store = PostgresEventStore(url, all_projections())
    await store.open()
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)

    async def one_stream(k: int) -> None:
        stream = node_stream(f"{name}-{k}")
        version = 0
        for i in range(appends):
            events = [NodeHeartbeat(node_id=f"{name}-{k}", specs={"i": i})] * (1 + i % 2)
            await store.append(stream, events, expected_version=version, timestamp=time.time())
            version += len(events)

    await asyncio.gather(*(one_stream(k) for k in range(streams)))
    await store.close()
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))

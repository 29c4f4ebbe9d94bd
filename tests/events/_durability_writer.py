"""Run by test_durability in a subprocess: appends forever from several tasks, printing
``seq hash`` of each event only after ``append`` returned, until it is killed."""

from __future__ import annotations

import asyncio
import sys

from shelby.events.sqlite import SQLiteEventStore
from shelby.events.types import (
    Event,
    LogLine,
    LogLinesAppended,
    NodeHeartbeat,
    NodeRegistered,
    node_stream,
)
from shelby.logs import configure_logging
from shelby.projections import all_projections


async def worker(store: SQLiteEventStore, k: int) -> None:
    node = f"n{k}"
    stream = node_stream(node)
    version = len(await store.read_stream(stream))
    if version == 0:
        recs = await store.append(
            stream,
            [NodeRegistered(node_id=node, name=node, token_hash=f"t{k}")],
            expected_version=0,
            timestamp=1_700_000_000.0,
        )
        version = recs[-1].version
        print(recs[-1].seq, recs[-1].hash, flush=True)
    n = 0
    while True:
        n += 1
        events: list[Event] = [NodeHeartbeat(node_id=node, specs={"cpuUsage": n % 100})]
        if n % 3 == 0:
            line = LogLine(line=f"line {n} ✓", timestamp=1_700_000_000.0 + n)
            # Offsets by stream version stay unique across restarts of this writer.
            events.append(
                LogLinesAppended(job_id=node, node_id=node, attempt=1, offset=version, lines=[line])
            )
        recs = await store.append(
            stream, events, expected_version=version, timestamp=1_700_000_000.0 + n
        )
        version = recs[-1].version
        for r in recs:
            print(r.seq, r.hash, flush=True)


async def main(path: str, tasks: int) -> None:
    configure_logging(json=True)  # on stderr: stdout carries only returned appends
    store = SQLiteEventStore(path, all_projections())
    await store.open()
    print("ready", flush=True)
    try:
        await asyncio.gather(*(worker(store, k) for k in range(tasks)))
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))

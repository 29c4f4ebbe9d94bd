"""A writer killed with SIGKILL at a random moment loses no append that had returned,
and leaves a log whose chain verifies."""

from __future__ import annotations

import asyncio
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shelby.events.types import NodeHeartbeat, node_stream
from shelby.events.verify import Verdict, verify_store
from shelby.projections import all_projections

from ._helpers import assert_chain, opened, raw_rows

WRITER = Path(__file__).with_name("_durability_writer.py")


def run_and_kill(path: Path, rng: random.Random) -> list[tuple[int, str]]:
    """Start the writer, let it return a random number of appends, kill it a random
    moment later, and give back every ``(seq, hash)`` it reported."""
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), str(rng.randint(1, 16))],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    collected: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            collected.append(line)
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert lines.get(timeout=30) == "ready\n"
        for _ in range(rng.randint(1, 400)):
            assert lines.get(timeout=30) is not None, "the writer stopped by itself"
        time.sleep(rng.uniform(0, 0.02))  # let it get somewhere in its next commit
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    reported = []
    for line in collected[1:]:
        parts = line.split()
        # A line cut short by the kill is not a returned append.
        if line.endswith("\n") and len(parts) == 2 and len(parts[1]) == 64:
            reported.append((int(parts[0]), parts[1]))
    return reported


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_killed_writer_loses_no_returned_append(tmp_path: Path, seed: int) -> None:
    """Every append that returned before SIGKILL is in the file, and the chain verifies;
    a store opened afterwards goes on appending where the log stopped."""
    rng = random.Random(seed)
    path = tmp_path / "log.db"
    reported: dict[int, str] = {}
    for _round in range(3):  # the same file, killed again after each restart
        returned = run_and_kill(path, rng)
        reported.update(returned)
        rows = raw_rows(path)
        on_disk = {r[0]: r[7] for r in rows}
        missing = {s: h for s, h in reported.items() if on_disk.get(s) != h}
        assert not missing, f"returned appends lost after SIGKILL: {sorted(missing)[:10]}"
        assert_chain(rows)

    async def reopen() -> Verdict:
        async with opened(path, all_projections()) as store:
            stream = node_stream("n0")
            version = len(await store.read_stream(stream))
            (rec,) = await store.append(
                stream, [NodeHeartbeat(node_id="n0")], expected_version=version, timestamp=2e9
            )
            assert rec.seq == len(rows) + 1
            assert rec.prev_hash == rows[-1][7]
            positions = await store.fetchall("SELECT DISTINCT seq FROM projection_positions")
            assert positions == [(rec.seq,)]
            return await verify_store(store)

    verdict = asyncio.run(reopen())
    assert verdict.ok
    assert verdict.count == len(rows) + 1

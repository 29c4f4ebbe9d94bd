"""``shelby rebuild`` of a 1,000,000-event log: its speed, its peak memory, its progress.

The logs come from the generator (``bench/_generator.py``), 100,000 and 1,000,000
events of the same fleet; each is copied and rebuilt by the real command, a
subprocess on a pseudo-terminal (as a person runs it, so its progress bar draws).
The peak RSS is the kernel's own count for that process (``wait4``'s ``ru_maxrss``),
not a sample. Progress is read off the terminal: the bar's count must move through
the log, not jump from nothing to done.

Target: the peak RSS at 1M at most 1.5 times that at 100k (memory does not grow with
the log). ``--quick``: 40,000 against 100,000 events.

    python -m bench rebuild_memory [--quick]
"""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench._generator import Shape, bench_dir, cached_log
from shelby.events._append import REBUILD_CHUNK

TARGET = 1.5
_COUNT = re.compile(rb"(\d+)/(\d+)")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass
class Rebuilt:
    events: int
    seconds: float
    peak_rss: int  # bytes
    progress: list[int]  # the counts the bar showed, in order
    summary: str

    @property
    def rate(self) -> float:
        return self.events / max(self.seconds, 1e-9)


def rebuild(db: Path, events: int) -> Rebuilt:
    """``shelby rebuild --db`` on a copy of ``db``, on a pseudo-terminal."""
    with tempfile.TemporaryDirectory(dir=bench_dir()) as tmp:
        copy = Path(tmp) / "rebuild.db"
        shutil.copyfile(db, copy)
        master, slave = pty.openpty()
        env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "shelby", "rebuild", "--db", str(copy)],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
            env=env,
        )
        os.close(slave)
        screen = bytearray()
        while True:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the terminal closed: the process is gone
                    chunk = b""
                if not chunk:
                    break
                screen += chunk
            elif proc.poll() is not None:
                break
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        os.close(master)
    text = _ANSI.sub("", screen.decode(errors="replace")).replace("\r", "\n")
    if proc.returncode != 0:
        raise RuntimeError(f"shelby rebuild failed ({proc.returncode}):\n{text[-2000:]}")
    counts = [int(done) for done, total in _COUNT.findall(bytes(screen)) if int(total) == events]
    summary = next((line.strip() for line in text.splitlines() if "rebuilt every" in line), "")
    return Rebuilt(events, seconds, usage.ru_maxrss * 1024, _distinct(counts), summary)


def _distinct(counts: list[int]) -> list[int]:
    out: list[int] = []
    for c in counts:
        if not out or out[-1] != c:
            out.append(c)
    return out


def main(quick: bool = False) -> None:
    from shelby.logs import configure_logging

    configure_logging(json=True)
    # Both sizes hold whole chunks of the replay (20,000 events), so that the smaller
    # one is not measured on a part of one.
    sizes = (40_000, 100_000) if quick else (100_000, 1_000_000)
    print(f"rebuild_memory: shelby rebuild of {sizes[0]:,} and {sizes[1]:,} events")
    logs = [(cached_log(Shape(n)), n) for n in sizes]
    results = [rebuild(db, n) for db, n in logs]
    for r in results:
        shown = len(r.progress)
        print(
            f"  {r.events:>9,} events: {r.rate:9,.0f} events/s ({r.seconds:.1f} s, process"
            f" wall time), peak RSS {r.peak_rss / 2**20:,.0f} MB; progress shown"
            f" {shown} times ({', '.join(f'{c:,}' for c in r.progress[:4])}"
            f"{', …' if shown > 4 else ''})"
        )
        print(f"    it said: {r.summary}")
    small, big = results
    ratio = big.peak_rss / small.peak_rss
    # The bar moves once per replayed chunk: from 0 through every chunk to the end.
    moving = all(
        len(r.progress) >= min(3, 1 + -(-r.events // REBUILD_CHUNK)) and r.progress[-1] == r.events
        for r in results
    )
    print(
        f"  peak RSS ratio {big.events // 1000:,}k / {small.events // 1000:,}k: {ratio:.2f}"
        f" (target <= {TARGET}): {'met' if ratio <= TARGET else 'NOT met'}"
    )
    print(f"  progress moves through the log: {'met' if moving else 'NOT met'}")


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)

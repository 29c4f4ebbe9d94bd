"""A process tree runs with its output read by line, and stops as a whole."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import psutil

from shelby.agent.process import StopRequest, run_tree


def collect() -> tuple[list[tuple[str, str]], object]:
    seen: list[tuple[str, str]] = []

    def sink(stream: str, text: str, at: float) -> None:
        assert abs(at - time.time()) < 60
        seen.append((stream, text))

    return seen, sink


async def test_lines_are_marked_by_stream_and_the_exit_code_is_kept(tmp_path: Path) -> None:
    """stdout and stderr lines arrive marked, partial last lines included; exit code kept."""
    seen, sink = collect()
    script = (
        "import sys\n"
        "print('out 1'); print('err 1', file=sys.stderr); print('out 2')\n"
        "sys.stdout.write('no newline at the end'); sys.exit(3)\n"
    )
    done = await run_tree(
        [sys.executable, "-u", "-c", script],
        cwd=tmp_path,
        env=dict(os.environ),
        sink=sink,
        stop=StopRequest(),  # type: ignore[arg-type]
    )
    assert done.code == 3 and done.stopped is None
    assert [t for s, t in seen if s == "stdout"] == ["out 1", "out 2", "no newline at the end"]
    assert [t for s, t in seen if s == "stderr"] == ["err 1"]


async def test_stop_ends_the_whole_tree_including_grandchildren(tmp_path: Path) -> None:
    """A stop reaches every process the child started, even one ignoring SIGTERM."""
    pids = tmp_path / "pids"
    script = (
        "import os, signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "kid = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{kid.pid}}')\n"
        "print('ready', flush=True); time.sleep(600)\n"
    )
    _, sink = collect()
    stop = StopRequest()

    def on_line(stream: str, text: str, at: float) -> None:
        sink(stream, text, at)  # type: ignore[operator]
        if text == "ready":
            stop.request("cancelled")

    started = time.monotonic()
    done = await run_tree(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=dict(os.environ),
        sink=on_line,
        stop=stop,
        kill_grace=0.5,
    )
    assert done.stopped == "cancelled" and done.code == -9
    assert time.monotonic() - started < 10
    for pid in map(int, pids.read_text().split()):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_usage_counts_cpu_of_the_tree_and_its_peak_memory(tmp_path: Path) -> None:
    """CPU seconds include a short-lived child's; peak RSS sees a 200 MB allocation."""
    script = (
        "import subprocess, sys, time\n"
        "subprocess.run([sys.executable, '-c', 'import time\\nt=time.process_time()\\n"
        "while time.process_time()-t<0.6: pass'])\n"
        "block = bytearray(200 * 2**20)\n"
        "for i in range(0, len(block), 4096): block[i] = 1\n"
        "time.sleep(1.2)\n"
    )
    _, sink = collect()
    done = await run_tree(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=dict(os.environ),
        sink=sink,
        stop=StopRequest(),
        sample_interval=0.2,  # type: ignore[arg-type]
    )
    assert done.code == 0
    assert done.usage.cpu_seconds >= 0.6
    assert done.usage.peak_ram_mb >= 200
    assert done.usage.wall_seconds >= 1.2
    assert done.usage.gpu_seconds is None


async def test_a_very_long_line_is_cut_into_pieces(tmp_path: Path) -> None:
    """A run without newlines longer than 64 KiB is delivered in 64 KiB pieces."""
    seen, sink = collect()
    done = await run_tree(
        [sys.executable, "-c", "print('x' * 150_000)"],
        cwd=tmp_path,
        env=dict(os.environ),
        sink=sink,
        stop=StopRequest(),  # type: ignore[arg-type]
    )
    assert done.code == 0
    assert [len(t) for _, t in seen] == [65536, 65536, 150_000 - 2 * 65536]


async def test_background_leftovers_are_killed_when_the_root_exits(tmp_path: Path) -> None:
    """A process the script left running in its group dies when the script ends."""
    pid_file = tmp_path / "bg"
    script = f"sleep 600 & echo $! > {pid_file}; exit 0"
    _, sink = collect()
    done = await asyncio.wait_for(
        run_tree(
            ["/bin/sh", "-c", script],
            cwd=tmp_path,
            env=dict(os.environ),
            sink=sink,
            stop=StopRequest(),
        ),  # type: ignore[arg-type]
        timeout=20,
    )
    assert done.code == 0
    pid = int(pid_file.read_text())
    for _ in range(50):
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the background process survived")

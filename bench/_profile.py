"""Where the server's time goes: a summary of ``py-spy record --format raw --threads``.

Each line of the raw format is one stack (``thread (TID): NAME;frame;frame;… COUNT``,
a frame being ``function (file:line)``) and how many samples found it. Without
``--native`` py-spy keeps only samples of busy threads, so the counts are CPU time (or
a blocking call it cannot tell from it, such as an fsync); with ``--native`` it keeps
waiting threads too, and those are left out here by their frames.

Frames are grouped by module. A sample's *self* group is that of its innermost frame
that has a group, so C code without one (uvloop's, a syscall) counts to the nearest
frame that has one; *cumulative* counts every sample that has the group anywhere on
its stack, once.

    python bench/_profile.py profile.txt
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

__all__ = ["GROUPS", "record", "stop_recording", "summarize"]


def record(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """Start ``py-spy record`` on ``pid``, its raw stacks to ``out`` once stopped."""
    py_spy = Path(sys.executable).with_name("py-spy")
    native = bool(os.environ.get("BENCH_PROFILE_NATIVE"))
    return subprocess.Popen(
        [
            str(py_spy),
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--output",
            str(out),
            "--rate",
            "100",
            "--threads",
            # BENCH_PROFILE_NATIVE: C frames too (uvloop, httptools, sqlite3), else their
            # time is their Python caller's; py-spy must then pause the server for each
            # sample. Otherwise it samples without pausing, the latency being measured.
            "--native" if native else "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(out.with_suffix(".log"), "wb"),
    )


def stop_recording(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# (group, patterns in a frame's text: its function and file), first match wins.
GROUPS: list[tuple[str, tuple[str, ...]]] = [
    # Native frames (--native): where C code spends its time, whoever called it.
    ("garbage collector (gc)", ("gc_collect",)),
    ("waiting for the GIL", ("take_gil",)),
    ("fsync (durable commit)", ("fdatasync", "fsync (")),
    ("SQLite engine (C)", ("libsqlite3", "pysqlite", "cursor.c", "connection.c")),
    ("uvloop, libuv (C: sockets, callbacks)", ("loop.c:", "uv__", "uv_run")),
    # Python frames.
    ("request log (structlog, logging)", ("structlog/", "logging/", "shelby/logs.py")),
    ("our middleware", ("shelby/api/middleware.py",)),
    ("metrics (prometheus)", ("prometheus_client/", "shelby/api/metrics.py")),
    ("rate limiter (limits)", ("limits/", "shelby/api/ratelimit.py")),
    ("auth (tokens)", ("shelby/api/auth.py", "token_hash", "hmac.py")),
    ("JSON (msgspec, json)", ("msgspec/", "json/", "_json.c")),
    ("endpoint plumbing (decode, encode, send)", ("shelby/api/endpoint.py",)),
    ("agent handlers (api/agents.py)", ("shelby/api/agents.py",)),
    ("other api", ("shelby/api/",)),
    ("domain: command handler, deciders", ("shelby/domain/",)),
    ("projections", ("shelby/projections/",)),
    ("store: writer, hash chain, Merkle (events/)", ("shelby/events/",)),
    (
        "service, scheduler, sweeper, clock",
        ("shelby/service.py", "shelby/scheduler.py", "shelby/sweeper.py", "shelby/clock.py"),
    ),
    ("aiosqlite (readers)", ("aiosqlite/",)),
    ("starlette (router, app)", ("starlette/",)),
    ("uvicorn, httptools (HTTP)", ("uvicorn/", "httptools/")),
    ("event loop (asyncio, uvloop)", ("asyncio/", "uvloop/", "_asynciomodule.c")),
    ("threads, executors", ("threading.py", "concurrent/", "queue.py")),
]

# A stack with one of these near its end is a thread waiting for work or for I/O.
_WAITING = ("epoll_pwait", "SimpleQueue_get", "PyThread_acquire_lock_timed")

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?):(?P<line>\d+)\)$")


def _group(frame: str) -> str:
    for name, patterns in GROUPS:
        if any(p in frame for p in patterns):
            return name
    return "other"


def _self_group(frames: list[str]) -> str:
    for frame in reversed(frames):
        group = _group(frame)
        if group != "other":
            return group
    return "other"


def _parse(path: Path) -> list[tuple[str, list[str], int]]:
    stacks = []
    for raw in path.read_text().splitlines():
        body, _, count = raw.rpartition(" ")
        if not body or not count.isdigit():
            continue
        parts = body.split(";")
        if parts[0].startswith("thread ("):  # "thread (TID): NAME"
            stacks.append((parts[0].partition(": ")[2], parts[1:], int(count)))
        else:  # recorded without --threads
            stacks.append(("all", parts, int(count)))
    return stacks


def _thread_kind(name: str) -> str:
    if name == "MainThread":
        return "event loop thread"
    if "writer" in name.lower():
        return "store writer thread"
    return "other threads (SQLite readers, …)"


def summarize(path: Path, top: int = 15) -> str:
    by_thread: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    loop_self: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    waiting = 0
    for thread, frames, count in _parse(path):
        if not frames:
            continue
        if any(w in f for f in frames[-12:] for w in _WAITING):
            waiting += count
            continue
        kind = _thread_kind(thread)
        by_thread[kind] += count
        group = _self_group(frames)
        self_time[group] += count
        if kind == "event loop thread":
            loop_self[group] += count
        for g in {_group(f) for f in frames}:
            cumulative[g] += count
        match = _FRAME.match(frames[-1])
        functions[f"{match['func']} ({match['file']})" if match else frames[-1]] += count
    total = sum(by_thread.values())
    if total == 0:
        return f"  profile {path}: no samples"

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f} %"

    head = f"  profile: {total:,} samples of the server's busy threads ({path})"
    if waiting:
        head += f"; {waiting:,} samples of waiting threads left out"
    out = [head]
    for kind, n in by_thread.most_common():
        out.append(f"    {pct(n)}  {kind}")
    out.append(f"    {'by module':<46}    self  in the loop  cumulative")
    for group, n in self_time.most_common():
        out.append(
            f"    {group:<46} {pct(n)}      {pct(loop_self[group])}     {pct(cumulative[group])}"
        )
    out.append(f"    top {top} functions by self time:")
    for func, n in functions.most_common(top):
        out.append(f"    {pct(n)}  {func}")
    return "\n".join(out)


if __name__ == "__main__":
    print(summarize(Path(sys.argv[1])))

"""One child process and everything it starts, watched and stoppable as a whole.

The child runs under the shim (``shim.py``), a small supervisor in a session of its
own that is a child subreaper: every process the job starts stays below it, even one
that leaves its process group and session and whose parent exits, so a timeout, a
cancel or the agent's own shutdown reaches all of them. The shim also applies the
sandbox's limits and user (``sandbox.py``). Output is read line by line as it comes.
Usage is sampled over the whole tree with psutil and completed, when it ends, from
``wait4``'s resource usage, which counts every descendant the shim waited for, however
short-lived.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from shelby.agent import specs
from shelby.agent.sandbox import Sandbox
from shelby.agent.shim import SWEEP_SECONDS

__all__ = ["Exit", "LineSink", "StopRequest", "TreeUsage", "run_tree", "signal_group"]

LineSink = Callable[[str, str, float], None]
"""Called with ``(stream, text, unix time)`` for every line a child prints."""

MAX_LINE_BYTES = 64 * 1024
"""A longer run without a newline is cut into pieces of this size. The server keeps
16 KiB of a line and marks it truncated, so a piece this size is marked, not lost
silently."""


class StopRequest:
    """Why an attempt must end early; the first reason given wins."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.reason: str | None = None

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            self._event.set()

    async def wait(self) -> str:
        await self._event.wait()
        assert self.reason is not None
        return self.reason


@dataclass(frozen=True)
class TreeUsage:
    cpu_seconds: float
    wall_seconds: float
    peak_ram_mb: float
    gpu_seconds: float | None


@dataclass(frozen=True)
class Exit:
    code: int
    """The exit status, or minus the signal number that ended the process."""
    usage: TreeUsage
    stopped: str | None
    """The reason the agent stopped it, or ``None`` when it ended by itself."""


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


SHIM = Path(__file__).with_name("shim.py")

SHIM_MARGIN = SWEEP_SECONDS + 2.0
"""How long past the kill grace the agent waits for the shim to end the tree before
it kills what it can find itself: the shim's whole kill sweep and then some, since a
shim killed mid-sweep leaves the descendants it had not reached to init."""


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


class _Lines(asyncio.Protocol):
    def __init__(self, stream: str, sink: LineSink) -> None:
        self._stream = stream
        self._sink = sink
        self._buf = bytearray()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self._buf += data
        if b"\n" in data:
            *complete, rest = self._buf.split(b"\n")
            self._buf = bytearray(rest)
            for raw in complete:
                self._emit(raw, now)
        while len(self._buf) >= MAX_LINE_BYTES:
            self._emit(bytes(self._buf[:MAX_LINE_BYTES]), now)
            del self._buf[:MAX_LINE_BYTES]

    def _emit(self, raw: bytes | bytearray, now: float) -> None:
        text = bytes(raw).decode("utf-8", errors="replace")
        self._sink(self._stream, text.removesuffix("\r"), now)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._buf:
            self._emit(self._buf, time.time())
            self._buf = bytearray()
        if not self.closed.done():
            self.closed.set_result(None)


class _Tree:
    """The processes descended from one root, sampled while they live."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.tracked: dict[int, psutil.Process] = {}
        with contextlib.suppress(psutil.Error):
            self.tracked[root] = psutil.Process(root)
        self.cpu_seconds = 0.0
        self.peak_rss = 0

    def sample(self) -> None:
        for process in list(self.tracked.values()):
            with contextlib.suppress(psutil.Error):
                for child in process.children(recursive=True):
                    self.tracked.setdefault(child.pid, child)
        cpu = 0.0
        rss = 0
        for pid, process in list(self.tracked.items()):
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    memory = process.memory_info()
            except psutil.NoSuchProcess:
                del self.tracked[pid]
                continue
            except psutil.AccessDenied:
                continue
            # A process's children_* times hold the descendants it already waited for;
            # live descendants are counted on their own.
            cpu += times.user + times.system + times.children_user + times.children_system
            if pid != self.root:  # the shim's own memory is not the job's
                rss += memory.rss
        self.cpu_seconds = max(self.cpu_seconds, cpu)
        self.peak_rss = max(self.peak_rss, rss)

    def pids(self) -> set[int]:
        return set(self.tracked)

    def signal_strays(self, pgid: int, sig: int) -> None:
        """The job's processes outside the shim's process group: all of them, since the
        job runs in a session of its own."""
        for process in list(self.tracked.values()):
            with contextlib.suppress(psutil.Error, OSError):
                if process.is_running() and os.getpgid(process.pid) != pgid:
                    process.send_signal(sig)


def _reap_in_thread(pid: int) -> asyncio.Future[tuple[int, Any]]:
    """``wait4`` in a thread of its own: one per running child, however many jobs run."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[tuple[int, Any]] = loop.create_future()

    def settle(value: tuple[int, Any]) -> None:
        if not future.done():
            future.set_result(value)

    def reap() -> None:
        try:
            _, status, rusage = os.wait4(pid, 0)
        except ChildProcessError:
            return  # reaped elsewhere (a Popen dropped after a cancel): nobody is waiting
        with contextlib.suppress(RuntimeError):  # the loop closed first
            loop.call_soon_threadsafe(settle, (os.waitstatus_to_exitcode(status), rusage))

    threading.Thread(target=reap, name=f"reap-{pid}", daemon=True).start()
    return future


async def run_tree(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str],
    sink: LineSink,
    stop: StopRequest,
    streams: tuple[str, str] = ("stdout", "stderr"),
    on_spawn: Callable[[int], None] | None = None,
    kill_grace: float = 5.0,
    sample_interval: float = 0.5,
    track_gpus: bool = False,
    sandbox: Sandbox | None = None,
) -> Exit:
    """Run ``argv`` under the shim, in ``sandbox``, until it ends or ``stop`` is
    requested; either way, every process it started is gone when this returns."""
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    config = (sandbox or Sandbox()).shim_config()
    config.update(grace=kill_grace, parent=os.getpid())
    # -I -S: the shim needs nothing but the standard library, and no variable of the
    # job's environment may change how it starts.
    shim = [sys.executable, "-I", "-S", str(SHIM), json.dumps(config), "--", *argv]
    # Popen forks here, on the loop's thread, on purpose: the shim's PR_SET_PDEATHSIG
    # fires when the *thread* that forked it exits, and a worker thread may exit early.
    child = subprocess.Popen(  # noqa: ASYNC220
        shim,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    pgid = child.pid
    if on_spawn is not None:
        on_spawn(pgid)
    reaped = _reap_in_thread(child.pid)
    assert child.stdout is not None and child.stderr is not None
    readers: list[_Lines] = []
    transports: list[asyncio.ReadTransport] = []
    for pipe, stream in ((child.stdout, streams[0]), (child.stderr, streams[1])):
        reader = _Lines(stream, sink)
        transport, _ = await loop.connect_read_pipe(lambda r=reader: r, pipe)  # type: ignore[misc]
        readers.append(reader)
        transports.append(transport)

    tree = _Tree(child.pid)
    gpu_seconds: list[float] | None = [0.0] if track_gpus else None

    async def sample() -> None:
        while True:
            tree.sample()
            await asyncio.sleep(sample_interval)

    async def sample_gpus() -> None:
        assert gpu_seconds is not None
        last = time.monotonic()
        while True:
            await asyncio.sleep(2.0)
            using = await asyncio.to_thread(specs.gpu_processes)
            now = time.monotonic()
            if using and using & tree.pids():
                gpu_seconds[0] += now - last
            last = now

    samplers = [asyncio.create_task(sample())]
    if track_gpus:
        samplers.append(asyncio.create_task(sample_gpus()))
    stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    stopped: str | None = None
    try:
        await asyncio.wait({reaped, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not reaped.done():
            stopped = stop.reason
            tree.sample()
            # The shim sends SIGTERM to every process of the job, SIGKILL after the grace.
            _signal(child.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reaped), kill_grace + SHIM_MARGIN)
            if not reaped.done():  # the shim is gone or stuck: kill what can be found
                tree.sample()
                signal_group(pgid, signal.SIGKILL)
                tree.signal_strays(pgid, signal.SIGKILL)
        code, rusage = await reaped
    finally:
        stopping.cancel()
        for task in samplers:
            task.cancel()
        if not reaped.done():  # cancelled from outside: the shim kills all at once
            _signal(child.pid, signal.SIGHUP)
            tree.signal_strays(pgid, signal.SIGKILL)
    wall = time.monotonic() - started
    child.returncode = code  # reaped by us; keeps Popen from waiting again
    # The shim killed what the job left behind before it exited; should it have been
    # killed itself, what was seen of the tree goes now.
    signal_group(pgid, signal.SIGKILL)
    tree.signal_strays(pgid, signal.SIGKILL)
    await asyncio.wait([r.closed for r in readers], timeout=5.0)
    for transport in transports:
        transport.close()
    peak = max(tree.peak_rss, rusage.ru_maxrss * 1024)  # ru_maxrss is in KiB on Linux
    usage = TreeUsage(
        cpu_seconds=round(max(tree.cpu_seconds, rusage.ru_utime + rusage.ru_stime), 3),
        wall_seconds=round(wall, 3),
        peak_ram_mb=round(peak / 2**20, 2),
        gpu_seconds=None if gpu_seconds is None else round(gpu_seconds[0], 3),
    )
    return Exit(code=code, usage=usage, stopped=stopped)

"""The supervisor between the agent and one job's processes; run as a program.

``process.run_tree`` starts it as ``python -I -S shim.py CONFIG -- ARGV...`` in a
session of its own. It starts ARGV and stays the ancestor of everything ARGV starts,
including processes that try to leave: it is a child subreaper, so a process whose
parent dies (a double fork, a daemon that calls ``setsid`` and leaves) is reparented
to the shim, not to init, and is still found among its descendants. A process group
or session is no such boundary: any process may leave them.

- ARGV runs in a new session, with the limits of CONFIG (``setrlimit``, soft and
  hard alike so that it cannot raise them) and, with ``uid``, as that user: the
  privileges are dropped in the child, the shim keeps the agent's.
- SIGTERM: SIGTERM to every descendant, SIGKILL to all of them after ``grace``.
- SIGHUP, the parent-death signal (the agent died): SIGKILL to all at once.
- When ARGV's process ends, whatever it left behind is killed and the shim exits as
  it did (same code, or the same signal), so the agent sees the job's own status.

Killing is done by freezing first: every descendant is sent SIGSTOP until a scan of
``/proc`` finds no new one, then all get SIGKILL, so that a fork loop cannot outrun
the sweep.

Elsewhere than Linux (no subreaper, no ``/proc``) it falls back to the job's process
group, which a process that calls ``setsid`` leaves.

This file imports only the standard library and nothing of Shelby: it runs with
``-I -S``, before any site directory, as root when the agent is.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import select
import signal
import sys
import time
from collections.abc import Iterable
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_WATCHED = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
SWEEP_SECONDS = 10.0  # the longest kill_all keeps freezing and killing
_LINUX = sys.platform == "linux"


def _prctl(option: int, value: int) -> None:
    if not _LINUX:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def descendants(root: int) -> list[int]:
    """The live processes below ``root``, from one scan of ``/proc`` (zombies left out:
    they have no children and only wait to be reaped)."""
    children: dict[int, list[int]] = {}
    if not _LINUX:
        return []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields follow the last ")".
        fields = stat[stat.rindex(b")") + 2 :].split()
        if fields[0] in (b"Z", b"X"):
            continue
        children.setdefault(int(fields[1]), []).append(int(name))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def _signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


class Shim:
    def __init__(self, config: dict[str, Any], argv: list[str]) -> None:
        self.config = config
        self.argv = argv
        self.pid = os.getpid()
        self.main: int | None = None
        self.status: int | None = None
        """The first process's wait status once it ended."""

    def reap(self) -> None:
        """Wait for every child that ended: the first process, and any orphan the
        kernel handed to this subreaper."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.main:
                self.status = status

    def signal_job(self, sig: int) -> None:
        if _LINUX:
            _signal_all(descendants(self.pid), sig)
        elif self.main is not None:  # the job's first process leads its process group
            with contextlib.suppress(OSError):
                os.killpg(self.main, sig)

    def kill_all(self) -> None:
        """Freeze every descendant, then kill them all; until none is left."""
        if not _LINUX:
            self.signal_job(signal.SIGKILL)
            return
        deadline = time.monotonic() + SWEEP_SECONDS
        while time.monotonic() < deadline:
            self.reap()
            frozen: set[int] = set()
            while True:
                new = set(descendants(self.pid)) - frozen
                if not new:
                    break
                _signal_all(new, signal.SIGSTOP)
                frozen |= new
            if not frozen:
                return
            _signal_all(frozen, signal.SIGKILL)
            time.sleep(0.005)
        print("shelby: some processes of the job could not be killed", file=sys.stderr)

    def start(self) -> int:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child execs or exits
            os.close(read)
            self._exec(write)
        os.close(write)
        # The child closes ``write`` on exec (close-on-exec) or reports why it failed.
        with os.fdopen(read, "rb") as pipe:
            failure = pipe.read()
        self.main = pid
        if failure:
            sys.stderr.write(failure.decode(errors="replace"))
            sys.stderr.flush()
        return pid

    def _exec(self, report: int) -> None:
        """In the child: its own session, the limits, the user, then ARGV."""
        code = 126
        try:
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, *_WATCHED):
                signal.signal(sig, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
            os.setsid()
            for name, value in self.config.get("rlimits", {}).items():
                resource.setrlimit(getattr(resource, f"RLIMIT_{name}"), (value, value))
            if "uid" in self.config:
                os.setgroups(self.config["groups"])
                os.setgid(self.config["gid"])
                os.setuid(self.config["uid"])
            # After the user change, which clears it: the job's first process dies with
            # the shim, however the shim ends.
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != self.pid:
                os._exit(code)
            code = 127
            os.execvp(self.argv[0], self.argv)
        except BaseException as exc:
            # A forked child must not return into the shim's own code (a limit setrlimit
            # cannot hold raises OverflowError): whatever failed, it says why and exits.
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            message = f"shelby: cannot start {self.argv[0]}: {why}\n"
            with contextlib.suppress(OSError):
                os.write(report, message.encode())
        os._exit(code)

    def run(self) -> int:
        # No core file of the shim when it ends itself by the job's signal (SIGSEGV…).
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
        # Each watched signal writes its number to a pipe the loop selects on: none is
        # lost between a reap and the wait (portable, unlike sigtimedwait).
        wake, woken = os.pipe()
        os.set_blocking(woken, False)
        signal.set_wakeup_fd(woken)
        for sig in _WATCHED:
            signal.signal(sig, lambda signum, frame: None)
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        _prctl(PR_SET_PDEATHSIG, signal.SIGHUP)
        if os.getppid() != self.config.get("parent", os.getppid()):
            return 1  # the agent died before the line above: nobody to work for
        self.start()
        grace = float(self.config.get("grace", 5.0))
        deadline: float | None = None
        while True:
            self.reap()
            if self.status is not None:
                break
            wait = 60.0
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    self.kill_all()
                    continue
            if not select.select([wake], [], [], wait)[0]:
                continue
            for signum in os.read(wake, 512):
                if signum == signal.SIGCHLD:
                    continue
                if signum == signal.SIGHUP or deadline is not None:
                    self.kill_all()
                else:
                    self.signal_job(signal.SIGTERM)
                    deadline = time.monotonic() + grace
        self.kill_all()  # what the first process left behind ends with it
        return os.waitstatus_to_exitcode(self.status)


def _exit_as(code: int) -> None:
    """Exit with ``code``, or be killed by the signal ``-code`` as the job was."""
    if code >= 0:
        sys.exit(code)
    sig = -code
    with contextlib.suppress(OSError, ValueError):  # SIGKILL has no handler to reset
        signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
    sys.exit(128 + sig)


def main(args: list[str]) -> None:
    if len(args) < 3 or args[1] != "--":
        print("usage: shim.py CONFIG -- ARGV...", file=sys.stderr)
        sys.exit(2)
    config = json.loads(args[0])
    _exit_as(Shim(config, args[2:]).run())


if __name__ == "__main__":
    main(sys.argv[1:])

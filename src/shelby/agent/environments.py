"""Virtual environments for job scripts, one per set of requirements, built once.

A job's requirements are installed into a virtual environment kept under a key
derived from the requirements (and the Python that runs them), so the second job
asking for the same packages starts at once. An environment counts as built only
once its marker file exists: one cut short by a crash or a stop is rebuilt, never
used half-installed. A file lock keeps two agents sharing a work directory from
building the same one at the same time.

Environments are made from the agent's own (base) Python unless the agent is given
another (``--job-python``). A build runs the requirements' code, so it runs in the
job's sandbox; with ``--run-as USER`` it runs as USER in a directory handed to USER,
and the finished environment is taken back (``sandbox.freeze``) before it is marked
ready: no job can change what a later job runs.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path

from shelby.agent.process import LineSink, StopRequest, run_tree
from shelby.agent.sandbox import RunAs, Sandbox, freeze, hand_over

__all__ = ["EnvironmentCache", "EnvironmentFailed", "Stopped", "base_python", "environment_key"]

_READY = ".shelby-ready"


class EnvironmentFailed(Exception):
    """The requirements could not be installed."""


class Stopped(Exception):
    """The attempt was stopped while its environment was being built."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _normalized(requirements: str) -> str:
    return "\n".join(line.strip() for line in requirements.splitlines() if line.strip())


def base_python() -> str:
    """The interpreter the agent's Python was made from (itself, outside a venv)."""
    return str(getattr(sys, "_base_executable", None) or sys.executable)


def environment_key(requirements: str, python: str | None = None) -> str:
    """The cache key: SHA-256 of the Python (the agent's version, or the path of the one
    given) and the requirements, one per line with surrounding blanks removed (so a
    trailing newline does not build a second one)."""
    made_by = python or f"{sys.version_info.major}.{sys.version_info.minor}"
    text = f"python {made_by}\n{_normalized(requirements)}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class EnvironmentCache:
    def __init__(
        self,
        root: Path,
        *,
        kill_grace: float = 5.0,
        python: str | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.root = root
        self._kill_grace = kill_grace
        self._locks: dict[str, asyncio.Lock] = {}
        self._given_python = python
        self.python = python or base_python()
        self._sandbox = sandbox or Sandbox()
        # pip of the agent's own Python can install into an environment made without
        # pip (``pip --python``), which is ten times faster to create. Not with
        # --run-as: the user need not be able to run the agent's Python, and the
        # environment's own pip does it.
        self._agent_pip = (
            importlib.util.find_spec("pip") is not None and self._sandbox.run_as is None
        )

    def python_of(self, env_dir: Path) -> Path:
        return env_dir / "bin" / "python"

    async def environment(
        self, requirements: str, *, env: dict[str, str], sink: LineSink, stop: StopRequest
    ) -> Path:
        """The environment for ``requirements``, built now if it does not exist yet.
        Build output goes to ``sink`` on the ``system`` stream."""
        key = environment_key(requirements, self._given_python)
        self.root.mkdir(parents=True, exist_ok=True)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            target = self.root / key
            if (target / _READY).exists():
                sink("system", f"[shelby] using the cached environment {key}", _now())
                return target
            lock_file = self.root / f"{key}.lock"
            # The file lock is taken in a thread: another agent may hold it for a while.
            held = await asyncio.to_thread(_acquire, lock_file)
            try:
                if (target / _READY).exists():
                    sink("system", f"[shelby] using the cached environment {key}", _now())
                    return target
                try:
                    await self._build(target, key, requirements, env=env, sink=sink, stop=stop)
                except BaseException:
                    await asyncio.to_thread(shutil.rmtree, target, True)
                    raise
                return target
            finally:
                _release(held)

    async def _build(
        self,
        target: Path,
        key: str,
        requirements: str,
        *,
        env: dict[str, str],
        sink: LineSink,
        stop: StopRequest,
    ) -> None:
        await asyncio.to_thread(shutil.rmtree, target, True)
        packages = _normalized(requirements)
        sink("system", f"[shelby] creating the environment {key}", _now())
        run_as = self._sandbox.run_as
        await asyncio.to_thread(_make_target, target, requirements, run_as)
        create = [self.python, "-m", "venv"]
        if self._agent_pip or not packages:
            create.append("--without-pip")
        await self._step([*create, str(target)], env=env, sink=sink, stop=stop, what="venv")
        if packages:
            python = str(self.python_of(target))
            pip = [sys.executable, "-m", "pip", "--python", python]
            if not self._agent_pip:
                pip = [python, "-m", "pip"]
            install = [
                *pip,
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
                "-r",
                str(target / "requirements.txt"),
            ]
            sink("system", "[shelby] installing the requirements", _now())
            await self._step(install, env=env, sink=sink, stop=stop, what="pip install")
        if run_as is not None:
            await asyncio.to_thread(freeze, target, run_as)
        (target / _READY).write_text(requirements)

    async def _step(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        sink: LineSink,
        stop: StopRequest,
        what: str,
    ) -> None:
        done = await run_tree(
            argv,
            cwd=self.root,
            env=env,
            sink=sink,
            stop=stop,
            streams=("system", "system"),
            kill_grace=self._kill_grace,
            sandbox=self._sandbox,
        )
        if done.stopped is not None:
            raise Stopped(done.stopped)
        if done.code != 0:
            raise EnvironmentFailed(
                f"installing the requirements failed ({what} exit code {done.code})"
            )


def _make_target(target: Path, requirements: str, run_as: RunAs | None) -> None:
    target.mkdir(mode=0o700)
    # Written before the user gets the directory: the agent writes into nothing the
    # user could have planted a link in.
    (target / "requirements.txt").write_text(requirements)
    if run_as is not None:
        hand_over(target, run_as)


def _acquire(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _release(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _now() -> float:
    return time.time()

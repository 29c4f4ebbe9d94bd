"""Where each attempt stands, on disk, so that an agent restart loses nothing.

``state.json`` in an attempt's directory moves through these phases:

- ``starting`` → ``running``: the script (or its preparation) is under way; ``pgid``
  and ``pidCreated`` name its process group once it exists.
- ``finishing``: the ending is decided and saved (``finish`` and ``usage`` bodies);
  what is left is to drain the log spool and send both.
- ``releasing``: the agent is going away (or found the attempt cut short by an
  earlier run of itself); ``reason`` and ``usage`` are saved, and what is left is to
  drain the log, send the usage and hand the attempt back to the server.
- ``done``: the server has the finish. ``released``: the server has the attempt back.
  ``abandoned``: the server took the attempt back (409), so nothing more is sent for it.

A restarted agent stops what an earlier run left ``starting`` or ``running`` (the
process tree cannot be adopted again: its pipes died with the agent) and hands it
back, and completes every ``finishing`` or ``releasing`` attempt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from shelby.agent.process import signal_group

__all__ = ["AttemptState", "attempt_directory", "unfinished_attempts"]

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,100}")

ACTIVE = ("starting", "running")


def attempt_directory(work_dir: Path, job_id: str, attempt: int) -> Path:
    """``WORK/jobs/<job>/attempt-<n>``; a job id that is not a plain file name is hashed."""
    name = job_id if _SAFE.fullmatch(job_id) else hashlib.sha256(job_id.encode()).hexdigest()[:32]
    return work_dir / "jobs" / name / f"attempt-{attempt}"


class AttemptState:
    def __init__(self, directory: Path, data: dict[str, Any]) -> None:
        self.directory = directory
        self.data = data

    @classmethod
    def create(cls, directory: Path, job_id: str, attempt: int, node_id: str) -> AttemptState:
        state = cls(
            directory,
            {"jobId": job_id, "attempt": attempt, "nodeId": node_id, "phase": "starting"},
        )
        state.save()
        return state

    @classmethod
    def load(cls, directory: Path) -> AttemptState:
        return cls(directory, json.loads((directory / "state.json").read_text()))

    @property
    def job_id(self) -> str:
        return str(self.data["jobId"])

    @property
    def attempt(self) -> int:
        return int(self.data["attempt"])

    @property
    def phase(self) -> str:
        return str(self.data["phase"])

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.save()

    def save(self) -> None:
        path = self.directory / "state.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, path)

    def record_process(self, pgid: int) -> None:
        created: float | None = None
        with contextlib.suppress(psutil.Error):
            created = psutil.Process(pgid).create_time()
        self.update(pgid=pgid, pidCreated=created)

    def kill_leftovers(self) -> bool:
        """Kill the process group an earlier agent left running; true if one was found.
        The creation time guards against a recycled pid."""
        pgid = self.data.get("pgid")
        created = self.data.get("pidCreated")
        if not isinstance(pgid, int):
            return False
        try:
            if created is not None and psutil.Process(pgid).create_time() != created:
                return False
        except psutil.Error:
            # The leader is gone; members of its group may not be.
            pass
        try:
            members = [p for p in psutil.process_iter() if _group_of(p.pid) == pgid]
        except psutil.Error:
            members = []
        if members:
            signal_group(pgid, signal.SIGKILL)
        return bool(members)


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def unfinished_attempts(work_dir: Path) -> Iterator[AttemptState]:
    """Every attempt an earlier run of the agent did not see through."""
    for state_file in sorted((work_dir / "jobs").glob("*/attempt-*/state.json")):
        try:
            state = AttemptState.load(state_file.parent)
        except (OSError, ValueError):
            continue
        if state.phase in (*ACTIVE, "finishing", "releasing"):
            yield state

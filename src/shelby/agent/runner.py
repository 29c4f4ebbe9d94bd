"""One attempt of one job on this node: from an assignment and its script to an ending.

The attempt gets a fresh directory of its own::

    attempt-N/
      dataset/   the dataset, fetched and checked against datasetHash
      src/       the script, under its entrypoint's name (the working directory)
      out/       SHELBY_OUTPUT_DIR: what the script leaves here is the model
      home/      HOME; tmp/: TMPDIR, removed when the script ends
      log/       the log spool (spool.py), the agent's alone
      state.json where the attempt is, so that a restarted agent can finish reporting

With ``--run-as USER`` (sandbox.py), dataset, src, out, home and tmp are USER's (the
dataset once checked, the script once written); the rest is the agent's.

The runner talks to no server: it reports lines to a sink and returns an ``Ending``;
the agent (agent.py) carries both to the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TypeVar

from shelby.agent.dataset import DatasetError, fetch_dataset
from shelby.agent.environments import EnvironmentCache, EnvironmentFailed, Stopped
from shelby.agent.modelhash import model_hash, output_files
from shelby.agent.process import LineSink, StopRequest, TreeUsage, run_tree
from shelby.agent.sandbox import Sandbox, hand_over, job_environment

__all__ = [
    "CANCELLED",
    "SHUTDOWN",
    "SHUTDOWN_REASON",
    "TIMEOUT",
    "Assignment",
    "AttemptRunner",
    "Ending",
    "Script",
    "stopped_ending",
    "unless_stopped",
]

T = TypeVar("T")

TIMEOUT = "timeout"
"""The job outlived its ``timeoutMinutes``; also the error text API.md gives it."""
CANCELLED = "cancelled"
"""The server took the attempt back (deleted, restarted, handed elsewhere)."""
SHUTDOWN = "shutdown"
"""The agent itself is stopping."""
SHUTDOWN_REASON = "the agent shut down"
"""Why an attempt stopped by its agent's shutdown is handed back to the server."""


@dataclass(frozen=True)
class Assignment:
    """A job as ``GET /api/jobs/poll`` hands it out."""

    job_id: str
    attempt: int
    dataset_url: str | None
    dataset_hash: str | None
    timeout_seconds: float
    entrypoint: str | None

    @classmethod
    def from_poll(cls, job: Mapping[str, Any]) -> Assignment:
        # API.md lists no timeout in the poll answer; take it when the server sends
        # it, else derive it as the server does (twice the estimate, else an hour).
        minutes = job.get("timeoutMinutes")
        if minutes is None:
            estimate = job.get("runtimeMinutesEstimate")
            minutes = 2 * float(estimate) if estimate else 60.0
        return cls(
            job_id=str(job["jobId"]),
            attempt=int(job.get("attempt") or 1),
            dataset_url=job.get("datasetUrl") or None,
            dataset_hash=job.get("datasetHash") or None,
            timeout_seconds=float(minutes) * 60.0,
            entrypoint=job.get("entrypoint"),
        )


@dataclass(frozen=True)
class Script:
    """``GET /api/jobs/fetch-script``'s answer."""

    text: str
    requirements: str
    entrypoint: str
    script_hash: str | None

    @classmethod
    def from_fetch(cls, answer: Mapping[str, Any]) -> Script:
        return cls(
            text=str(answer["script"]),
            requirements=str(answer.get("requirements") or ""),
            entrypoint=str(answer.get("entrypoint") or "train.py"),
            script_hash=answer.get("scriptHash"),
        )


@dataclass(frozen=True)
class Ending:
    """How an attempt ended, as the agent will report it: finished or failed (the
    script's own outcome), released (the agent is going away, so the attempt goes back
    to the server unfinished, with ``error`` as the reason), or not at all (cancelled)."""

    status: Literal["finished", "failed", "released", "cancelled"]
    exit_code: int | None = None
    error: str | None = None
    model_hash: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    usage: TreeUsage | None = None

    def finish_body(self, job_id: str, node_id: str, attempt: int) -> dict[str, Any]:
        return {
            "jobId": job_id,
            "nodeId": node_id,
            "attempt": attempt,
            "status": self.status,
            "modelHash": self.model_hash,
            "exitCode": self.exit_code,
            "error": self.error,
            "metadata": self.metadata,
        }

    def usage_body(self) -> dict[str, Any] | None:
        if self.usage is None:
            return None
        return {
            "cpuSeconds": self.usage.cpu_seconds,
            "wallSeconds": self.usage.wall_seconds,
            "peakRamMB": self.usage.peak_ram_mb,
            "gpuSeconds": self.usage.gpu_seconds,
            # Kept with the body in the attempt's state: a resend after a lost answer
            # carries the same id, and the server records the report once.
            "reportId": f"usage-{secrets.token_hex(8)}",
        }


def stopped_ending(reason: str, usage: TreeUsage | None = None) -> Ending:
    match reason:
        case "timeout":
            return Ending(status="failed", error=TIMEOUT, usage=usage)
        case "shutdown":
            # The node going away is not the script's failure: the server requeues it.
            return Ending(status="released", error=SHUTDOWN_REASON, usage=usage)
        case "cancelled":
            return Ending(status="cancelled", usage=usage)
        case _:
            raise ValueError(f"unknown stop reason {reason!r}")


def _exit_error(code: int, last_stderr: str | None, sandbox: Sandbox) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        text = f"killed by {name}"
    else:
        text = f"exit code {code}"
    if not last_stderr:
        return text
    limit = sandbox.explain(last_stderr)
    return f"{text}: {last_stderr}" + (f" ({limit})" if limit else "")


def _safe_entrypoint(entrypoint: str) -> str | None:
    path = PurePosixPath(entrypoint)
    if path.is_absolute() or ".." in path.parts or not path.parts or "\0" in entrypoint:
        return None
    return str(path)


async def unless_stopped(work: Awaitable[T], stop: StopRequest) -> T | None:
    """``work``'s result, or ``None`` (``work`` cancelled) when a stop comes first."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    return None


class AttemptRunner:
    def __init__(
        self,
        environments: EnvironmentCache,
        *,
        secrets: Callable[[], Iterable[str]],
        kill_grace: float = 5.0,
        track_gpus: bool = False,
        sandbox: Sandbox | None = None,
    ) -> None:
        self._environments = environments
        self._secrets = secrets
        self._kill_grace = kill_grace
        self._track_gpus = track_gpus
        self._sandbox = sandbox or Sandbox()

    async def run(
        self,
        assignment: Assignment,
        script: Script,
        directory: Path,
        *,
        sink: LineSink,
        stop: StopRequest,
        on_spawn: Callable[[int], None] | None = None,
    ) -> Ending:
        def system(text: str) -> None:
            sink("system", f"[shelby] {text}", time.time())

        sandbox = self._sandbox
        run_as = sandbox.run_as
        out, src, home, tmp = (directory / name for name in ("out", "src", "home", "tmp"))
        for made in (out, src, home, tmp):
            made.mkdir(mode=0o700, parents=True, exist_ok=True)
        if run_as is not None:
            # The user passes through to its own directories, and sees nothing else here.
            for passage in (directory.parent, directory):
                os.chmod(passage, 0o711)
            for made in (out, home, tmp):  # src once the script is in it
                hand_over(made, run_as)
        user = sandbox.user_name()
        identity = {"HOME": str(home), "TMPDIR": str(tmp), "USER": user, "LOGNAME": user}
        base_env = job_environment(os.environ, self._secrets(), identity, sandbox.pass_env)

        if script.script_hash is not None:
            actual = "sha256:" + hashlib.sha256(script.text.encode()).hexdigest()
            if actual != script.script_hash:
                return Ending(
                    status="failed",
                    error=f"script hash mismatch: the server says {script.script_hash},"
                    f" the script received is {actual}",
                )
        entrypoint = _safe_entrypoint(script.entrypoint)
        if entrypoint is None:
            return Ending(
                status="failed",
                error=f"entrypoint {script.entrypoint!r} is not a relative path",
            )

        dataset_path: Path | None = None
        dataset_hash: str | None = None
        if assignment.dataset_url:
            system(f"fetching the dataset {assignment.dataset_url}")
            try:
                fetched = await unless_stopped(
                    fetch_dataset(
                        assignment.dataset_url, assignment.dataset_hash, directory / "dataset"
                    ),
                    stop,
                )
            except DatasetError as exc:
                system(str(exc))
                return Ending(status="failed", error=str(exc))
            if fetched is None:
                return stopped_ending(stop.reason or SHUTDOWN)
            dataset_path, dataset_hash = fetched
            if run_as is not None:
                os.chmod(dataset_path.parent, 0o700)
                hand_over(dataset_path.parent, run_as)
            checked = "matches datasetHash" if assignment.dataset_hash else "no datasetHash given"
            system(f"dataset {dataset_path.name} is {dataset_hash} ({checked})")

        try:
            environment = await self._environments.environment(
                script.requirements, env=base_env, sink=sink, stop=stop
            )
        except Stopped as exc:
            return stopped_ending(exc.reason)
        except EnvironmentFailed as exc:
            system(str(exc))
            return Ending(status="failed", error=str(exc))
        if stop.reason is not None:
            return stopped_ending(stop.reason)

        target = src / entrypoint
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(script.text, encoding="utf-8")
        if run_as is not None:
            hand_over(src, run_as)
        bin_dir = environment / "bin"
        env = job_environment(
            os.environ,
            self._secrets(),
            {
                **identity,
                "SHELBY_JOB_ID": assignment.job_id,
                "SHELBY_ATTEMPT": str(assignment.attempt),
                "SHELBY_DATASET_PATH": str(dataset_path) if dataset_path else "",
                "SHELBY_OUTPUT_DIR": str(out),
                "VIRTUAL_ENV": str(environment),
                "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
                "PYTHONUNBUFFERED": "1",
            },
            sandbox.pass_env,
        )
        if entrypoint.endswith(".sh"):
            argv = ["/bin/sh", entrypoint]
        else:
            argv = [str(self._environments.python_of(environment)), "-u", entrypoint]

        last_stderr: list[str] = []

        def script_sink(stream: str, text: str, at: float) -> None:
            if stream == "stderr" and text.strip():
                last_stderr[:] = [text.strip()[:500]]
            sink(stream, text, at)

        system(f"running {entrypoint} (attempt {assignment.attempt}) {sandbox.describe()}")
        done = await run_tree(
            argv,
            cwd=src,
            env=env,
            sink=script_sink,
            stop=stop,
            on_spawn=on_spawn,
            kill_grace=self._kill_grace,
            track_gpus=self._track_gpus,
            sandbox=sandbox,
        )
        await asyncio.to_thread(shutil.rmtree, tmp, True)
        if dataset_path is not None:
            # The dataset may be large and is fetched again by any later attempt; the
            # output stays: on this node it is the only copy of the model.
            with contextlib.suppress(OSError):
                dataset_path.unlink()
        if done.stopped is not None:
            system(f"stopped ({done.stopped}) after {done.usage.wall_seconds:.1f} s")
            return stopped_ending(done.stopped, done.usage)
        system(f"exited with code {done.code} after {done.usage.wall_seconds:.1f} s")
        metadata: dict[str, Any] = {}
        if dataset_hash is not None:
            metadata["datasetHash"] = dataset_hash
        if done.code != 0:
            return Ending(
                status="failed",
                exit_code=done.code,
                error=_exit_error(done.code, last_stderr[0] if last_stderr else None, sandbox),
                metadata=metadata,
                usage=done.usage,
            )
        files = await asyncio.to_thread(output_files, out)
        digest = await asyncio.to_thread(model_hash, out)
        metadata["outputFiles"] = len(files)
        metadata["outputBytes"] = sum(os.lstat(os.fsencode(out) + f[1:]).st_size for f in files)
        system(f"model {digest} ({len(files)} files)")
        return Ending(
            status="finished",
            exit_code=0,
            model_hash=digest,
            metadata=metadata,
            usage=done.usage,
        )

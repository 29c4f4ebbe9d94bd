"""What may happen to a job: its commands, its state, and the Decider over them.

``decide`` and ``evolve`` are pure. Anything from outside (who asks, the time, ids)
arrives inside the command.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any, Literal

import msgspec

from shelby.domain.errors import Conflict, NotFound
from shelby.events.types import (
    Event,
    JobAcked,
    JobAssigned,
    JobCreated,
    JobDeleted,
    JobFailed,
    JobFinished,
    JobReleased,
    JobRestarted,
    JobTimedOut,
    LeaseExpired,
    LogLine,
    LogLinesAppended,
    Resources,
    ScriptUploaded,
    UsageReported,
)

__all__ = [
    "AckJob",
    "AppendLogLines",
    "AssignJob",
    "CreateJob",
    "DeleteJob",
    "ExpireLease",
    "FinishJob",
    "JobCommand",
    "JobState",
    "JobStatus",
    "ReleaseJob",
    "ReportJobUsage",
    "RestartJob",
    "TimeOutJob",
    "UploadScript",
    "decide",
    "evolve",
    "initial_state",
    "require_held",
    "script_hash",
]


class JobStatus(StrEnum):
    PENDING = "pending"
    ASSIGNED = "assigned"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


HELD = (JobStatus.ASSIGNED, JobStatus.RUNNING)
ENDED = (JobStatus.FINISHED, JobStatus.FAILED)


class JobState(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str | None = None  # None: the job never existed
    deleted: bool = False
    status: JobStatus = JobStatus.PENDING
    attempt: int = 1
    first_attempt: int = 1  # of the current run: restart starts a new run of attempts
    max_attempts: int = 3
    node_id: str | None = None
    has_script: bool = False
    next_offset: int = 0  # of the current attempt's log
    ending: Event | None = None  # the JobFinished/JobFailed that ended the attempt
    # (attempt, node) of every attempt its node handed back, so that a release the
    # node repeats (its first answer was lost) is recognised rather than refused.
    released: frozenset[tuple[int, str]] = frozenset()
    # (attempt, reportId) of every usage report that named itself, so that one the
    # node sends again (its answer was lost) is recognised rather than counted twice.
    # Reports without an id are all summed, as API.md says.
    usage_reports: frozenset[tuple[int, str]] = frozenset()


def initial_state() -> JobState:
    return JobState()


def script_hash(script: str) -> str:
    return "sha256:" + hashlib.sha256(script.encode()).hexdigest()


# --- commands ------------------------------------------------------------------------


class CreateJob(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    dataset_name: str | None = None
    dataset_url: str | None = None
    dataset_hash: str | None = None
    runtime_minutes_estimate: float | None = None
    meta: dict[str, Any] = {}
    max_attempts: int = 3
    timeout_minutes: float = 60.0
    resources: Resources | None = None
    labels: dict[str, str] = {}


class UploadScript(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    script: str
    requirements: str = ""
    entrypoint: str = "train.py"


class AssignJob(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    node_id: str


class AckJob(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    node_id: str
    attempt: int | None = None  # None: the current attempt


class AppendLogLines(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    node_id: str
    attempt: int | None
    offset: int | None  # None: append after the last stored line
    lines: list[LogLine]


class ReportJobUsage(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    node_id: str
    attempt: int | None
    cpu_seconds: float | None = None
    wall_seconds: float | None = None
    peak_ram_mb: float | None = None
    gpu_seconds: float | None = None
    report_id: str | None = None


class FinishJob(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    node_id: str
    attempt: int | None
    status: Literal["finished", "failed"]
    model_hash: str | None = None
    exit_code: int | None = None
    error: str | None = None
    metadata: dict[str, Any] = {}


class ExpireLease(msgspec.Struct, frozen=True, kw_only=True):
    """Issued by the lease sweeper for the attempt it saw held by a silent node."""

    job_id: str
    node_id: str
    attempt: int


class ReleaseJob(msgspec.Struct, frozen=True, kw_only=True):
    """Sent by the node holding an attempt that it will not see through: its agent is
    shutting down, or found the attempt cut short by an earlier run of itself. The
    node's going away is not the script's failure, so the job goes back to the queue
    at once instead of waiting for the lease to expire."""

    job_id: str
    node_id: str
    attempt: int
    reason: str


class TimeOutJob(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    attempt: int


class RestartJob(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str


class DeleteJob(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str


JobCommand = (
    CreateJob
    | UploadScript
    | AssignJob
    | AckJob
    | AppendLogLines
    | ReportJobUsage
    | FinishJob
    | ExpireLease
    | ReleaseJob
    | TimeOutJob
    | RestartJob
    | DeleteJob
)


# --- deciding ------------------------------------------------------------------------


def _existing(state: JobState, job_id: str) -> JobState:
    if state.job_id is None or state.deleted:
        raise NotFound(f"job {job_id!r} not found")
    return state


def _current_attempt(state: JobState, node_id: str, attempt: int | None) -> int:
    """The attempt a node may act for: the job's current one, held by that node."""
    if state.status not in HELD or state.node_id != node_id:
        raise Conflict(f"job {state.job_id!r} is not assigned to node {node_id!r}")
    if attempt is not None and attempt != state.attempt:
        raise Conflict(
            f"attempt {attempt} of job {state.job_id!r} is not current"
            f" (the current attempt is {state.attempt})"
        )
    return state.attempt


def require_held(state: JobState, job_id: str, node_id: str, attempt: int | None = None) -> int:
    """The attempt ``node_id`` may act for on this job (404, or 409, otherwise): the
    rule every job-scoped agent call follows, commands and reads alike."""
    return _current_attempt(_existing(state, job_id), node_id, attempt)


def _attempts_left(state: JobState) -> bool:
    """Whether the current attempt is not the last one ``maxAttempts`` allows."""
    return state.attempt - state.first_attempt + 1 < state.max_attempts


def _unless_requeued(
    ended: LeaseExpired | JobReleased, error: str, *, by_server: bool
) -> list[Event]:
    """An attempt given up on: the job goes back to the queue, or, when that was its
    last attempt, fails with ``error``."""
    if ended.requeued:
        return [ended]
    failed = JobFailed(
        job_id=ended.job_id,
        node_id=ended.node_id,
        attempt=ended.attempt,
        error=error,
        by_server=by_server,
    )
    return [ended, failed]


def decide(command: JobCommand, state: JobState) -> list[Event]:
    match command:
        case CreateJob():
            if state.job_id is not None:
                raise Conflict(f"job {command.job_id!r} already exists")
            return [
                JobCreated(
                    job_id=command.job_id,
                    dataset_name=command.dataset_name,
                    dataset_url=command.dataset_url,
                    dataset_hash=command.dataset_hash,
                    runtime_minutes_estimate=command.runtime_minutes_estimate,
                    meta=command.meta,
                    max_attempts=command.max_attempts,
                    timeout_minutes=command.timeout_minutes,
                    resources=command.resources,
                    labels=command.labels,
                )
            ]
        case UploadScript():
            _existing(state, command.job_id)
            if state.status is not JobStatus.PENDING:
                raise Conflict(
                    f"job {command.job_id!r} is {state.status}: a script can only be"
                    " replaced while the job is pending"
                )
            return [
                ScriptUploaded(
                    job_id=command.job_id,
                    script=command.script,
                    requirements=command.requirements,
                    entrypoint=command.entrypoint,
                    script_hash=script_hash(command.script),
                )
            ]
        case AssignJob():
            _existing(state, command.job_id)
            if state.status is not JobStatus.PENDING or not state.has_script:
                raise Conflict(f"job {command.job_id!r} is not runnable")
            return [
                JobAssigned(job_id=command.job_id, node_id=command.node_id, attempt=state.attempt)
            ]
        case AckJob():
            attempt = require_held(state, command.job_id, command.node_id, command.attempt)
            if state.status is JobStatus.RUNNING:
                return []  # a repeated ack changes nothing
            return [JobAcked(job_id=command.job_id, node_id=command.node_id, attempt=attempt)]
        case AppendLogLines():
            attempt = require_held(state, command.job_id, command.node_id, command.attempt)
            offset = state.next_offset if command.offset is None else command.offset
            if offset > state.next_offset:
                raise Conflict(f"expected offset {state.next_offset}, got {offset}")
            fresh = command.lines[state.next_offset - offset :]
            if not fresh:
                return []  # a resent batch: every line is stored already
            return [
                LogLinesAppended(
                    job_id=command.job_id,
                    node_id=command.node_id,
                    attempt=attempt,
                    offset=state.next_offset,
                    lines=fresh,
                )
            ]
        case ReportJobUsage():
            attempt = require_held(state, command.job_id, command.node_id, command.attempt)
            report = UsageReported(
                node_id=command.node_id,
                job_id=command.job_id,
                attempt=attempt,
                cpu_seconds=command.cpu_seconds,
                wall_seconds=command.wall_seconds,
                peak_ram_mb=command.peak_ram_mb,
                gpu_seconds=command.gpu_seconds,
                report_id=command.report_id,
            )
            if command.report_id is not None and (attempt, command.report_id) in (
                state.usage_reports
            ):
                return []  # this report again: already counted
            return [report]
        case FinishJob():
            _existing(state, command.job_id)
            ending = _ending(command, state)
            if state.status in ENDED:
                if state.ending is not None and _same_ending(state.ending, ending):
                    return []  # the same finish again: already recorded
                raise Conflict(f"job {command.job_id!r} has already ended as {state.status}")
            _current_attempt(state, command.node_id, command.attempt)
            return [ending]
        case ExpireLease():
            if (
                state.job_id is None
                or state.deleted
                or state.status not in HELD
                or state.node_id != command.node_id
                or state.attempt != command.attempt
            ):
                return []  # the attempt already moved on: nothing to expire
            expired = LeaseExpired(
                job_id=command.job_id,
                node_id=command.node_id,
                attempt=command.attempt,
                requeued=_attempts_left(state),
            )
            return _unless_requeued(
                expired, f"lease expired on {state.max_attempts} attempts", by_server=True
            )
        case ReleaseJob():
            _existing(state, command.job_id)
            if (command.attempt, command.node_id) in state.released:
                return []  # the same release again: the attempt is already handed back
            _current_attempt(state, command.node_id, command.attempt)
            released = JobReleased(
                job_id=command.job_id,
                node_id=command.node_id,
                attempt=command.attempt,
                reason=command.reason,
                requeued=_attempts_left(state),
            )
            return _unless_requeued(
                released,
                f"released by its node on the last attempt: {command.reason}",
                by_server=False,
            )
        case TimeOutJob():
            if (
                state.job_id is None
                or state.deleted
                or state.status not in HELD
                or state.attempt != command.attempt
            ):
                return []
            return [
                JobTimedOut(job_id=command.job_id, node_id=state.node_id, attempt=state.attempt),
                JobFailed(
                    job_id=command.job_id,
                    node_id=state.node_id,
                    attempt=state.attempt,
                    error="timeout",
                    by_server=True,
                ),
            ]
        case RestartJob():
            _existing(state, command.job_id)
            if state.status not in ENDED:
                raise Conflict(
                    f"job {command.job_id!r} is {state.status}: only a finished or failed"
                    " job can be restarted"
                )
            return [JobRestarted(job_id=command.job_id, attempt=state.attempt + 1)]
        case DeleteJob():
            _existing(state, command.job_id)
            return [JobDeleted(job_id=command.job_id)]
        case _:
            raise TypeError(f"not a job command: {command!r}")


def _ending(command: FinishJob, state: JobState) -> JobFinished | JobFailed:
    attempt = state.attempt if command.attempt is None else command.attempt
    if command.status == "finished":
        return JobFinished(
            job_id=command.job_id,
            node_id=command.node_id,
            attempt=attempt,
            model_hash=command.model_hash,
            exit_code=0 if command.exit_code is None else command.exit_code,
            metadata=command.metadata,
        )
    return JobFailed(
        job_id=command.job_id,
        node_id=command.node_id,
        attempt=attempt,
        exit_code=command.exit_code,
        error=command.error,
        model_hash=command.model_hash,
        metadata=command.metadata,
    )


def _same_ending(recorded: Event, asked: Event) -> bool:
    return recorded == asked


# --- evolving ------------------------------------------------------------------------


def evolve(state: JobState, event: Event) -> JobState:
    match event:
        case JobCreated():
            return JobState(job_id=event.job_id, max_attempts=event.max_attempts)
        case ScriptUploaded():
            return msgspec.structs.replace(state, has_script=True)
        case JobAssigned():
            return msgspec.structs.replace(
                state,
                status=JobStatus.ASSIGNED,
                node_id=event.node_id,
                attempt=event.attempt,
                next_offset=0,
                ending=None,
            )
        case JobAcked():
            return msgspec.structs.replace(state, status=JobStatus.RUNNING)
        case LogLinesAppended():
            return msgspec.structs.replace(state, next_offset=event.offset + len(event.lines))
        case UsageReported():
            if event.report_id is None or event.attempt is None:
                return state
            return msgspec.structs.replace(
                state, usage_reports=state.usage_reports | {(event.attempt, event.report_id)}
            )
        case JobTimedOut():
            return state
        case JobFinished():
            return msgspec.structs.replace(state, status=JobStatus.FINISHED, ending=event)
        case JobFailed():
            return msgspec.structs.replace(state, status=JobStatus.FAILED, ending=event)
        case LeaseExpired():
            if not event.requeued:
                return state  # JobFailed follows
            return msgspec.structs.replace(
                state, status=JobStatus.PENDING, attempt=state.attempt + 1, node_id=None
            )
        case JobReleased():
            released = state.released | {(event.attempt, event.node_id)}
            if not event.requeued:
                return msgspec.structs.replace(state, released=released)  # JobFailed follows
            return msgspec.structs.replace(
                state,
                status=JobStatus.PENDING,
                attempt=state.attempt + 1,
                node_id=None,
                released=released,
            )
        case JobRestarted():
            return msgspec.structs.replace(
                state,
                status=JobStatus.PENDING,
                attempt=event.attempt,
                first_attempt=event.attempt,
                node_id=None,
                next_offset=0,
                ending=None,
            )
        case JobDeleted():
            return msgspec.structs.replace(state, deleted=True)
        case _:
            raise TypeError(f"not a job event: {event!r}")

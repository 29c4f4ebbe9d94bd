"""What happened: every fact Shelby records, as frozen msgspec Structs.

The log is public to auditors, so these names and field meanings are part of the
contract (API.md, "Event types"). Evolve a type only by adding fields with defaults;
anything else is a new type plus an upcaster in ``events.codec``.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "ADMIN",
    "ARCHIVE_STREAM",
    "EVENT_TYPES",
    "SYSTEM",
    "Event",
    "HistoryArchived",
    "JobAcked",
    "JobAssigned",
    "JobCreated",
    "JobDeleted",
    "JobFailed",
    "JobFinished",
    "JobReleased",
    "JobRestarted",
    "JobTimedOut",
    "LeaseExpired",
    "LogLine",
    "LogLinesAppended",
    "NodeHeartbeat",
    "NodeRegistered",
    "Resources",
    "ScriptUploaded",
    "UsageReported",
    "actor_of",
    "job_stream",
    "node_stream",
]

LogStream = Literal["stdout", "stderr", "system"]


def job_stream(job_id: str) -> str:
    return f"job-{job_id}"


def node_stream(node_id: str) -> str:
    return f"node-{node_id}"


class Resources(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """What a job asks of the node that runs it; ``None`` asks nothing."""

    cpu_count: int | None = msgspec.field(default=None, name="cpuCount")
    ram_gb: float | None = msgspec.field(default=None, name="ramGB")
    gpus: int | None = None


class LogLine(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    line: str
    timestamp: float
    stream: LogStream = "stdout"
    truncated: bool = False


class Event(msgspec.Struct, frozen=True, kw_only=True, tag=True, rename="camel", gc=False):
    """Base of every event. The tag (``"type"``) is the class name.

    ``gc=False`` (inherited, like ``Resources`` and ``LogLine``): an event is frozen
    data decoded from JSON and can hold no cycle, so the cyclic collector need not
    track it. A replay holds tens of thousands at once, and re-scanning them took a
    quarter of ``shelby rebuild``'s time.
    """


# --- nodes -------------------------------------------------------------------------


class NodeRegistered(Event, frozen=True, kw_only=True):
    """A node joined, or joined again; its previous token stops working."""

    node_id: str
    name: str
    token_hash: str
    specs: dict[str, Any] = {}
    labels: dict[str, str] = {}
    max_concurrent_jobs: int = 1


class NodeHeartbeat(Event, frozen=True, kw_only=True):
    node_id: str
    specs: dict[str, Any] = {}
    running_jobs: list[str] = []


# --- jobs --------------------------------------------------------------------------


class JobCreated(Event, frozen=True, kw_only=True):
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


class ScriptUploaded(Event, frozen=True, kw_only=True):
    job_id: str
    script: str
    requirements: str = ""
    entrypoint: str = "train.py"
    script_hash: str


class JobAssigned(Event, frozen=True, kw_only=True):
    job_id: str
    node_id: str
    attempt: int


class JobAcked(Event, frozen=True, kw_only=True):
    job_id: str
    node_id: str
    attempt: int


class LogLinesAppended(Event, frozen=True, kw_only=True):
    """Lines ``offset`` .. ``offset + len(lines) - 1`` of one attempt's log."""

    job_id: str
    node_id: str
    attempt: int
    offset: int
    lines: list[LogLine]


class UsageReported(Event, frozen=True, kw_only=True):
    """Resources one node spent; on the job's stream when it names a job."""

    node_id: str
    job_id: str | None = None
    attempt: int | None = None
    cpu_seconds: float | None = None
    wall_seconds: float | None = None
    peak_ram_mb: float | None = msgspec.field(default=None, name="peakRamMB")
    gpu_seconds: float | None = None
    # The sender's name for this report, if it gave one: a report sent again (its
    # answer was lost) carries the same one and is recorded once. Added later, so a
    # log written before decodes it as None.
    report_id: str | None = None


class JobFinished(Event, frozen=True, kw_only=True):
    job_id: str
    node_id: str
    attempt: int
    model_hash: str | None
    exit_code: int | None = 0
    metadata: dict[str, Any] = {}


class JobFailed(Event, frozen=True, kw_only=True):
    """The attempt ended in failure: reported by its node, or decided by the server
    (``node_id`` is then the node that held it, or ``None``)."""

    job_id: str
    node_id: str | None
    attempt: int
    exit_code: int | None = None
    error: str | None = None
    model_hash: str | None = None
    metadata: dict[str, Any] = {}
    by_server: bool = False


class LeaseExpired(Event, frozen=True, kw_only=True):
    """The node holding the attempt went silent; ``requeued`` is false when no
    attempts were left, in which case a ``JobFailed`` follows."""

    job_id: str
    node_id: str
    attempt: int
    requeued: bool


class JobReleased(Event, frozen=True, kw_only=True):
    """The node holding the attempt handed it back unfinished (its agent shut down, or
    found the attempt cut short by an earlier run of itself): an infrastructure event,
    counted against ``maxAttempts`` like ``LeaseExpired``. ``requeued`` is false when
    no attempts were left, in which case a ``JobFailed`` follows."""

    job_id: str
    node_id: str
    attempt: int
    reason: str
    requeued: bool


class JobTimedOut(Event, frozen=True, kw_only=True):
    """The server ended an attempt that outlived the job's timeout; ``JobFailed``
    follows with the error ``timeout``."""

    job_id: str
    node_id: str | None
    attempt: int


class JobRestarted(Event, frozen=True, kw_only=True):
    """A finished or failed job goes back to the queue as ``attempt``."""

    job_id: str
    attempt: int


class JobDeleted(Event, frozen=True, kw_only=True):
    """Tombstone: the job leaves every view; its history stays in the log."""

    job_id: str


# --- the log itself ----------------------------------------------------------------

ARCHIVE_STREAM = "system-archive"


class HistoryArchived(Event, frozen=True, kw_only=True):
    """Old heartbeats and log lines moved, byte for byte, out of the log into the
    segment file ``segment`` (in ``archive/`` beside the SQLite file), in the transaction
    that appends this event (README, "Retention and archives").

    The rows moved are exactly those of the types ``NodeHeartbeat`` and
    ``LogLinesAppended`` with ``seq <= through_seq`` and ``timestamp < before`` that
    have a later event of the same type in their stream at or before ``through_seq``:
    each stream keeps its newest, so folding what stays gives the state folding all
    gives. ``digest`` is SHA-256 over the moved rows' 32-byte hashes in ``seq`` order;
    ``file_hash`` the SHA-256 of the segment file's bytes."""

    segment: str
    first_seq: int
    last_seq: int
    count: int
    digest: str
    file_hash: str
    before: float
    through_seq: int


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        NodeRegistered,
        NodeHeartbeat,
        JobCreated,
        ScriptUploaded,
        JobAssigned,
        JobAcked,
        LogLinesAppended,
        UsageReported,
        JobFinished,
        JobFailed,
        LeaseExpired,
        JobTimedOut,
        JobRestarted,
        JobDeleted,
        JobReleased,
        HistoryArchived,
    )
}


SYSTEM = "system"
ADMIN = "admin"


def actor_of(event: Event) -> str:
    """Who caused an event: ``admin``, a node id, or ``system`` for the server's own
    reactions (lease expiry, timeouts)."""
    match event:
        case LeaseExpired() | JobTimedOut() | HistoryArchived():
            return SYSTEM
        case JobFailed(by_server=True):
            return SYSTEM
        case (
            NodeRegistered()
            | NodeHeartbeat()
            | JobAssigned()
            | JobAcked()
            | LogLinesAppended()
            | UsageReported()
            | JobFinished()
            | JobFailed()
            | JobReleased()
        ):
            return event.node_id or SYSTEM
        case JobCreated() | ScriptUploaded() | JobRestarted() | JobDeleted():
            return ADMIN
        case _:
            raise TypeError(f"unknown event: {event!r}")

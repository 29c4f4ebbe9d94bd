"""The request and response bodies and query strings of the HTTP API, as msgspec types.

The endpoints decode with these and the OpenAPI document is generated from them, so
what is documented is what is enforced. Field names are camelCase on the wire.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from shelby.api.views import ArchivedLinesView, JobView, LogLineView, NodeView
from shelby.scheduler import Assigned

__all__ = [
    "AckRequest",
    "AckResponse",
    "AuditEvent",
    "AuditEvents",
    "AuditQuery",
    "CreateJobRequest",
    "DeleteResponse",
    "ErrorResponse",
    "FetchScriptQuery",
    "FetchScriptResponse",
    "FinishRequest",
    "FinishResponse",
    "HeartbeatRequest",
    "HeartbeatResponse",
    "Identifier",
    "JobList",
    "JobListQuery",
    "LogLineIn",
    "LogsQuery",
    "LogsResponse",
    "NodeList",
    "OkResponse",
    "PollQuery",
    "PollResponse",
    "RegisterRequest",
    "RegisterResponse",
    "ReleaseRequest",
    "ReleaseResponse",
    "ResourcesRequest",
    "StreamLogRequest",
    "StreamLogResponse",
    "UploadScriptRequest",
    "UploadScriptResponse",
    "UsageReportRequest",
    "is_plain_relative_path",
]

Identifier = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$",
        description="Letters, digits and . _ : - (at most 128), starting with a letter or digit.",
    ),
]
ModelHash = Annotated[str, Meta(pattern=r"^sha256:[0-9a-f]{64}$")]
NonNegative = Annotated[float, Meta(ge=0)]
Status = Literal["pending", "assigned", "running", "finished", "failed"]
LogStream = Literal["stdout", "stderr", "system"]


class _Wire(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """camelCase on the wire."""


class ErrorResponse(_Wire, frozen=True):
    detail: str


class OkResponse(_Wire, frozen=True):
    ok: bool = True


# --- job management -------------------------------------------------------------------


def is_plain_relative_path(path: str) -> bool:
    """A path inside the job's directory: relative, no ``..``, ``.``, empty parts,
    backslashes, drive letters or control characters."""
    if not path or len(path) > 255 or path.startswith("/"):
        return False
    if any(c in path for c in "\\:") or any(ord(c) < 32 for c in path):
        return False
    parts = path.split("/")
    return all(p not in ("", ".", "..") for p in parts) and not PurePosixPath(path).is_absolute()


class ResourcesRequest(_Wire, frozen=True):
    cpu_count: Annotated[int, Meta(ge=0)] | None = None
    ram_gb: NonNegative | None = msgspec.field(default=None, name="ramGB")
    gpus: Annotated[int, Meta(ge=0)] | None = None


class CreateJobRequest(_Wire, frozen=True):
    job_id: Identifier | None = None
    dataset_name: str | None = None
    dataset_url: str | None = None
    dataset_hash: str | None = None
    runtime_minutes_estimate: NonNegative | None = None
    meta: dict[str, Any] = {}
    max_attempts: Annotated[int, Meta(ge=1, le=100)] = 3
    timeout_minutes: Annotated[float, Meta(gt=0)] | None = msgspec.field(
        default=None
    )  # default: twice the estimate, else 60
    resources: ResourcesRequest | None = None
    labels: dict[str, str] = {}


class UploadScriptRequest(_Wire, frozen=True):
    job_id: Identifier
    script: str
    requirements: str = ""
    entrypoint: str = "train.py"

    def __post_init__(self) -> None:
        if not is_plain_relative_path(self.entrypoint):
            raise ValueError(
                f"entrypoint: {self.entrypoint!r} is not a plain relative path inside the"
                " job's directory"
            )


class UploadScriptResponse(_Wire, frozen=True):
    job_id: str
    script_hash: str
    entrypoint: str


class DeleteResponse(_Wire, frozen=True):
    job_id: str
    deleted: bool


class JobListQuery(_Wire, frozen=True):
    status: Status | None = None
    limit: Annotated[int, Meta(ge=1, le=1000)] = 50


class JobList(_Wire, frozen=True):
    jobs: list[JobView]
    count: int


class NodeList(_Wire, frozen=True):
    nodes: list[NodeView]
    count: int


class LogsQuery(_Wire, frozen=True):
    limit: Annotated[int, Meta(ge=1, le=10_000)] = 1000
    after: Annotated[int, Meta(ge=-1)] | None = None
    attempt: Annotated[int, Meta(ge=1)] | None = None


class LogsResponse(_Wire, frozen=True):
    job_id: str
    attempt: int
    logs: list[LogLineView]
    count: int
    # Where lines of this attempt went that retention archived (empty: none did).
    archived: list[ArchivedLinesView] = []


# --- agents ---------------------------------------------------------------------------


class RegisterRequest(_Wire, frozen=True):
    node_id: Identifier | None = None
    name: str | None = None
    specs: dict[str, Any] = {}
    labels: dict[str, str] = {}
    max_concurrent_jobs: Annotated[int, Meta(ge=1, le=1024)] = 1


class RegisterResponse(_Wire, frozen=True):
    node_id: str
    token: str
    heartbeat_interval_seconds: float
    lease_seconds: float


class HeartbeatRequest(_Wire, frozen=True):
    node_id: str
    specs: dict[str, Any] = {}
    running_jobs: list[str] = []


class HeartbeatResponse(_Wire, frozen=True):
    ok: bool
    cancel_jobs: list[str]


class PollQuery(_Wire, frozen=True):
    node_id: str
    wait: Annotated[float, Meta(ge=0, le=30)] = 0.0


class PollResponse(_Wire, frozen=True):
    job: Assigned | None


class AckRequest(_Wire, frozen=True):
    job_id: str
    node_id: str
    attempt: int | None = None


class AckResponse(_Wire, frozen=True):
    job_id: str
    status: str
    started_at: float | None
    attempt: int


class FetchScriptQuery(_Wire, frozen=True):
    job_id: str
    node_id: str


class FetchScriptResponse(_Wire, frozen=True):
    job_id: str
    script: str
    requirements: str
    entrypoint: str
    script_hash: str


class LogLineIn(_Wire, frozen=True):
    line: str
    timestamp: float
    stream: LogStream = "stdout"


class StreamLogRequest(_Wire, frozen=True):
    """The batch form (``offset`` and ``lines``) or the single-line form (``line`` and
    ``timestamp``, appended after the last stored line)."""

    job_id: str
    node_id: str
    attempt: int | None = None
    offset: Annotated[int, Meta(ge=0)] | None = None
    lines: list[LogLineIn] | None = None
    line: str | None = None
    timestamp: float | None = None
    stream: LogStream = "stdout"

    def __post_init__(self) -> None:
        if self.lines is None and self.line is None:
            raise ValueError("lines: give either `lines` or `line`")


class StreamLogResponse(_Wire, frozen=True):
    accepted: int
    next_offset: int


class UsageReportRequest(_Wire, frozen=True):
    node_id: str
    job_id: str | None = None
    attempt: int | None = None
    cpu_seconds: NonNegative | None = None
    wall_seconds: NonNegative | None = None
    peak_ram_mb: NonNegative | None = msgspec.field(default=None, name="peakRamMB")
    gpu_seconds: NonNegative | None = None


class FinishRequest(_Wire, frozen=True):
    job_id: str
    node_id: str
    status: Literal["finished", "failed"]
    attempt: int | None = None
    model_hash: ModelHash | None = None
    exit_code: int | None = None
    error: str | None = None
    metadata: dict[str, Any] = {}

    def __post_init__(self) -> None:
        if self.status == "finished" and self.model_hash is None:
            raise ValueError("modelHash: a finished job names its model's hash")


class FinishResponse(_Wire, frozen=True):
    job_id: str
    status: str


class ReleaseRequest(_Wire, frozen=True):
    """The node hands back an attempt it will not see through (its agent is shutting
    down, or found the attempt cut short by an earlier run of itself)."""

    job_id: str
    node_id: str
    attempt: Annotated[int, Meta(ge=1)]
    reason: Annotated[str, Meta(max_length=1000)] = ""


class ReleaseResponse(_Wire, frozen=True):
    """The job after the release: ``pending`` on the next attempt, or ``failed`` when
    the released attempt was its last."""

    job_id: str
    status: str
    attempt: int


# --- audit ----------------------------------------------------------------------------


class AuditQuery(_Wire, frozen=True):
    after: Annotated[int, Meta(ge=0)] = 0
    limit: Annotated[int, Meta(ge=1, le=10_000)] = 1000


class AuditEvent(_Wire, frozen=True):
    seq: int
    stream: str
    version: int
    type: str
    timestamp: float
    data: msgspec.Raw  # the canonical text exactly as hashed
    prev_hash: str
    hash: str


class AuditEvents(_Wire, frozen=True):
    events: list[AuditEvent]

"""The request and response bodies and query strings of the HTTP API, as msgspec types.

The endpoints decode with these and the OpenAPI document is generated from them, so
what is documented is what is enforced. Field names are camelCase on the wire.
"""

from __future__ import annotations

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
    "FinishBody",
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
    "StreamLogBody",
    "StreamLogRequest",
    "StreamLogResponse",
    "UploadScriptRequest",
    "UploadScriptResponse",
    "UsageReportRequest",
]

Identifier = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$(?!\n)",  # (?!\n): see RELATIVE_PATH
        description="Letters, digits and . _ : - (at most 128), starting with a letter or digit.",
    ),
]
ModelHash = Annotated[str, Meta(pattern=r"^sha256:[0-9a-f]{64}$(?!\n)")]
# Numbers are bounded where the server computes with them or hands them to the database:
# a position beyond what SQLite's INTEGER and PostgreSQL's BIGINT hold made the driver
# raise (a 500), and a doubled estimate or a sum of reports beyond a float's range
# becomes infinity, which JSON cannot carry.
MAX_INT64 = 2**63 - 1
Position = Annotated[int, Meta(ge=0, le=MAX_INT64)]
Attempt = Annotated[int, Meta(ge=1, le=2**31 - 1)]
Count = Annotated[int, Meta(ge=0, le=2**31 - 1)]
ExitCode = Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)]
Minutes = Annotated[float, Meta(gt=0, le=10_000_000)]  # about 19 years
NonNegative = Annotated[float, Meta(ge=0, le=1e15)]
Status = Literal["pending", "assigned", "running", "finished", "failed"]
LogStream = Literal["stdout", "stderr", "system"]


class _Wire(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """camelCase on the wire."""


class ErrorResponse(_Wire, frozen=True):
    detail: str


class OkResponse(_Wire, frozen=True):
    ok: bool = True


# Free-form JSON (a job's ``meta``, a node's ``specs``, a finish's ``metadata``) is kept in
# events and written again by every view; a value nested deeper than any real document
# would only cost stack on every later read, and near the interpreter's recursion limit
# the standard library's encoder of the canonical bytes gives up.
MAX_DEPTH = 32
FreeForm = Annotated[
    dict[str, Any], Meta(description=f"Any JSON object, nested at most {MAX_DEPTH} levels deep.")
]


def check_depth(field: str, value: Any) -> None:
    """Raise (a 422 naming ``field``) when ``value`` nests deeper than ``MAX_DEPTH``."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"{field}: nested deeper than {MAX_DEPTH} levels")
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))


# --- job management -------------------------------------------------------------------


# A path inside the job's directory: relative, parts separated by "/", none of them
# empty, "." or "..", and no backslash, colon (drive letters) or control character. The
# same pattern is in the OpenAPI document, so clients and fuzzers know the rule. Python's
# ``$``, which msgspec's check uses, also matches before a final newline ("train.py\n"
# passed); ``(?!\n)`` holds it to the very end (ECMA-262's ``$`` is that already).
_CHAR = r"[^/\\:\x00-\x1f]"
_FIRST = r"[^./\\:\x00-\x1f]"  # neither "." nor ".." may be a whole part
_PART = rf"(?:{_FIRST}{_CHAR}*|\.{_FIRST}{_CHAR}*|\.\.{_CHAR}+)"
RELATIVE_PATH = rf"^{_PART}(?:/{_PART})*$(?!\n)"
RelativePath = Annotated[
    str,
    Meta(
        pattern=RELATIVE_PATH,
        min_length=1,
        max_length=255,
        description="A relative path inside the job's directory: no empty, `.` or `..`"
        " parts, no backslash, colon or control character.",
    ),
]


class ResourcesRequest(_Wire, frozen=True):
    cpu_count: Count | None = None
    ram_gb: NonNegative | None = msgspec.field(default=None, name="ramGB")
    gpus: Count | None = None


class CreateJobRequest(_Wire, frozen=True):
    job_id: Identifier | None = None
    dataset_name: str | None = None
    dataset_url: str | None = None
    dataset_hash: str | None = None
    runtime_minutes_estimate: Annotated[float, Meta(ge=0, le=10_000_000)] | None = None
    meta: FreeForm = {}
    max_attempts: Annotated[int, Meta(ge=1, le=100)] = 3
    timeout_minutes: Minutes | None = None  # default: twice the estimate, else 60
    resources: ResourcesRequest | None = None
    labels: dict[str, str] = {}

    def __post_init__(self) -> None:
        check_depth("meta", self.meta)


class UploadScriptRequest(_Wire, frozen=True):
    job_id: Identifier
    script: str
    requirements: str = ""
    entrypoint: RelativePath = "train.py"


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
    after: Annotated[int, Meta(ge=-1, le=MAX_INT64)] | None = None
    attempt: Attempt | None = None


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
    specs: FreeForm = {}
    labels: dict[str, str] = {}
    max_concurrent_jobs: Annotated[int, Meta(ge=1, le=1024)] = 1

    def __post_init__(self) -> None:
        check_depth("specs", self.specs)


class RegisterResponse(_Wire, frozen=True):
    node_id: str
    token: str
    heartbeat_interval_seconds: float
    lease_seconds: float


class HeartbeatRequest(_Wire, frozen=True):
    node_id: str
    specs: FreeForm = {}
    running_jobs: list[str] = []

    def __post_init__(self) -> None:
        check_depth("specs", self.specs)


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
    attempt: Attempt | None = None


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
    attempt: Attempt | None = None
    offset: Position | None = None
    lines: list[LogLineIn] | None = None
    line: str | None = None
    timestamp: float | None = None
    stream: LogStream = "stdout"

    def __post_init__(self) -> None:
        if self.lines is None and self.line is None:
            raise ValueError("lines: give either `lines` or `line`")


# The rule ``__post_init__`` enforces, in the OpenAPI document too.
StreamLogBody = Annotated[
    StreamLogRequest,
    Meta(
        extra_json_schema={
            "anyOf": [
                {"required": ["lines"], "properties": {"lines": {"type": "array"}}},
                {"required": ["line"], "properties": {"line": {"type": "string"}}},
            ]
        }
    ),
]


class StreamLogResponse(_Wire, frozen=True):
    accepted: int
    next_offset: int


class UsageReportRequest(_Wire, frozen=True):
    node_id: str
    job_id: str | None = None
    attempt: Attempt | None = None
    cpu_seconds: NonNegative | None = None
    wall_seconds: NonNegative | None = None
    peak_ram_mb: NonNegative | None = msgspec.field(default=None, name="peakRamMB")
    gpu_seconds: NonNegative | None = None
    # Beyond API.md: a report sent again under the same id is recorded once (README).
    report_id: Identifier | None = None


class FinishRequest(_Wire, frozen=True):
    job_id: str
    node_id: str
    status: Literal["finished", "failed"]
    attempt: Attempt | None = None
    model_hash: ModelHash | None = None
    exit_code: ExitCode | None = None
    error: str | None = None
    metadata: FreeForm = {}

    def __post_init__(self) -> None:
        check_depth("metadata", self.metadata)
        if self.status == "finished" and self.model_hash is None:
            raise ValueError("modelHash: a finished job names its model's hash")


# The rule ``__post_init__`` enforces, in the OpenAPI document too.
FinishBody = Annotated[
    FinishRequest,
    Meta(
        extra_json_schema={
            "anyOf": [
                {"properties": {"status": {"const": "failed"}}},
                {"required": ["modelHash"], "properties": {"modelHash": {"type": "string"}}},
            ]
        }
    ),
]


class FinishResponse(_Wire, frozen=True):
    job_id: str
    status: str


class ReleaseRequest(_Wire, frozen=True):
    """The node hands back an attempt it will not see through (its agent is shutting
    down, or found the attempt cut short by an earlier run of itself)."""

    job_id: str
    node_id: str
    attempt: Attempt
    reason: Annotated[str, Meta(max_length=1000)] = ""


class ReleaseResponse(_Wire, frozen=True):
    """The job after the release: ``pending`` on the next attempt, or ``failed`` when
    the released attempt was its last."""

    job_id: str
    status: str
    attempt: int


# --- audit ----------------------------------------------------------------------------


class AuditQuery(_Wire, frozen=True):
    after: Position = 0
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

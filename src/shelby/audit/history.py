"""A job's story, read from its raw events alone: what it was asked to do, with which
script, and what each attempt did. The attestation and the PROV view are both written
from this, so the server and an auditor holding the same events get the same answer
(and ``shelby audit`` checks that they do)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import msgspec

from shelby.audit.verification import AuditEvent

__all__ = ["Attempt", "JobHistory", "read_history"]


class Attempt(msgspec.Struct, kw_only=True):
    number: int
    node_id: str | None = None
    assigned_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    # finished, failed, lease-expired, timed-out, or None while it runs
    outcome: str | None = None
    exit_code: int | None = None
    error: str | None = None
    model_hash: str | None = None
    seqs: list[int] = msgspec.field(default_factory=list)


class JobHistory(msgspec.Struct, kw_only=True):
    job_id: str
    created: dict[str, Any]
    script: dict[str, Any] | None
    attempts: list[Attempt]
    deleted: bool
    events: list[AuditEvent]

    @property
    def stream(self) -> str:
        return f"job-{self.job_id}"

    def requirements_digest(self) -> str | None:
        if self.script is None:
            return None
        text = self.script.get("requirements") or ""
        return hashlib.sha256(text.encode()).hexdigest()

    def produced(self) -> Attempt | None:
        """The latest attempt that finished with a model: the run the model came from."""
        for attempt in reversed(self.attempts):
            if attempt.outcome == "finished" and attempt.model_hash:
                return attempt
        return None


def read_history(job_id: str, events: Sequence[AuditEvent]) -> JobHistory:
    """Raises ``ValueError`` when the events are not one job's stream from its start."""
    if not events or events[0].type != "JobCreated":
        raise ValueError(f"the events of job {job_id} do not start with JobCreated")
    history = JobHistory(
        job_id=job_id,
        created=dict(events[0].data),
        script=None,
        attempts=[],
        deleted=False,
        events=list(events),
    )
    by_number: dict[int, Attempt] = {}

    def attempt(n: int) -> Attempt:
        if n not in by_number:
            by_number[n] = Attempt(number=n)
            history.attempts.append(by_number[n])
        return by_number[n]

    for e in events:
        d = e.data
        n = d.get("attempt")
        n = n if isinstance(n, int) else 0  # events without an attempt never use it
        match e.type:
            case "JobCreated" | "LogLinesAppended" | "UsageReported" | "JobRestarted":
                pass
            case "ScriptUploaded":
                history.script = dict(d)
            case "JobAssigned":
                a = attempt(n)
                a.node_id, a.assigned_at = d.get("nodeId"), e.timestamp
            case "JobAcked":
                attempt(n).started_at = e.timestamp
            case "JobFinished" | "JobFailed":
                a = attempt(n)
                a.ended_at = e.timestamp
                a.outcome = "finished" if e.type == "JobFinished" else "failed"
                a.exit_code, a.error = d.get("exitCode"), d.get("error")
                a.model_hash = d.get("modelHash")
                a.node_id = a.node_id or d.get("nodeId")
            case "LeaseExpired":
                a = attempt(n)
                a.ended_at, a.outcome = e.timestamp, "lease-expired"
            case "JobReleased":
                a = attempt(n)
                a.ended_at, a.outcome = e.timestamp, "released"
            case "JobTimedOut":
                a = attempt(n)
                a.ended_at, a.outcome = e.timestamp, "timed-out"
            case "JobDeleted":
                history.deleted = True
            case _:
                # An event type newer than this reader: it is still hashed and proven,
                # it just adds nothing to the story told here.
                pass
        if n in by_number:
            by_number[n].seqs.append(e.seq)
    return history

"""Portable attestations: an in-toto Statement v1 whose predicate is SLSA Provenance v1,
saying which model a job produced from which dataset, script and requirements, on which
node, in which attempts; signed in a DSSE envelope by the server's key.

The statement is a pure function of the job's raw events, so an auditor who verified
those events can build it too and compare (``shelby audit --export`` does). Every
field is documented in docs/provenance.md.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from shelby.audit import dsse
from shelby.audit.history import Attempt, JobHistory
from shelby.audit.keys import SigningKey

__all__ = [
    "BUILD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "NoModel",
    "attest",
    "canonical_json",
    "digest_of",
    "rfc3339",
    "statement",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:shelby:build-type:training-job:v1"
_HEX = re.compile(r"[0-9a-fA-F]+")


class NoModel(ValueError):
    """The job has not (yet) finished with a model: there is nothing to attest."""


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def digest_of(text: str | None) -> dict[str, str]:
    """A DigestSet from ``sha256:<hex>`` (or ``<alg>:<hex>``), or a bare SHA-256 hex;
    ``{}`` for anything else (kept as an annotation by the caller)."""
    if not text:
        return {}
    alg, sep, value = text.partition(":")
    if sep and alg and _HEX.fullmatch(value):
        return {alg.lower(): value.lower()}
    if not sep and len(text) == 64 and _HEX.fullmatch(text):
        return {"sha256": text.lower()}
    return {}


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _node_uri(node_id: str | None) -> str:
    return f"urn:shelby:node:{node_id or 'unknown'}"


def _attempt_descriptor(job_id: str, a: Attempt) -> dict[str, Any]:
    notes: dict[str, Any] = {"attempt": a.number, "nodeId": a.node_id, "outcome": a.outcome}
    for key, value in (
        ("assignedAt", a.assigned_at),
        ("startedAt", a.started_at),
        ("endedAt", a.ended_at),
        ("exitCode", a.exit_code),
        ("error", a.error),
        ("modelHash", a.model_hash),
    ):
        if value is not None:
            notes[key] = value
    notes["eventSeqs"] = a.seqs
    return {
        "name": f"attempt-{a.number}",
        "uri": f"urn:shelby:job:{job_id}:attempt:{a.number}",
        "annotations": notes,
    }


def _dependencies(h: JobHistory) -> list[dict[str, Any]]:
    deps: list[dict[str, Any]] = []
    created = h.created
    dataset: dict[str, Any] = {"name": "dataset"}
    if created.get("datasetUrl"):
        dataset["uri"] = created["datasetUrl"]
    digest = digest_of(created.get("datasetHash"))
    if digest:
        dataset["digest"] = digest
    elif created.get("datasetHash"):
        dataset["annotations"] = {"datasetHash": created["datasetHash"]}
    if "uri" in dataset or "digest" in dataset:
        if created.get("datasetName"):
            dataset.setdefault("annotations", {})["datasetName"] = created["datasetName"]
        deps.append(dataset)
    if h.script is not None:
        deps.append(
            {
                "name": h.script.get("entrypoint") or "train.py",
                "digest": digest_of(h.script.get("scriptHash")),
                "annotations": {"role": "script"},
            }
        )
        deps.append(
            {
                "name": "requirements.txt",
                "digest": {"sha256": h.requirements_digest()},
                "annotations": {"role": "requirements"},
            }
        )
    return deps


def statement(h: JobHistory) -> dict[str, Any]:
    """The in-toto Statement for the model the job produced; ``NoModel`` if none."""
    run = h.produced()
    if run is None or not digest_of(run.model_hash):
        raise NoModel(f"job {h.job_id} has not finished with a model hash")
    created = h.created
    first, last = h.events[0], h.events[-1]
    metadata: dict[str, Any] = {"invocationId": f"{h.job_id}/attempt-{run.number}"}
    if run.started_at is not None:
        metadata["startedOn"] = rfc3339(run.started_at)
    if run.ended_at is not None:
        metadata["finishedOn"] = rfc3339(run.ended_at)
    log = {
        "name": "event-log",
        "uri": f"urn:shelby:stream:{h.stream}",
        # The last event's chain hash commits to it and, through prevHash, to the log
        # before it: an auditor proves it is in the log with an inclusion proof.
        "digest": {"sha256": last.hash},
        "annotations": {
            "stream": h.stream,
            "firstSeq": first.seq,
            "lastSeq": last.seq,
            "deleted": h.deleted,
            "events": [{"seq": e.seq, "type": e.type, "hash": e.hash} for e in h.events],
        },
    }
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f"{h.job_id}/model", "digest": digest_of(run.model_hash)}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "jobId": h.job_id,
                    "datasetName": created.get("datasetName"),
                    "datasetUrl": created.get("datasetUrl"),
                    "datasetHash": created.get("datasetHash"),
                    "runtimeMinutesEstimate": created.get("runtimeMinutesEstimate"),
                    "entrypoint": (h.script or {}).get("entrypoint"),
                    "meta": created.get("meta") or {},
                },
                "internalParameters": {
                    "maxAttempts": created.get("maxAttempts"),
                    "timeoutMinutes": created.get("timeoutMinutes"),
                    "resources": created.get("resources"),
                    "labels": created.get("labels") or {},
                },
                "resolvedDependencies": _dependencies(h),
            },
            "runDetails": {
                "builder": {"id": _node_uri(run.node_id)},
                "metadata": metadata,
                "byproducts": [
                    *(_attempt_descriptor(h.job_id, a) for a in h.attempts),
                    log,
                ],
            },
        },
    }


def attest(h: JobHistory, key: SigningKey) -> dsse.Envelope:
    """The statement, signed in a DSSE envelope."""
    return dsse.sign(canonical_json(statement(h)), key)

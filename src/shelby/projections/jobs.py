"""The job views: one row per live job, counts by status, and each job's script."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shelby.events.store import Recorded
from shelby.events.types import (
    JobAcked,
    JobAssigned,
    JobCreated,
    JobDeleted,
    JobFailed,
    JobFinished,
    JobReleased,
    JobRestarted,
    LeaseExpired,
    ScriptUploaded,
)
from shelby.projections._sql import Statement, event_names, to_json

__all__ = ["JOB_COLUMNS", "STATUSES", "JobsProjection"]

STATUSES = ("pending", "assigned", "running", "finished", "failed")

JOB_COLUMNS = (
    "job_id, status, dataset_name, dataset_url, dataset_hash, runtime_minutes_estimate,"
    " meta, max_attempts, timeout_minutes, resources, labels, created_at, attempt,"
    " assigned_node, assigned_at, started_at, finished_at, model_hash, exit_code, error,"
    " metadata, entrypoint, script_hash, created_seq"
)

_LEAVE = "UPDATE job_counts SET n = n - 1 WHERE status = (SELECT status FROM jobs WHERE job_id = ?)"
_ENTER = "UPDATE job_counts SET n = n + 1 WHERE status = ?"


def _move(job_id: str, status: str, sets: str, params: Sequence[Any]) -> list[Statement]:
    """Statements that move a job to ``status``, keeping the counts in step."""
    return [
        (_LEAVE, (job_id,)),
        (_ENTER, (status,)),
        (f"UPDATE jobs SET status = ?, {sets} WHERE job_id = ?", (status, *params, job_id)),
    ]


class JobsProjection:
    name = "jobs"
    handles = event_names(
        JobCreated,
        ScriptUploaded,
        JobAssigned,
        JobAcked,
        JobFinished,
        JobFailed,
        LeaseExpired,
        JobReleased,
        JobRestarted,
        JobDeleted,
    )
    superseded: frozenset[str] = frozenset()
    version = 2  # 2: JobReleased
    tables = ("jobs", "job_counts", "scripts")
    ddl = (
        """CREATE TABLE IF NOT EXISTS jobs (
            job_id TEXT PRIMARY KEY,
            created_seq BIGINT NOT NULL,
            status TEXT NOT NULL,
            dataset_name TEXT,
            dataset_url TEXT,
            dataset_hash TEXT,
            runtime_minutes_estimate DOUBLE PRECISION,
            meta TEXT NOT NULL,
            max_attempts INTEGER NOT NULL,
            timeout_minutes DOUBLE PRECISION NOT NULL,
            resources TEXT,
            labels TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            attempt INTEGER NOT NULL,
            assigned_node TEXT,
            assigned_at DOUBLE PRECISION,
            started_at DOUBLE PRECISION,
            finished_at DOUBLE PRECISION,
            model_hash TEXT,
            exit_code INTEGER,
            error TEXT,
            metadata TEXT,
            entrypoint TEXT,
            script_hash TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_seq)",
        "CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_seq)",
        "CREATE INDEX IF NOT EXISTS jobs_by_node ON jobs (assigned_node, status)",
        """CREATE TABLE IF NOT EXISTS job_counts (
            status TEXT PRIMARY KEY,
            n BIGINT NOT NULL
        )""",
        *(
            f"INSERT INTO job_counts (status, n) VALUES ('{s}', 0) ON CONFLICT (status) DO NOTHING"
            for s in STATUSES
        ),
        """CREATE TABLE IF NOT EXISTS scripts (
            job_id TEXT PRIMARY KEY,
            script TEXT NOT NULL,
            requirements TEXT NOT NULL,
            entrypoint TEXT NOT NULL,
            script_hash TEXT NOT NULL
        )""",
    )

    def apply(self, rec: Recorded) -> list[Statement]:
        e = rec.event
        match e:
            case JobCreated():
                return [
                    (
                        "INSERT INTO jobs (job_id, created_seq, status, dataset_name,"
                        " dataset_url, dataset_hash, runtime_minutes_estimate, meta,"
                        " max_attempts, timeout_minutes, resources, labels, created_at,"
                        " attempt) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
                        (
                            e.job_id,
                            rec.seq,
                            e.dataset_name,
                            e.dataset_url,
                            e.dataset_hash,
                            e.runtime_minutes_estimate,
                            to_json(e.meta),
                            e.max_attempts,
                            e.timeout_minutes,
                            None if e.resources is None else to_json(e.resources),
                            to_json(e.labels),
                            rec.timestamp,
                        ),
                    ),
                    (_ENTER, ("pending",)),
                ]
            case ScriptUploaded():
                return [
                    (
                        "UPDATE jobs SET entrypoint = ?, script_hash = ? WHERE job_id = ?",
                        (e.entrypoint, e.script_hash, e.job_id),
                    ),
                    (
                        "INSERT INTO scripts (job_id, script, requirements, entrypoint,"
                        " script_hash) VALUES (?, ?, ?, ?, ?) ON CONFLICT (job_id) DO UPDATE"
                        " SET script = excluded.script, requirements = excluded.requirements,"
                        " entrypoint = excluded.entrypoint, script_hash = excluded.script_hash",
                        (e.job_id, e.script, e.requirements, e.entrypoint, e.script_hash),
                    ),
                ]
            case JobAssigned():
                return _move(
                    e.job_id,
                    "assigned",
                    "assigned_node = ?, attempt = ?, assigned_at = ?, started_at = NULL,"
                    " finished_at = NULL, model_hash = NULL, exit_code = NULL, error = NULL,"
                    " metadata = NULL",
                    (e.node_id, e.attempt, rec.timestamp),
                )
            case JobAcked():
                return _move(e.job_id, "running", "started_at = ?", (rec.timestamp,))
            case JobFinished():
                return _move(
                    e.job_id,
                    "finished",
                    "finished_at = ?, model_hash = ?, exit_code = ?, error = NULL, metadata = ?",
                    (rec.timestamp, e.model_hash, e.exit_code, to_json(e.metadata)),
                )
            case JobFailed():
                return _move(
                    e.job_id,
                    "failed",
                    "finished_at = ?, model_hash = ?, exit_code = ?, error = ?, metadata = ?",
                    (rec.timestamp, e.model_hash, e.exit_code, e.error, to_json(e.metadata)),
                )
            case LeaseExpired(requeued=True) | JobReleased(requeued=True):
                return _move(
                    e.job_id,
                    "pending",
                    "attempt = attempt + 1, assigned_node = NULL, assigned_at = NULL,"
                    " started_at = NULL",
                    (),
                )
            case JobRestarted():
                return _move(
                    e.job_id,
                    "pending",
                    "attempt = ?, assigned_node = NULL, assigned_at = NULL, started_at = NULL,"
                    " finished_at = NULL, model_hash = NULL, exit_code = NULL, error = NULL,"
                    " metadata = NULL",
                    (e.attempt,),
                )
            case JobDeleted():
                return [
                    (_LEAVE, (e.job_id,)),
                    ("DELETE FROM jobs WHERE job_id = ?", (e.job_id,)),
                    ("DELETE FROM scripts WHERE job_id = ?", (e.job_id,)),
                ]
            case LeaseExpired() | JobReleased():
                return []  # not requeued: the JobFailed that follows moves the job
            case _:
                raise TypeError(f"{self.name} does not handle {rec.type}")

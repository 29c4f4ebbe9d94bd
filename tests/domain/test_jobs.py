"""The job decider, given/when/then: ``decide(command, fold(given)) == expected``.

Pure functions only: no database, no event loop, no clock.
"""

from __future__ import annotations

import hashlib

import pytest

from shelby.domain import JOBS, Conflict, NotFound
from shelby.domain.jobs import (
    AckJob,
    AppendLogLines,
    AssignJob,
    CreateJob,
    DeleteJob,
    ExpireLease,
    FinishJob,
    JobCommand,
    JobState,
    JobStatus,
    ReleaseJob,
    ReportJobUsage,
    RestartJob,
    TimeOutJob,
    UploadScript,
)
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

J = "j1"
N = "n1"
OTHER = "n2"
SCRIPT = "print('hello')\n"
# Written out here rather than taken from the code under test.
SCRIPT_HASH = "sha256:" + hashlib.sha256(SCRIPT.encode("utf-8")).hexdigest()


def state_of(given: list[Event]) -> JobState:
    return JOBS.fold(JOBS.initial_state(), given)


def when(given: list[Event], command: JobCommand) -> list[Event]:
    return JOBS.decide(command, state_of(given))


def lines(*texts: str) -> list[LogLine]:
    return [LogLine(line=t, timestamp=1_700_000_000.0 + i) for i, t in enumerate(texts)]


# --- histories -----------------------------------------------------------------------

CREATED = JobCreated(job_id=J, max_attempts=3)
UPLOADED = ScriptUploaded(job_id=J, script=SCRIPT, script_hash=SCRIPT_HASH)


def assigned(attempt: int = 1, node: str = N) -> JobAssigned:
    return JobAssigned(job_id=J, node_id=node, attempt=attempt)


def acked(attempt: int = 1, node: str = N) -> JobAcked:
    return JobAcked(job_id=J, node_id=node, attempt=attempt)


def finished(attempt: int = 1, node: str = N) -> JobFinished:
    return JobFinished(job_id=J, node_id=node, attempt=attempt, model_hash="sha256:ab", exit_code=0)


def failed(attempt: int = 1, node: str = N) -> JobFailed:
    return JobFailed(job_id=J, node_id=node, attempt=attempt, exit_code=2, error="boom")


PENDING = [CREATED, UPLOADED]
ASSIGNED = [*PENDING, assigned()]
RUNNING = [*ASSIGNED, acked()]
FINISHED = [*RUNNING, finished()]
FAILED = [*RUNNING, failed()]
DELETED = [*PENDING, JobDeleted(job_id=J)]


def finish(status: str = "finished", attempt: int | None = 1, node: str = N) -> FinishJob:
    if status == "finished":
        return FinishJob(
            job_id=J, node_id=node, attempt=attempt, status="finished", model_hash="sha256:ab"
        )
    return FinishJob(
        job_id=J, node_id=node, attempt=attempt, status="failed", exit_code=2, error="boom"
    )


# --- create --------------------------------------------------------------------------


def test_create_records_every_field() -> None:
    """Creating a new job records JobCreated with everything the command carried."""
    command = CreateJob(
        job_id=J,
        dataset_name="mnist",
        dataset_url="https://example.invalid/mnist.tgz",
        dataset_hash="sha256:00",
        runtime_minutes_estimate=12.5,
        meta={"lr": 1e-5, "tags": ["a", "ü"]},
        max_attempts=5,
        timeout_minutes=25.0,
        resources=Resources(cpu_count=4, ram_gb=8.0, gpus=1),
        labels={"zone": "eu-1"},
    )
    assert when([], command) == [
        JobCreated(
            job_id=J,
            dataset_name="mnist",
            dataset_url="https://example.invalid/mnist.tgz",
            dataset_hash="sha256:00",
            runtime_minutes_estimate=12.5,
            meta={"lr": 1e-5, "tags": ["a", "ü"]},
            max_attempts=5,
            timeout_minutes=25.0,
            resources=Resources(cpu_count=4, ram_gb=8.0, gpus=1),
            labels={"zone": "eu-1"},
        )
    ]


def test_created_job_is_pending_on_attempt_one() -> None:
    """A new job is pending, on attempt 1, without a script."""
    state = state_of([CREATED])
    assert (state.status, state.attempt, state.has_script) == (JobStatus.PENDING, 1, False)


@pytest.mark.parametrize(
    "given", [[CREATED], FINISHED, DELETED], ids=["existing", "ended", "deleted"]
)
def test_create_of_an_existing_or_deleted_id_conflicts(given: list[Event]) -> None:
    """A job id that exists, or ever existed, cannot be created again (409)."""
    with pytest.raises(Conflict):
        when(given, CreateJob(job_id=J))


# --- upload --------------------------------------------------------------------------


def test_upload_records_the_scripts_sha256() -> None:
    """Uploading a script records it with the SHA-256 of its UTF-8 bytes and train.py."""
    assert when([CREATED], UploadScript(job_id=J, script=SCRIPT)) == [
        ScriptUploaded(
            job_id=J, script=SCRIPT, requirements="", entrypoint="train.py", script_hash=SCRIPT_HASH
        )
    ]


def test_upload_again_while_pending_replaces_the_script() -> None:
    """A pending job's script may be replaced by a second upload."""
    new = "print('v2')"
    assert when(PENDING, UploadScript(job_id=J, script=new, entrypoint="main.py")) == [
        ScriptUploaded(
            job_id=J,
            script=new,
            entrypoint="main.py",
            script_hash="sha256:" + hashlib.sha256(new.encode()).hexdigest(),
        )
    ]


@pytest.mark.parametrize(
    "given",
    [ASSIGNED, RUNNING, FINISHED, FAILED],
    ids=["assigned", "running", "finished", "failed"],
)
def test_upload_after_pending_conflicts(given: list[Event]) -> None:
    """Once a job has left pending its script cannot be replaced (409)."""
    with pytest.raises(Conflict):
        when(given, UploadScript(job_id=J, script="x"))


# --- assign --------------------------------------------------------------------------


def test_assign_a_runnable_job() -> None:
    """A pending job with a script is assigned to the node as the current attempt."""
    assert when(PENDING, AssignJob(job_id=J, node_id=N)) == [assigned(1)]
    assert state_of(ASSIGNED).status is JobStatus.ASSIGNED
    assert state_of(ASSIGNED).node_id == N


def test_assign_without_a_script_conflicts() -> None:
    """A job without a script is not runnable."""
    with pytest.raises(Conflict):
        when([CREATED], AssignJob(job_id=J, node_id=N))


@pytest.mark.parametrize(
    "given", [ASSIGNED, RUNNING, FINISHED, FAILED], ids=["assigned", "running", "ended", "failed"]
)
def test_assign_of_a_job_not_pending_conflicts(given: list[Event]) -> None:
    """Only a pending job can be assigned: never to two nodes at once."""
    with pytest.raises(Conflict):
        when(given, AssignJob(job_id=J, node_id=OTHER))


# --- ack -----------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [1, None], ids=["named", "current"])
def test_ack_by_the_assigned_node_starts_the_job(attempt: int | None) -> None:
    """The assigned node acks its attempt (named or implied) and the job runs."""
    assert when(ASSIGNED, AckJob(job_id=J, node_id=N, attempt=attempt)) == [acked(1)]
    assert state_of(RUNNING).status is JobStatus.RUNNING


def test_repeated_ack_changes_nothing() -> None:
    """A second ack of a running attempt decides no events."""
    assert when(RUNNING, AckJob(job_id=J, node_id=N, attempt=1)) == []


def test_ack_by_another_node_conflicts() -> None:
    """A node that does not hold the job cannot ack it (409)."""
    with pytest.raises(Conflict, match="not assigned to node 'n2'"):
        when(ASSIGNED, AckJob(job_id=J, node_id=OTHER, attempt=1))


def test_ack_of_a_stale_attempt_conflicts() -> None:
    """An ack naming an attempt that is no longer current is refused (409)."""
    given = [
        *ASSIGNED,
        LeaseExpired(job_id=J, node_id=N, attempt=1, requeued=True),
        assigned(2),
    ]
    with pytest.raises(Conflict, match=r"attempt 1 .* not current"):
        when(given, AckJob(job_id=J, node_id=N, attempt=1))


@pytest.mark.parametrize("given", [PENDING, FINISHED], ids=["pending", "finished"])
def test_ack_of_a_job_not_held_conflicts(given: list[Event]) -> None:
    """A pending or ended job has no node that could ack it."""
    with pytest.raises(Conflict):
        when(given, AckJob(job_id=J, node_id=N, attempt=1))


# --- log lines -----------------------------------------------------------------------


def test_first_log_batch_is_stored_at_offset_zero() -> None:
    """The first batch of an attempt's log starts at offset 0."""
    batch = lines("a", "b", "c")
    assert when(RUNNING, AppendLogLines(job_id=J, node_id=N, attempt=1, offset=0, lines=batch)) == [
        LogLinesAppended(job_id=J, node_id=N, attempt=1, offset=0, lines=batch)
    ]


def test_log_batch_without_offset_appends_after_the_last_line() -> None:
    """A batch that names no offset goes after the lines already stored."""
    first = lines("a", "b")
    given = [*RUNNING, LogLinesAppended(job_id=J, node_id=N, attempt=1, offset=0, lines=first)]
    assert when(
        given, AppendLogLines(job_id=J, node_id=N, attempt=1, offset=None, lines=lines("c"))
    )[0] == LogLinesAppended(job_id=J, node_id=N, attempt=1, offset=2, lines=lines("c"))


def test_resent_log_batch_changes_nothing() -> None:
    """A batch whose lines are all stored already decides no events."""
    batch = lines("a", "b", "c")
    given = [*RUNNING, LogLinesAppended(job_id=J, node_id=N, attempt=1, offset=0, lines=batch)]
    assert when(given, AppendLogLines(job_id=J, node_id=N, attempt=1, offset=0, lines=batch)) == []
    assert (
        when(given, AppendLogLines(job_id=J, node_id=N, attempt=1, offset=1, lines=batch[1:])) == []
    )


def test_overlapping_log_batch_keeps_only_the_new_lines() -> None:
    """Lines at positions already stored are dropped; the rest are appended after them."""
    given = [
        *RUNNING,
        LogLinesAppended(job_id=J, node_id=N, attempt=1, offset=0, lines=lines("a", "b")),
    ]
    batch = lines("b", "c", "d")
    assert when(given, AppendLogLines(job_id=J, node_id=N, attempt=1, offset=1, lines=batch)) == [
        LogLinesAppended(job_id=J, node_id=N, attempt=1, offset=2, lines=batch[1:])
    ]


def test_log_gap_conflicts_naming_the_expected_offset() -> None:
    """A batch beyond the next offset is a gap: 409 with the expected offset."""
    given = [
        *RUNNING,
        LogLinesAppended(job_id=J, node_id=N, attempt=1, offset=0, lines=lines("a", "b", "c")),
    ]
    with pytest.raises(Conflict, match="expected offset 3"):
        when(given, AppendLogLines(job_id=J, node_id=N, attempt=1, offset=5, lines=lines("x")))


def test_log_lines_from_another_node_conflict() -> None:
    """Only the node holding the attempt may stream its log."""
    with pytest.raises(Conflict):
        when(
            RUNNING, AppendLogLines(job_id=J, node_id=OTHER, attempt=1, offset=0, lines=lines("a"))
        )


def test_log_lines_for_a_stale_attempt_conflict() -> None:
    """Lines for an attempt that is no longer current are refused."""
    given = [
        *RUNNING,
        LeaseExpired(job_id=J, node_id=N, attempt=1, requeued=True),
        assigned(2),
    ]
    with pytest.raises(Conflict):
        when(given, AppendLogLines(job_id=J, node_id=N, attempt=1, offset=0, lines=lines("a")))


def test_each_attempt_log_starts_at_offset_zero() -> None:
    """After a lease expiry the next attempt's log starts again at offset 0."""
    given = [
        *RUNNING,
        LogLinesAppended(job_id=J, node_id=N, attempt=1, offset=0, lines=lines("a", "b")),
        LeaseExpired(job_id=J, node_id=N, attempt=1, requeued=True),
        assigned(2, OTHER),
        acked(2, OTHER),
    ]
    assert when(
        given, AppendLogLines(job_id=J, node_id=OTHER, attempt=2, offset=0, lines=lines("z"))
    ) == [LogLinesAppended(job_id=J, node_id=OTHER, attempt=2, offset=0, lines=lines("z"))]


# --- usage ---------------------------------------------------------------------------


def test_usage_of_the_current_attempt_is_recorded() -> None:
    """The holding node's usage report is recorded against its attempt."""
    command = ReportJobUsage(
        job_id=J, node_id=N, attempt=None, cpu_seconds=1.5, wall_seconds=2.0, peak_ram_mb=100.0
    )
    assert when(RUNNING, command) == [
        UsageReported(
            node_id=N, job_id=J, attempt=1, cpu_seconds=1.5, wall_seconds=2.0, peak_ram_mb=100.0
        )
    ]


def test_a_usage_report_sent_again_under_its_id_is_counted_once() -> None:
    """A report the node sends again under the same id (its answer was lost) decides
    nothing; another id, or the same id in the next attempt, is recorded."""
    report = UsageReported(
        node_id=N, job_id=J, attempt=1, cpu_seconds=1.5, wall_seconds=2.0, report_id="r1"
    )
    again = ReportJobUsage(
        job_id=J, node_id=N, attempt=1, cpu_seconds=1.5, wall_seconds=2.0, report_id="r1"
    )
    assert when([*RUNNING, report], again) == []
    more = ReportJobUsage(job_id=J, node_id=N, attempt=1, cpu_seconds=0.5, report_id="r2")
    assert when([*RUNNING, report], more) == [
        UsageReported(node_id=N, job_id=J, attempt=1, cpu_seconds=0.5, report_id="r2")
    ]
    next_attempt = [
        *RUNNING,
        report,
        LeaseExpired(job_id=J, node_id=N, attempt=1, requeued=True),
        JobAssigned(job_id=J, node_id=N, attempt=2),
        JobAcked(job_id=J, node_id=N, attempt=2),
    ]
    same_id_later = ReportJobUsage(
        job_id=J, node_id=N, attempt=2, cpu_seconds=1.5, wall_seconds=2.0, report_id="r1"
    )
    assert when(next_attempt, same_id_later) == [
        UsageReported(
            node_id=N, job_id=J, attempt=2, cpu_seconds=1.5, wall_seconds=2.0, report_id="r1"
        )
    ]


def test_reports_without_an_id_are_all_summed() -> None:
    """As API.md says: equal increments (an idle job reporting its wall time every
    minute) are each recorded, since nothing says one is a resend of another."""
    idle = ReportJobUsage(job_id=J, node_id=N, attempt=1, wall_seconds=60.0)
    history: list[Event] = [*RUNNING]
    for _ in range(3):
        history += when(history, idle)
    assert (
        history[len(RUNNING) :]
        == [UsageReported(node_id=N, job_id=J, attempt=1, wall_seconds=60.0)] * 3
    )


def test_usage_from_another_node_conflicts() -> None:
    """A node cannot report usage for a job it does not hold."""
    with pytest.raises(Conflict):
        when(RUNNING, ReportJobUsage(job_id=J, node_id=OTHER, attempt=1, cpu_seconds=1.0))


# --- finish --------------------------------------------------------------------------


def test_finish_records_the_result() -> None:
    """The holding node finishes its attempt; the exit code defaults to 0."""
    assert when(RUNNING, finish()) == [finished()]
    assert state_of(FINISHED).status is JobStatus.FINISHED


def test_failed_finish_records_the_failure() -> None:
    """A node reporting failure records JobFailed with its exit code and error."""
    assert when(RUNNING, finish("failed")) == [failed()]
    assert state_of(FAILED).status is JobStatus.FAILED


def test_finish_of_an_assigned_but_unacked_job_is_accepted() -> None:
    """A node may finish an attempt it never acked (the ack was lost)."""
    assert when(ASSIGNED, finish()) == [finished()]


@pytest.mark.parametrize(
    ("given", "command"),
    [(FINISHED, finish()), (FINISHED, finish(attempt=None)), (FAILED, finish("failed"))],
    ids=["finished", "finished-implied-attempt", "failed"],
)
def test_repeated_identical_finish_changes_nothing(given: list[Event], command: FinishJob) -> None:
    """The same finish again decides no events (200, nothing appended)."""
    assert when(given, command) == []


@pytest.mark.parametrize(
    ("given", "command"),
    [(FINISHED, finish("failed")), (FAILED, finish("finished")), (FINISHED, finish(node=OTHER))],
    ids=["finished-then-failed", "failed-then-finished", "other-node"],
)
def test_different_finish_of_an_ended_job_conflicts(given: list[Event], command: FinishJob) -> None:
    """A different finish for a job that already ended is 409."""
    with pytest.raises(Conflict, match="already ended"):
        when(given, command)


def test_finish_by_another_node_conflicts() -> None:
    """A node that does not hold the job cannot finish it."""
    with pytest.raises(Conflict, match="not assigned"):
        when(RUNNING, finish(node=OTHER))


def test_finish_of_a_stale_attempt_conflicts() -> None:
    """A node back from a partition cannot finish the attempt that went elsewhere."""
    given = [
        *RUNNING,
        LeaseExpired(job_id=J, node_id=N, attempt=1, requeued=True),
        assigned(2, OTHER),
        acked(2, OTHER),
    ]
    with pytest.raises(Conflict):
        when(given, finish(attempt=1, node=N))
    with pytest.raises(Conflict, match="not current"):
        when(given, finish(attempt=1, node=OTHER))


def test_finish_of_a_pending_job_conflicts() -> None:
    """A job that is not held by any node cannot be finished."""
    with pytest.raises(Conflict):
        when(PENDING, finish())


def test_finish_after_a_timeout_conflicts() -> None:
    """Once the server failed an attempt for its timeout, the node's own finish is 409."""
    given = [
        *RUNNING,
        JobTimedOut(job_id=J, node_id=N, attempt=1),
        JobFailed(job_id=J, node_id=N, attempt=1, error="timeout", by_server=True),
    ]
    with pytest.raises(Conflict):
        when(given, finish())


# --- lease expiry --------------------------------------------------------------------


def expire(attempt: int, node: str = N) -> ExpireLease:
    return ExpireLease(job_id=J, node_id=node, attempt=attempt)


@pytest.mark.parametrize("given", [ASSIGNED, RUNNING], ids=["assigned", "running"])
def test_lease_expiry_requeues_with_the_next_attempt(given: list[Event]) -> None:
    """A held job whose node went silent goes back to pending as attempt + 1."""
    assert when(given, expire(1)) == [LeaseExpired(job_id=J, node_id=N, attempt=1, requeued=True)]
    state = state_of([*given, LeaseExpired(job_id=J, node_id=N, attempt=1, requeued=True)])
    assert (state.status, state.attempt, state.node_id) == (JobStatus.PENDING, 2, None)


def lost(attempt: int, node: str = N) -> list[Event]:
    """An attempt that was assigned, acked and lost to a silent node."""
    return [
        assigned(attempt, node),
        acked(attempt, node),
        LeaseExpired(job_id=J, node_id=node, attempt=attempt, requeued=True),
    ]


def test_lease_expiry_fails_the_job_after_max_attempts() -> None:
    """The lease expiring on the last allowed attempt fails the job instead."""
    given = [*PENDING, *lost(1), *lost(2), assigned(3), acked(3)]
    assert when(given, expire(3)) == [
        LeaseExpired(job_id=J, node_id=N, attempt=3, requeued=False),
        JobFailed(
            job_id=J, node_id=N, attempt=3, error="lease expired on 3 attempts", by_server=True
        ),
    ]
    ended = state_of([*given, *when(given, expire(3))])
    assert (ended.status, ended.attempt) == (JobStatus.FAILED, 3)


def test_max_attempts_of_one_fails_at_the_first_expiry() -> None:
    """With maxAttempts 1 a lost lease fails the job at once."""
    given = [JobCreated(job_id=J, max_attempts=1), UPLOADED, assigned(1)]
    assert [type(e) for e in when(given, expire(1))] == [LeaseExpired, JobFailed]


@pytest.mark.parametrize(
    ("given", "command"),
    [
        ([*PENDING, *lost(1), assigned(2)], expire(1)),  # the attempt moved on
        (RUNNING, expire(1, OTHER)),  # another node's lease
        (PENDING, expire(1)),  # nothing held
        (FINISHED, expire(1)),  # already over
        ([*RUNNING, JobDeleted(job_id=J)], expire(1)),  # deleted meanwhile
        ([], expire(1)),  # never existed
    ],
    ids=["stale-attempt", "other-node", "pending", "finished", "deleted", "unknown"],
)
def test_stale_lease_expiry_is_a_no_op(given: list[Event], command: ExpireLease) -> None:
    """An ExpireLease for an attempt that is no longer held decides nothing."""
    assert when(given, command) == []


# --- timeouts ------------------------------------------------------------------------


@pytest.mark.parametrize("given", [ASSIGNED, RUNNING], ids=["assigned", "running"])
def test_timeout_fails_the_attempt(given: list[Event]) -> None:
    """A held attempt past its timeout ends failed with the error ``timeout``."""
    assert when(given, TimeOutJob(job_id=J, attempt=1)) == [
        JobTimedOut(job_id=J, node_id=N, attempt=1),
        JobFailed(job_id=J, node_id=N, attempt=1, error="timeout", by_server=True),
    ]


@pytest.mark.parametrize(
    ("given", "attempt"),
    [
        ([*PENDING, *lost(1), assigned(2)], 1),
        (PENDING, 1),
        (FINISHED, 1),
        ([*RUNNING, JobDeleted(job_id=J)], 1),
        ([], 1),
    ],
    ids=["stale-attempt", "pending", "finished", "deleted", "unknown"],
)
def test_stale_timeout_is_a_no_op(given: list[Event], attempt: int) -> None:
    """A timeout for an attempt that is no longer held decides nothing."""
    assert when(given, TimeOutJob(job_id=J, attempt=attempt)) == []


# --- restart -------------------------------------------------------------------------


@pytest.mark.parametrize("given", [FINISHED, FAILED], ids=["finished", "failed"])
def test_restart_of_an_ended_job_requeues_the_next_attempt(given: list[Event]) -> None:
    """A finished or failed job goes back to pending as attempt + 1."""
    assert when(given, RestartJob(job_id=J)) == [JobRestarted(job_id=J, attempt=2)]
    state = state_of([*given, JobRestarted(job_id=J, attempt=2)])
    assert (state.status, state.attempt, state.node_id, state.next_offset) == (
        JobStatus.PENDING,
        2,
        None,
        0,
    )


@pytest.mark.parametrize(
    "given", [PENDING, ASSIGNED, RUNNING], ids=["pending", "assigned", "running"]
)
def test_restart_of_a_job_not_ended_conflicts(given: list[Event]) -> None:
    """Only a finished or failed job can be restarted (409)."""
    with pytest.raises(Conflict):
        when(given, RestartJob(job_id=J))


def test_restart_starts_a_new_run_of_attempts() -> None:
    """After a restart the job gets maxAttempts fresh attempts before the lease fails it."""
    exhausted = [*PENDING, *lost(1), *lost(2), assigned(3)]
    exhausted += when(exhausted, expire(3))
    restarted = [*exhausted, *when(exhausted, RestartJob(job_id=J))]
    assert state_of(restarted).attempt == 4
    given = [*restarted, *lost(4), *lost(5), assigned(6)]
    assert [type(e) for e in when([*restarted, assigned(4)], expire(4))] == [LeaseExpired]
    assert when(given, expire(6)) == [
        LeaseExpired(job_id=J, node_id=N, attempt=6, requeued=False),
        JobFailed(
            job_id=J, node_id=N, attempt=6, error="lease expired on 3 attempts", by_server=True
        ),
    ]


def test_finish_of_the_previous_run_after_restart_conflicts() -> None:
    """A finish for the attempt before a restart is refused."""
    given = [*FINISHED, JobRestarted(job_id=J, attempt=2)]
    with pytest.raises(Conflict):
        when(given, finish(attempt=1))


# --- delete --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given", [[CREATED], RUNNING, FINISHED], ids=["pending", "running", "finished"]
)
def test_delete_records_a_tombstone(given: list[Event]) -> None:
    """Deleting a job records JobDeleted, whatever its status."""
    assert when(given, DeleteJob(job_id=J)) == [JobDeleted(job_id=J)]


ALL_COMMANDS: list[JobCommand] = [
    UploadScript(job_id=J, script="x"),
    AssignJob(job_id=J, node_id=N),
    AckJob(job_id=J, node_id=N, attempt=1),
    AppendLogLines(job_id=J, node_id=N, attempt=1, offset=0, lines=lines("a")),
    ReportJobUsage(job_id=J, node_id=N, attempt=1, cpu_seconds=1.0),
    finish(),
    RestartJob(job_id=J),
    DeleteJob(job_id=J),
]


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=lambda c: type(c).__name__)
@pytest.mark.parametrize(
    "given", [[], [*RUNNING, JobDeleted(job_id=J)]], ids=["unknown", "deleted"]
)
def test_commands_on_an_unknown_or_deleted_job_are_not_found(
    given: list[Event], command: JobCommand
) -> None:
    """Every command but create answers 404 for a job that is unknown or deleted."""
    with pytest.raises(NotFound):
        when(given, command)


def test_decide_refuses_what_is_not_a_job_command() -> None:
    """Anything but a job command is a programming error, not a silent no-op."""
    with pytest.raises(TypeError):
        JOBS.decide(object(), state_of(PENDING))  # type: ignore[arg-type]


# --- release by the node -------------------------------------------------------------

REASON = "the agent shut down"


def release(attempt: int = 1, node: str = N, reason: str = REASON) -> ReleaseJob:
    return ReleaseJob(job_id=J, node_id=node, attempt=attempt, reason=reason)


def released(attempt: int = 1, node: str = N, requeued: bool = True) -> JobReleased:
    return JobReleased(job_id=J, node_id=node, attempt=attempt, reason=REASON, requeued=requeued)


@pytest.mark.parametrize("given", [ASSIGNED, RUNNING], ids=["assigned", "running"])
def test_release_requeues_with_the_next_attempt(given: list[Event]) -> None:
    """The holding node hands its attempt back: pending at once, as attempt + 1."""
    assert when(given, release(1)) == [released(1)]
    state = state_of([*given, released(1)])
    assert (state.status, state.attempt, state.node_id) == (JobStatus.PENDING, 2, None)


def test_a_released_job_can_be_assigned_again_to_any_node() -> None:
    """After a release the next attempt goes to whichever node polls, the same one too."""
    given = [*RUNNING, released(1)]
    assert when(given, AssignJob(job_id=J, node_id=N)) == [assigned(2, N)]
    assert when(given, AssignJob(job_id=J, node_id=OTHER)) == [assigned(2, OTHER)]


def test_release_on_the_last_attempt_fails_the_job_as_the_node_s() -> None:
    """With no attempts left the release fails the job, naming the reason; the node is
    the actor of the failure, not the server."""
    given = [*PENDING, *lost(1), assigned(2), acked(2), released(2), assigned(3)]
    assert when(given, release(3)) == [
        released(3, requeued=False),
        JobFailed(
            job_id=J,
            node_id=N,
            attempt=3,
            error=f"released by its node on the last attempt: {REASON}",
            by_server=False,
        ),
    ]
    ended = state_of([*given, *when(given, release(3))])
    assert (ended.status, ended.attempt) == (JobStatus.FAILED, 3)


def test_releases_and_lost_leases_share_max_attempts() -> None:
    """A release counts against maxAttempts exactly like a lease expiry."""
    given = [*PENDING, assigned(1), released(1), assigned(2)]
    assert when(given, expire(2)) == [LeaseExpired(job_id=J, node_id=N, attempt=2, requeued=True)]
    one = [JobCreated(job_id=J, max_attempts=1), UPLOADED, assigned(1)]
    assert [type(e) for e in when(one, release(1))] == [JobReleased, JobFailed]


def test_release_after_a_restart_has_a_fresh_run_of_attempts() -> None:
    """Attempts before a restart do not count against the new run."""
    given = [*FAILED, JobRestarted(job_id=J, attempt=2), assigned(2)]
    assert when(given, release(2)) == [released(2)]


@pytest.mark.parametrize(
    "given",
    [
        [*RUNNING, released(1)],
        [*RUNNING, released(1), assigned(2, OTHER)],
        [*RUNNING, released(1), assigned(2), acked(2)],
        [
            JobCreated(job_id=J, max_attempts=1),
            UPLOADED,
            assigned(1),
            released(1, requeued=False),
            JobFailed(job_id=J, node_id=N, attempt=1, error="released", by_server=False),
        ],
    ],
    ids=["pending", "taken-by-another", "taken-again-by-the-same", "failed-by-it"],
)
def test_repeated_release_decides_nothing(given: list[Event]) -> None:
    """A node repeating the release of an attempt it already handed back (its first
    answer was lost) is answered without any new event, whatever happened since."""
    assert when(given, release(1)) == []
    assert when(given, release(1, reason="another wording")) == []


@pytest.mark.parametrize(
    ("given", "command"),
    [
        (RUNNING, release(1, OTHER)),  # another node's attempt
        ([*RUNNING, released(1)], release(1, OTHER)),  # released, but not by this node
        ([*PENDING, *lost(1), assigned(2)], release(1)),  # the lease moved it on
        ([*RUNNING, released(1), assigned(2)], release(3)),  # an attempt not yet given
        (PENDING, release(1)),  # nothing held
        (FINISHED, release(1)),  # already ended by its finish
        (FAILED, release(1)),
    ],
    ids=["other-node", "released-by-another", "stale", "future", "pending", "finished", "failed"],
)
def test_release_of_an_attempt_the_node_does_not_hold_conflicts(
    given: list[Event], command: ReleaseJob
) -> None:
    """Only the node holding the current attempt may release it (409 otherwise)."""
    with pytest.raises(Conflict):
        when(given, command)


@pytest.mark.parametrize(
    "given", [[], [*RUNNING, JobDeleted(job_id=J)]], ids=["unknown", "deleted"]
)
def test_release_of_an_unknown_or_deleted_job_is_not_found(given: list[Event]) -> None:
    """A release names a job that must exist (404 otherwise), like every job command."""
    with pytest.raises(NotFound):
        when(given, release(1))


def test_a_finish_after_the_release_conflicts() -> None:
    """Once released, the attempt is no longer the node's to finish."""
    with pytest.raises(Conflict):
        when([*RUNNING, released(1)], finish())


def test_a_lease_expiry_after_the_release_is_a_no_op() -> None:
    """The sweeper finding the released attempt's node silent changes nothing."""
    assert when([*RUNNING, released(1)], expire(1)) == []

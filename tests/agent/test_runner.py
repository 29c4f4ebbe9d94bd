"""What a job's script sees of the agent: its job's variables, none of the agent's secrets."""

from __future__ import annotations

from shelby.agent.runner import Assignment, job_environment


def test_shelby_variables_and_secrets_are_removed() -> None:
    """SHELBY_* and any variable holding a token under another name are not passed on."""
    base = {
        "PATH": "/usr/bin",
        "HOME": "/home/x",
        "SHELBY_JOIN_TOKEN": "join-secret",
        "SHELBY_ADMIN_TOKEN": "admin-secret",
        "SHELBY_SERVER": "http://127.0.0.1:8000",
        "MY_COPY": "Bearer node-secret",
        "VIRTUAL_ENV": "/agent/.venv",
        "PYTHONPATH": "/agent/src",
    }
    env = job_environment(base, ["join-secret", "node-secret", ""], {"SHELBY_JOB_ID": "j1"})
    assert env == {"PATH": "/usr/bin", "HOME": "/home/x", "SHELBY_JOB_ID": "j1"}


def test_the_timeout_comes_from_the_job_or_its_estimate() -> None:
    """timeoutMinutes when given; else twice the runtime estimate; else an hour."""
    job = {"jobId": "j", "attempt": 2, "datasetUrl": None}
    assert Assignment.from_poll({**job, "timeoutMinutes": 0.5}).timeout_seconds == 30
    assert Assignment.from_poll({**job, "runtimeMinutesEstimate": 3}).timeout_seconds == 360
    assert Assignment.from_poll(job).timeout_seconds == 3600
    assert Assignment.from_poll(job).attempt == 2

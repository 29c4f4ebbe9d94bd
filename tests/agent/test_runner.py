"""What a job's script sees of the agent: its job's variables, none of the agent's secrets."""

from __future__ import annotations

from shelby.agent.runner import Assignment
from shelby.agent.sandbox import job_environment


def test_the_environment_is_an_allow_list_without_secrets() -> None:
    """Only allowed or named variables pass; never SHELBY_*, nor a value holding a token."""
    base = {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C",
        "PIP_INDEX_URL": "https://pypi.example/simple",
        "CUDA_VISIBLE_DEVICES": "0",
        "HOME": "/root",
        "AWS_SECRET_ACCESS_KEY": "agent-cloud-key",
        "HF_HOME": "/data/hf",
        "SHELBY_JOIN_TOKEN": "join-secret",
        "SHELBY_ADMIN_TOKEN": "admin-secret",
        "SHELBY_SERVER": "http://127.0.0.1:8000",
        "MY_COPY": "Bearer node-secret",
        "LC_TOKEN": "node-secret",
        "VIRTUAL_ENV": "/agent/.venv",
        "PYTHONPATH": "/agent/src",
    }
    env = job_environment(
        base,
        ["join-secret", "node-secret", ""],
        {"SHELBY_JOB_ID": "j1", "HOME": "/work/attempt-1/home"},
        pass_env=["HF_HOME", "MY_COPY", "SHELBY_SERVER"],
    )
    assert env == {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C",
        "PIP_INDEX_URL": "https://pypi.example/simple",
        "CUDA_VISIBLE_DEVICES": "0",
        "HF_HOME": "/data/hf",
        "SHELBY_JOB_ID": "j1",
        "HOME": "/work/attempt-1/home",
    }


def test_the_timeout_comes_from_the_job_or_its_estimate() -> None:
    """timeoutMinutes when given; else twice the runtime estimate; else an hour."""
    job = {"jobId": "j", "attempt": 2, "datasetUrl": None}
    assert Assignment.from_poll({**job, "timeoutMinutes": 0.5}).timeout_seconds == 30
    assert Assignment.from_poll({**job, "runtimeMinutesEstimate": 3}).timeout_seconds == 360
    assert Assignment.from_poll(job).timeout_seconds == 3600
    assert Assignment.from_poll(job).attempt == 2

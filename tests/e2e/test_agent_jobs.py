"""A real ``shelby agent`` process against a real ``shelby serve``, running real scripts.

Each test starts its own server (``tests/conftest.py``) with a short lease, and agents
as subprocesses with a short poll wait, kill grace and backoff, so that every
scenario settles in seconds. Scripts report their process ids through files so that
the tests can check that a stopped job's whole process tree is gone.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil

from conftest import AgentFactory, wait_for

MANIFEST = 'cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum'


def sha256_file(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def create_job(
    server: Any,
    script: str,
    *,
    requirements: str = "",
    dataset: Path | None = None,
    dataset_hash: str | None = None,
    **fields: Any,
) -> str:
    body: dict[str, Any] = {"datasetName": "e2e", **fields}
    if dataset is not None:
        body["datasetUrl"] = dataset.as_uri()
        body["datasetHash"] = dataset_hash or sha256_file(dataset)
    with server.client() as http:
        created = http.post("/api/jobs/create", json=body)
        assert created.status_code == 200, created.text
        job_id = str(created.json()["jobId"])
        uploaded = http.post(
            "/api/jobs/upload-script",
            json={"jobId": job_id, "script": textwrap.dedent(script), "requirements": requirements},
        )
        assert uploaded.status_code == 200, uploaded.text
    return job_id


def get_job(server: Any, job_id: str) -> dict[str, Any]:
    with server.client() as http:
        answer = http.get(f"/api/frontend/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        job: dict[str, Any] = answer.json()
        return job


def wait_status(server: Any, job_id: str, *statuses: str, timeout: float = 30) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        job = get_job(server, job_id)
        return job if job["status"] in statuses else None

    return wait_for(reached, timeout, f"job {job_id} to be {' or '.join(statuses)}")


def log_lines(server: Any, job_id: str, attempt: int | None = None) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"limit": 10_000}
    if attempt is not None:
        params["attempt"] = attempt
    with server.client() as http:
        answer = http.get(f"/api/frontend/logs/{job_id}", params=params)
        assert answer.status_code == 200, answer.text
        lines: list[dict[str, Any]] = answer.json()["logs"]
        return lines


def printed(
    server: Any, job_id: str, attempt: int | None = None, stream: str = "stdout"
) -> list[str]:
    return [line["line"] for line in log_lines(server, job_id, attempt) if line["stream"] == stream]


def wait_printed(server: Any, job_id: str, text: str, timeout: float = 30) -> None:
    wait_for(lambda: text in printed(server, job_id), timeout, f"{text!r} in the log of {job_id}")


def audit_types(server: Any, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    with server.client() as http:
        events = http.get(f"/api/audit/jobs/{job_id}").json()["events"]
    return [(e["type"], e["data"]) for e in events]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def pids_in(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()]


def shell_model_hash(out: Path) -> str:
    """The model hash by coreutils alone, as API.md defines it."""
    manifest = subprocess.run(
        ["sh", "-c", MANIFEST + " | sha256sum", "sh", str(out)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return "sha256:" + manifest.split()[0]


# Starts a child that ignores SIGTERM, writes both pids to PIDS, prints MARK, sleeps.
TREE_SCRIPT = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
kid = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
open({pids!r}, "w").write(f"{{os.getpid()}} {{kid.pid}}")
print({mark!r}, flush=True)
time.sleep(600)
"""


# --- running a job ------------------------------------------------------------------


def test_a_training_script_runs_to_a_model_whose_hash_sha256sum_confirms(
    shelby_server: Any, agents: AgentFactory, tmp_path: Path
) -> None:
    """Dataset checked, job variables set, no credentials leaked, lines by stream,
    modelHash equal to coreutils' recomputation, usage reported."""
    dataset = tmp_path / "train.csv"
    dataset.write_bytes(b"x,y\n" + b"".join(f"{i},{2 * i}\n".encode() for i in range(1000)))
    secrets = [shelby_server.join_token, shelby_server.admin_token]
    script = f"""
        import json, os, pathlib, sys
        data = pathlib.Path(os.environ["SHELBY_DATASET_PATH"]).read_bytes()
        out = pathlib.Path(os.environ["SHELBY_OUTPUT_DIR"])
        (out / "weights").mkdir()
        (out / "weights" / "layer 1.bin").write_bytes(bytes(range(256)) * 40)
        (out / "metrics.json").write_text(json.dumps({{"rows": data.count(b"\\n")}}))
        leaked = sorted(k for k, v in os.environ.items()
                        if any(s in v for s in {secrets!r})
                        or k in ("SHELBY_JOIN_TOKEN", "SHELBY_ADMIN_TOKEN", "SHELBY_SERVER"))
        print(json.dumps({{"job": os.environ["SHELBY_JOB_ID"],
                          "attempt": os.environ["SHELBY_ATTEMPT"],
                          "rows": data.count(b"\\n"), "leaked": leaked}}))
        for epoch in range(3):
            print(f"epoch {{epoch}} loss={{1 / (epoch + 1):.3f}}")
            print(f"warning {{epoch}}", file=sys.stderr)
    """
    job_id = create_job(shelby_server, script, dataset=dataset)
    agent = agents(shelby_server, "--label", "zone=e2e", "--label", "gpu=none", "--max-jobs", "2")

    job = wait_status(shelby_server, job_id, "finished", "failed")
    assert job["status"] == "finished", job
    assert job["exitCode"] == 0 and job["error"] is None
    node_id = agent.node_id()
    assert job["assignedNode"] == node_id

    out = agent.attempt_dir(job_id, 1) / "out"
    assert job["modelHash"] == shell_model_hash(out)
    assert job["metadata"]["outputFiles"] == 2

    lines = log_lines(shelby_server, job_id)
    assert [line["offset"] for line in lines] == list(range(len(lines)))
    stdout = [line["line"] for line in lines if line["stream"] == "stdout"]
    report = json.loads(stdout[0])
    assert report == {"job": job_id, "attempt": "1", "rows": 1001, "leaked": []}
    assert stdout[1:] == ["epoch 0 loss=1.000", "epoch 1 loss=0.500", "epoch 2 loss=0.333"]
    assert [line["line"] for line in lines if line["stream"] == "stderr"] == [
        "warning 0",
        "warning 1",
        "warning 2",
    ]

    usage = job["usage"]
    assert usage["reports"] == 1
    assert usage["cpuSeconds"] > 0 and usage["wallSeconds"] > 0 and usage["peakRamMB"] > 5

    with shelby_server.client() as http:
        nodes = http.get("/api/frontend/nodes").json()["nodes"]
    (node,) = nodes
    assert node["nodeId"] == node_id and node["name"] == agent.name
    assert node["labels"] == {"zone": "e2e", "gpu": "none"}
    assert node["maxConcurrentJobs"] == 2
    assert node["specs"]["cpuCount"] == os.cpu_count()
    assert node["specs"]["python"] == ".".join(map(str, sys.version_info[:3]))
    wait_for(
        lambda: "cpuUsage" in get_node(shelby_server)["specs"], 10, "a heartbeat with live usage"
    )


def get_node(server: Any) -> dict[str, Any]:
    with server.client() as http:
        node: dict[str, Any] = http.get("/api/frontend/nodes").json()["nodes"][0]
        return node


def test_a_failing_script_reports_its_exit_code_and_last_error(
    shelby_server: Any, agents: AgentFactory
) -> None:
    """A non-zero exit fails the job with that code, the last stderr line, no model."""
    script = """
        import sys
        print("about to fail")
        print("ValueError: the loss is NaN", file=sys.stderr)
        sys.exit(3)
    """
    job_id = create_job(shelby_server, script)
    agents(shelby_server)
    job = wait_status(shelby_server, job_id, "finished", "failed")
    assert job["status"] == "failed"
    assert job["exitCode"] == 3
    assert job["error"] == "exit code 3: ValueError: the loss is NaN"
    assert job["modelHash"] is None
    assert job["attempt"] == 1  # a script's own failure is not retried
    assert printed(shelby_server, job_id) == ["about to fail"]


def test_a_dataset_hash_mismatch_fails_before_the_script_starts(
    shelby_server: Any, agents: AgentFactory, tmp_path: Path
) -> None:
    """Data that is not the named data fails the job; the script never runs."""
    dataset = tmp_path / "data.bin"
    dataset.write_bytes(b"the real bytes")
    marker = tmp_path / "ran"
    job_id = create_job(
        shelby_server,
        f"open({str(marker)!r}, 'w').write('ran')\nprint('should not run')\n",
        dataset=dataset,
        dataset_hash="sha256:" + hashlib.sha256(b"the expected bytes").hexdigest(),
    )
    agents(shelby_server)
    job = wait_status(shelby_server, job_id, "finished", "failed")
    assert job["status"] == "failed"
    assert job["error"].startswith("dataset hash mismatch")
    assert sha256_file(dataset) in job["error"]
    assert not marker.exists()
    assert printed(shelby_server, job_id) == []


def test_a_timeout_stops_the_whole_process_tree(
    shelby_server: Any, agents: AgentFactory, tmp_path: Path
) -> None:
    """At timeoutMinutes the agent kills the script and its children (even ones that
    ignore SIGTERM) and the job fails with the error 'timeout'."""
    pids = tmp_path / "pids"
    job_id = create_job(
        shelby_server, TREE_SCRIPT.format(pids=str(pids), mark="started"), timeoutMinutes=0.05
    )
    agent = agents(shelby_server)
    wait_printed(shelby_server, job_id, "started")
    job = wait_status(shelby_server, job_id, "failed", timeout=20)
    assert job["error"] == "timeout"
    for pid in pids_in(pids):
        wait_for(lambda pid=pid: gone(pid), 5, f"pid {pid} to die")
    system = printed(shelby_server, job_id, stream="system")
    assert any("stopped (timeout)" in line for line in system), system
    assert agent.proc is not None and agent.proc.poll() is None


def test_deleting_a_running_job_stops_it_and_frees_the_slot(
    shelby_server: Any, agents: AgentFactory, tmp_path: Path
) -> None:
    """DELETE reaches the agent through cancelJobs: the tree dies, nothing more is
    reported for the job, and the next job runs."""
    pids = tmp_path / "pids"
    doomed = create_job(shelby_server, TREE_SCRIPT.format(pids=str(pids), mark="started"))
    agents(shelby_server)
    wait_printed(shelby_server, doomed, "started")
    with shelby_server.client() as http:
        assert http.delete(f"/api/frontend/jobs/{doomed}").status_code == 200
    for pid in pids_in(pids):
        wait_for(lambda pid=pid: gone(pid), 10, f"pid {pid} to die")
    follower = create_job(shelby_server, "print('next job')\n")
    assert wait_status(shelby_server, follower, "finished", "failed")["status"] == "finished"
    events = [kind for kind, _ in audit_types(shelby_server, doomed)]
    after_delete = events[events.index("JobDeleted") + 1 :]
    assert not {"JobFinished", "JobFailed", "UsageReported"} & set(after_delete), events


# --- failures of the machinery ------------------------------------------------------


ATTEMPT_SCRIPT = """
import os, pathlib, time
attempt = os.environ["SHELBY_ATTEMPT"]
if attempt == "1":
    open({pids!r}, "w").write(str(os.getpid()))
    print("attempt 1 running", flush=True)
    time.sleep(600)
(pathlib.Path(os.environ["SHELBY_OUTPUT_DIR"]) / "model").write_text("attempt " + attempt)
print("attempt", attempt, "done")
"""


def test_a_killed_agent_s_job_is_requeued_and_finished_by_another_agent(
    shelby_server: Any, agents: AgentFactory, tmp_path: Path
) -> None:
    """SIGKILL the agent mid-job: its script dies with it, the lease requeues the job,
    and a second agent finishes it as attempt 2."""
    pids = tmp_path / "pids"
    job_id = create_job(shelby_server, ATTEMPT_SCRIPT.format(pids=str(pids)))
    first = agents(shelby_server, name="first")
    wait_printed(shelby_server, job_id, "attempt 1 running")
    first.kill()
    (script_pid,) = pids_in(pids)
    wait_for(lambda: gone(script_pid), 5, "the orphaned script to die with its agent")

    second = agents(shelby_server, name="second")
    job = wait_status(shelby_server, job_id, "finished", "failed", timeout=30)
    assert job["status"] == "finished" and job["attempt"] == 2
    assert job["assignedNode"] == second.node_id() != first.node_id()
    assert job["modelHash"] == shell_model_hash(second.attempt_dir(job_id, 2) / "out")
    assert printed(shelby_server, job_id, attempt=2) == ["attempt 2 done"]
    kinds = [kind for kind, _ in audit_types(shelby_server, job_id)]
    assert "LeaseExpired" in kinds


def test_a_frozen_agent_that_lost_its_lease_drops_the_stale_attempt(
    shelby_server: Any, agents: AgentFactory, tmp_path: Path
) -> None:
    """An agent cut off for longer than the lease comes back to 409s/cancelJobs: it stops
    attempt 1 and reports nothing for it, then runs attempt 2."""
    pids = tmp_path / "pids"
    job_id = create_job(shelby_server, ATTEMPT_SCRIPT.format(pids=str(pids)))
    agent = agents(shelby_server)
    wait_printed(shelby_server, job_id, "attempt 1 running")
    agent.signal(signal.SIGSTOP)
    try:
        wait_for(lambda: get_job(shelby_server, job_id)["attempt"] == 2, 20, "the lease to expire")
    finally:
        agent.signal(signal.SIGCONT)
    job = wait_status(shelby_server, job_id, "finished", "failed", timeout=30)
    assert job["status"] == "finished" and job["attempt"] == 2
    (stale_pid,) = pids_in(pids)
    wait_for(lambda: gone(stale_pid), 10, "the stale attempt's script to be stopped")
    stale_state = json.loads((agent.attempt_dir(job_id, 1) / "state.json").read_text())
    assert stale_state["phase"] == "abandoned"
    endings = [
        data
        for kind, data in audit_types(shelby_server, job_id)
        if kind in ("JobFinished", "JobFailed")
    ]
    assert [ending["attempt"] for ending in endings] == [2]


def test_a_server_restart_mid_job_loses_and_duplicates_no_log_line(
    server_factory: Any, agents: AgentFactory
) -> None:
    """The server is SIGKILLed and restarted while a job prints: the job carries on,
    and every line reaches the log exactly once, in order."""
    server = server_factory(lease_seconds=10)
    script = """
        import time
        for i in range(60):
            print(f"line {i}", flush=True)
            time.sleep(0.05)
    """
    job_id = create_job(server, script)
    agents(server)
    wait_printed(server, job_id, "line 3")
    server.kill()
    time.sleep(1.5)
    server.start()
    job = wait_status(server, job_id, "finished", "failed", timeout=40)
    assert job["status"] == "finished" and job["attempt"] == 1
    lines = log_lines(server, job_id)
    assert [line["offset"] for line in lines] == list(range(len(lines)))
    assert printed(server, job_id) == [f"line {i}" for i in range(60)]


def test_an_agent_restart_rejoins_as_the_same_node_and_resends_its_spool(
    server_factory: Any, agents: AgentFactory, tmp_path: Path
) -> None:
    """The script finishes while the server is down; the agent is killed before it can
    report; restarted, it rejoins as the same node with a new token, resends the
    spooled lines by offset and the finish."""
    server = server_factory(lease_seconds=10)
    script = """
        import os, pathlib, time
        for i in range(30):
            print(f"line {i}", flush=True)
            time.sleep(0.05)
        (pathlib.Path(os.environ["SHELBY_OUTPUT_DIR"]) / "model").write_text("done")
    """
    job_id = create_job(server, script)
    work_dir = tmp_path / "restarting"
    first = agents(server, work_dir=work_dir)
    node_id = first.node_id()
    first_token = json.loads((work_dir / "node.json").read_text())["token"]
    wait_printed(server, job_id, "line 2")
    server.kill()
    state_file = first.attempt_dir(job_id, 1) / "state.json"
    wait_for(
        lambda: json.loads(state_file.read_text())["phase"] == "finishing",
        20,
        "the script to end while the server is down",
    )
    first.kill()
    server.start()
    second = agents(server, work_dir=work_dir)
    job = wait_status(server, job_id, "finished", "failed", timeout=30)
    assert job["status"] == "finished" and job["attempt"] == 1
    assert second.node_id() == node_id == job["assignedNode"]
    assert "completing the report of an earlier run" in second.log_text()
    assert json.loads((work_dir / "node.json").read_text())["token"] != first_token
    assert printed(server, job_id) == [f"line {i}" for i in range(30)]
    assert job["modelHash"] == shell_model_hash(first.attempt_dir(job_id, 1) / "out")
    with server.client() as http:
        assert [n["nodeId"] for n in http.get("/api/frontend/nodes").json()["nodes"]] == [node_id]


# Attempt 1 starts a tree that ignores SIGTERM (pids in PIDS) and sleeps; later ones finish.
HANDED_BACK_SCRIPT = """
import os, pathlib, signal, subprocess, sys, time
attempt = os.environ["SHELBY_ATTEMPT"]
if attempt == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    kid = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    open({pids!r}, "w").write(f"{{os.getpid()}} {{kid.pid}}")
    print("attempt 1 running", flush=True)
    time.sleep(600)
(pathlib.Path(os.environ["SHELBY_OUTPUT_DIR"]) / "model").write_text("attempt " + attempt)
print("attempt", attempt, "done")
"""

# Long enough that nothing but a release can requeue a job within a test.
LONG_LEASE = 60


def released(server: Any, job_id: str) -> list[dict[str, Any]]:
    return [data for kind, data in audit_types(server, job_id) if kind == "JobReleased"]


def test_sigterm_stops_the_running_job_and_hands_it_back(
    server_factory: Any, agents: AgentFactory, tmp_path: Path
) -> None:
    """The agent's own shutdown stops the script's whole tree, ships its log, hands the
    attempt back so that the job is requeued at once (no lease expiry), and exits
    cleanly; another agent then runs attempt 2 to the end."""
    server = server_factory(lease_seconds=LONG_LEASE)
    pids = tmp_path / "pids"
    job_id = create_job(server, HANDED_BACK_SCRIPT.format(pids=str(pids)))
    first = agents(server, name="first")
    wait_printed(server, job_id, "attempt 1 running")
    assert first.stop(timeout=20) == 0
    for pid in pids_in(pids):
        assert gone(pid), pid
    job = get_job(server, job_id)
    assert (job["status"], job["attempt"], job["assignedNode"]) == ("pending", 2, None)
    assert job["error"] is None
    assert released(server, job_id) == [
        {
            "type": "JobReleased",
            "jobId": job_id,
            "nodeId": first.node_id(),
            "attempt": 1,
            "reason": "the agent shut down",
            "requeued": True,
        }
    ]
    kinds = [kind for kind, _ in audit_types(server, job_id)]
    assert "LeaseExpired" not in kinds and "JobFailed" not in kinds
    system = printed(server, job_id, attempt=1, stream="system")
    assert any("stopped (shutdown)" in line for line in system), system
    assert printed(server, job_id, attempt=1) == ["attempt 1 running"]
    state = json.loads((first.attempt_dir(job_id, 1) / "state.json").read_text())
    assert state["phase"] == "released"

    second = agents(server, name="second")
    job = wait_status(server, job_id, "finished", "failed", timeout=30)
    assert (job["status"], job["attempt"]) == ("finished", 2)
    assert job["assignedNode"] == second.node_id() != first.node_id()
    assert job["modelHash"] == shell_model_hash(second.attempt_dir(job_id, 2) / "out")


def test_sigterm_on_the_last_attempt_fails_the_job_as_released(
    server_factory: Any, agents: AgentFactory, tmp_path: Path
) -> None:
    """With maxAttempts 1 the attempt handed back was the last: the job fails, saying so."""
    server = server_factory(lease_seconds=LONG_LEASE)
    job_id = create_job(
        server, HANDED_BACK_SCRIPT.format(pids=str(tmp_path / "pids")), maxAttempts=1
    )
    agent = agents(server)
    wait_printed(server, job_id, "attempt 1 running")
    assert agent.stop(timeout=20) == 0
    job = get_job(server, job_id)
    assert (job["status"], job["attempt"]) == ("failed", 1)
    assert job["error"] == "released by its node on the last attempt: the agent shut down"


def test_an_agent_restarted_on_its_work_dir_hands_back_the_attempt_it_left(
    server_factory: Any, agents: AgentFactory, tmp_path: Path
) -> None:
    """SIGKILL the agent mid-job and start it again on the same work dir before the lease
    runs out: it kills what is left of the tree, hands attempt 1 back, and then runs
    attempt 2 itself."""
    server = server_factory(lease_seconds=LONG_LEASE)
    pids = tmp_path / "pids"
    job_id = create_job(server, HANDED_BACK_SCRIPT.format(pids=str(pids)))
    work_dir = tmp_path / "restarting"
    first = agents(server, work_dir=work_dir)
    node_id = first.node_id()
    wait_printed(server, job_id, "attempt 1 running")
    first.kill()
    again = agents(server, work_dir=work_dir)
    job = wait_status(server, job_id, "finished", "failed", timeout=30)
    assert (job["status"], job["attempt"]) == ("finished", 2)
    assert again.node_id() == node_id == job["assignedNode"]
    for pid in pids_in(pids):
        wait_for(lambda pid=pid: gone(pid), 5, f"pid {pid} to die")
    assert [
        (r["nodeId"], r["attempt"], r["reason"], r["requeued"]) for r in released(server, job_id)
    ] == [(node_id, 1, "the agent stopped while the attempt ran", True)]
    assert "LeaseExpired" not in [kind for kind, _ in audit_types(server, job_id)]
    system = printed(server, job_id, attempt=1, stream="system")
    assert "[shelby] the agent stopped while the attempt ran; handing it back" in system
    state = json.loads((again.attempt_dir(job_id, 1) / "state.json").read_text())
    assert state["phase"] == "released"
    assert job["modelHash"] == shell_model_hash(again.attempt_dir(job_id, 2) / "out")


def test_a_shutdown_that_cannot_reach_the_server_hands_back_at_the_next_start(
    server_factory: Any, agents: AgentFactory, tmp_path: Path
) -> None:
    """With the server down, a shutdown stops the tree and gives up the release after
    its short timeout, exiting cleanly; started again once the server is back, the
    agent hands the attempt back and runs attempt 2."""
    server = server_factory(lease_seconds=LONG_LEASE)
    pids = tmp_path / "pids"
    job_id = create_job(server, HANDED_BACK_SCRIPT.format(pids=str(pids)))
    work_dir = tmp_path / "cut-off"
    first = agents(server, work_dir=work_dir)
    wait_printed(server, job_id, "attempt 1 running")
    server.kill()
    assert first.stop(timeout=30) == 0
    for pid in pids_in(pids):
        assert gone(pid), pid
    state_file = first.attempt_dir(job_id, 1) / "state.json"
    assert json.loads(state_file.read_text())["phase"] == "releasing"
    assert "could not hand the attempt back in time" in first.log_text()
    server.start()
    agents(server, work_dir=work_dir)
    job = wait_status(server, job_id, "finished", "failed", timeout=30)
    assert (job["status"], job["attempt"]) == ("finished", 2)
    assert [(r["attempt"], r["reason"]) for r in released(server, job_id)] == [
        (1, "the agent shut down")
    ]
    assert printed(server, job_id, attempt=1) == ["attempt 1 running"]


# --- capacity and environments ------------------------------------------------------


def test_max_jobs_runs_that_many_jobs_side_by_side(
    shelby_server: Any, agents: AgentFactory, tmp_path: Path
) -> None:
    """With --max-jobs 2, two jobs run at the same time on one node."""
    script = """
        import time
        print("start", time.time(), flush=True)
        time.sleep(1.5)
        print("end", time.time(), flush=True)
    """
    jobs = [create_job(shelby_server, script) for _ in range(2)]
    agents(shelby_server, "--max-jobs", "2")
    spans = []
    for job_id in jobs:
        assert wait_status(shelby_server, job_id, "finished", "failed")["status"] == "finished"
        start, end = (float(line.split()[1]) for line in printed(shelby_server, job_id))
        spans.append((start, end))
    (a_start, a_end), (b_start, b_end) = spans
    assert a_start < b_end and b_start < a_end, spans


def test_requirements_are_installed_once_and_reused(
    shelby_server: Any, agents: AgentFactory
) -> None:
    """A requirement from PyPI is installed into a cached environment by the first job
    (its output in the log) and reused as-is by the second."""
    script = """
        import six, sys
        print("six", six.__version__, "from", "site-packages" in six.__file__)
        print("isolated", sys.prefix != sys.base_prefix)
    """
    first = create_job(shelby_server, script, requirements="six\n")
    agent = agents(shelby_server)
    assert (
        wait_status(shelby_server, first, "finished", "failed", timeout=90)["status"] == "finished"
    )
    second = create_job(shelby_server, script, requirements="six")
    assert (
        wait_status(shelby_server, second, "finished", "failed", timeout=30)["status"] == "finished"
    )

    for job_id in (first, second):
        out = printed(shelby_server, job_id)
        assert out[0].startswith("six 1.") and out[0].endswith("from True")
        assert out[1] == "isolated True"
    first_build = printed(shelby_server, first, stream="system")
    assert any("Successfully installed six" in line for line in first_build), first_build
    second_build = printed(shelby_server, second, stream="system")
    assert any("using the cached environment" in line for line in second_build), second_build
    assert not any("installing" in line or "Successfully" in line for line in second_build)
    environments = [p for p in (agent.work_dir / "environments").iterdir() if p.is_dir()]
    assert len(environments) == 1

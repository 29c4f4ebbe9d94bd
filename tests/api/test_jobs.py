"""Job management and the frontend's job views, through a real server."""

from __future__ import annotations

import hashlib

from api._flow import create_job, register, run_to_running
from conftest import ServerProcess

SEED_FIELDS = {
    "jobId",
    "status",
    "datasetName",
    "datasetUrl",
    "meta",
    "createdAt",
    "assignedNode",
    "startedAt",
    "finishedAt",
    "duration",
    "modelHash",
    "metadata",
}
ADDED_FIELDS = {
    "attempt",
    "maxAttempts",
    "entrypoint",
    "scriptHash",
    "datasetHash",
    "usage",
    "resources",
    "labels",
    "timeoutMinutes",
    "exitCode",
    "error",
    "pendingReason",
}


def test_create_answers_the_job_view_with_every_field(shelby_server: ServerProcess) -> None:
    """create returns the list's job view: the seed's fields and API.md's additions."""
    with shelby_server.client() as c:
        job = create_job(c, "j1", script=None, meta={"description": "x"}, datasetHash="h1")
    assert set(job) >= SEED_FIELDS | ADDED_FIELDS
    assert job["jobId"] == "j1"
    assert job["status"] == "pending"
    assert job["meta"] == {"description": "x"}
    assert job["datasetHash"] == "h1"
    assert job["attempt"] == 1 and job["maxAttempts"] == 3
    assert job["pendingReason"] == "no script uploaded"
    assert job["assignedNode"] is None and job["duration"] is None


def test_server_makes_a_job_id_when_none_is_given(shelby_server: ServerProcess) -> None:
    """Without jobId the server makes a unique job-… id."""
    with shelby_server.client() as c:
        a = create_job(c, script=None)
        b = create_job(c, script=None)
    assert a["jobId"].startswith("job-") and b["jobId"].startswith("job-")
    assert a["jobId"] != b["jobId"]


def test_an_existing_or_deleted_job_id_is_409(shelby_server: ServerProcess) -> None:
    """A jobId that exists, or ever existed, cannot be created again."""
    with shelby_server.client() as c:
        create_job(c, "dup", script=None)
        assert c.post("/api/jobs/create", json={"jobId": "dup"}).status_code == 409
        assert c.delete("/api/frontend/jobs/dup").status_code == 200
        r = c.post("/api/jobs/create", json={"jobId": "dup"})
    assert r.status_code == 409
    assert "dup" in r.json()["detail"]


def test_create_validates_its_body(shelby_server: ServerProcess) -> None:
    """A body that does not fit the schema is 422 and the detail names the field."""
    with shelby_server.client() as c:
        bad_id = c.post("/api/jobs/create", json={"jobId": "../etc"})
        newline = c.post("/api/jobs/create", json={"jobId": "job\n"})  # Python's $ took it
        bad_attempts = c.post("/api/jobs/create", json={"maxAttempts": 0})
        bad_type = c.post("/api/jobs/create", json={"runtimeMinutesEstimate": "soon"})
    assert bad_id.status_code == 422 and "jobId" in bad_id.json()["detail"]
    assert newline.status_code == 422 and "jobId" in newline.json()["detail"]
    assert bad_attempts.status_code == 422 and "maxAttempts" in bad_attempts.json()["detail"]
    assert bad_type.status_code == 422 and "runtimeMinutesEstimate" in bad_type.json()["detail"]


def test_timeout_defaults_to_twice_the_estimate_else_60(shelby_server: ServerProcess) -> None:
    """timeoutMinutes: as given, else twice runtimeMinutesEstimate, else 60."""
    with shelby_server.client() as c:
        estimated = create_job(c, script=None, runtimeMinutesEstimate=30)
        plain = create_job(c, script=None)
        given = create_job(c, script=None, timeoutMinutes=5, resources={"gpus": 1})
    assert estimated["timeoutMinutes"] == 60
    assert estimated["runtimeMinutesEstimate"] == 30
    assert plain["timeoutMinutes"] == 60
    assert given["timeoutMinutes"] == 5
    assert given["resources"] == {"gpus": 1}


def test_upload_script_hashes_and_defaults_the_entrypoint(shelby_server: ServerProcess) -> None:
    """upload-script answers jobId, the script's SHA-256 and the entrypoint (train.py)."""
    script = "print('héllo')\n"
    with shelby_server.client() as c:
        create_job(c, "s1", script=None)
        r = c.post("/api/jobs/upload-script", json={"jobId": "s1", "script": script})
        nested = c.post(
            "/api/jobs/upload-script",
            json={"jobId": "s1", "script": script, "entrypoint": "src/run.py"},
        )
        view = c.get("/api/frontend/jobs/s1").json()
    digest = "sha256:" + hashlib.sha256(script.encode()).hexdigest()
    assert r.status_code == 200
    assert r.json() == {"jobId": "s1", "scriptHash": digest, "entrypoint": "train.py"}
    assert nested.json()["entrypoint"] == "src/run.py"
    assert view["entrypoint"] == "src/run.py" and view["scriptHash"] == digest


def test_entrypoint_must_stay_inside_the_job_directory(shelby_server: ServerProcess) -> None:
    """An absolute path, .., a backslash, an empty part or a control character (a final
    newline too) in entrypoint is 422."""
    with shelby_server.client() as c:
        create_job(c, "s2", script=None)
        bad_ones = ("/etc/passwd", "../up.py", "a/../../b.py", "a\\b.py", "a//b.py", "./x.py", "")
        for bad in (*bad_ones, "train.py\n", "a\tb.py"):
            r = c.post(
                "/api/jobs/upload-script", json={"jobId": "s2", "script": "x", "entrypoint": bad}
            )
            assert r.status_code == 422, bad
            assert "entrypoint" in r.json()["detail"]


def test_upload_script_to_unknown_job_is_404_and_after_assignment_409(
    shelby_server: ServerProcess,
) -> None:
    """A script for a job that does not exist is 404; once assigned it cannot change (409)."""
    node = register(shelby_server, "n1")
    with shelby_server.client() as c:
        missing = c.post("/api/jobs/upload-script", json={"jobId": "nope", "script": "x"})
        create_job(c, "s3")
        assert node.poll().json()["job"]["jobId"] == "s3"
        late = c.post("/api/jobs/upload-script", json={"jobId": "s3", "script": "y"})
    assert missing.status_code == 404
    assert late.status_code == 409


def test_list_is_newest_first_with_status_filter_and_limit(shelby_server: ServerProcess) -> None:
    """Jobs list newest first; status filters; limit bounds; count is the number returned."""
    node = register(shelby_server, "n1")
    with shelby_server.client() as c:
        for i in range(4):
            create_job(c, f"L{i}")
        run_to_running(node)  # takes L0, the oldest
        everything = c.get("/api/frontend/jobs").json()
        running = c.get("/api/frontend/jobs", params={"status": "running"}).json()
        two = c.get("/api/frontend/jobs", params={"limit": 2}).json()
        bad = c.get("/api/frontend/jobs", params={"status": "done"})
        bad_limit = c.get("/api/frontend/jobs", params={"limit": "many"})
    assert [j["jobId"] for j in everything["jobs"]] == ["L3", "L2", "L1", "L0"]
    assert everything["count"] == 4
    assert [j["jobId"] for j in running["jobs"]] == ["L0"] and running["count"] == 1
    assert [j["jobId"] for j in two["jobs"]] == ["L3", "L2"] and two["count"] == 2
    assert bad.status_code == 422 and "status" in bad.json()["detail"]
    assert bad_limit.status_code == 422 and "limit" in bad_limit.json()["detail"]


def test_pending_reason_says_why_a_job_waits(shelby_server: ServerProcess) -> None:
    """pendingReason: no script, no matching node, or waiting for a free node."""
    node = register(shelby_server, "n1", specs={"cpuCount": 4, "totalRAM_GB": 8.0, "gpus": []})
    with shelby_server.client() as c:
        create_job(c, "busy")
        run_to_running(node)
        create_job(c, "unscripted", script=None)
        create_job(c, "gpu", resources={"gpus": 1})
        create_job(c, "label", labels={"zone": "mars"})
        create_job(c, "fits", resources={"cpuCount": 2})
        reasons = {
            j["jobId"]: j["pendingReason"]
            for j in c.get("/api/frontend/jobs", params={"status": "pending"}).json()["jobs"]
        }
    assert reasons == {
        "unscripted": "no script uploaded",
        "gpu": "no node matches its resources or labels",
        "label": "no node matches its resources or labels",
        "fits": "waiting for a free node",
    }


def test_job_detail_has_logs_and_provenance(shelby_server: ServerProcess) -> None:
    """Job detail carries the current attempt's logs and one provenance entry per
    lifecycle event, oldest first, with actor and hash."""
    node = register(shelby_server, "n1")
    with shelby_server.client() as c:
        create_job(c, "d1")
        run_to_running(node)
        assert node.stream("d1", 0, ["epoch 1", "epoch 2"]).status_code == 200
        assert node.finish("d1", exitCode=0, metadata={"acc": 0.9}).status_code == 200
        detail = c.get("/api/frontend/jobs/d1").json()
        audit = c.get("/api/audit/jobs/d1").json()["events"]
        missing = c.get("/api/frontend/jobs/nope")
    assert [ln["line"] for ln in detail["logs"]] == ["epoch 1", "epoch 2"]
    assert detail["logs"][0] == {
        "line": "epoch 1",
        "timestamp": 1700000000.5,
        "offset": 0,
        "stream": "stdout",
        "attempt": 1,
    }
    types = [p["type"] for p in detail["provenance"]]
    assert types == ["JobCreated", "ScriptUploaded", "JobAssigned", "JobAcked", "JobFinished"]
    actors = [p["actor"] for p in detail["provenance"]]
    assert actors == ["admin", "admin", "n1", "n1", "n1"]
    hashes = {e["seq"]: e["hash"] for e in audit}
    assert all(hashes[p["seq"]] == p["hash"] for p in detail["provenance"])
    assert detail["provenance"][2]["data"]["nodeId"] == "n1"
    assert detail["provenance"][2]["data"]["attempt"] == 1
    assert detail["status"] == "finished" and detail["exitCode"] == 0
    assert detail["metadata"] == {"acc": 0.9}
    assert detail["duration"] == round(detail["finishedAt"] - detail["startedAt"], 6)
    assert missing.status_code == 404


def test_delete_hides_the_job_but_keeps_its_history(shelby_server: ServerProcess) -> None:
    """DELETE answers {jobId, deleted}; the job is 404 everywhere after, but audit still
    has its events, and its node is told to cancel it."""
    node = register(shelby_server, "n1")
    with shelby_server.client() as c:
        create_job(c, "gone")
        run_to_running(node)
        r = c.delete("/api/frontend/jobs/gone")
        assert r.status_code == 200
        assert r.json() == {"jobId": "gone", "deleted": True}
        assert c.get("/api/frontend/jobs/gone").status_code == 404
        assert c.get("/api/frontend/logs/gone").status_code == 404
        assert c.delete("/api/frontend/jobs/gone").status_code == 404
        assert c.post("/api/frontend/jobs/gone/restart").status_code == 404
        assert "gone" not in [j["jobId"] for j in c.get("/api/frontend/jobs").json()["jobs"]]
        events = c.get("/api/audit/jobs/gone").json()["events"]
    assert events[-1]["type"] == "JobDeleted"
    assert node.heartbeat(["gone"]).json()["cancelJobs"] == ["gone"]
    assert node.ack("gone").status_code == 404
    assert node.stream("gone", 0, ["x"]).status_code == 404
    assert node.finish("gone").status_code == 404
    assert node.fetch_script("gone").status_code == 404


def test_restart_only_ended_jobs(shelby_server: ServerProcess) -> None:
    """restart: finished or failed → pending with attempt + 1; anything else is 409."""
    node = register(shelby_server, "n1")
    with shelby_server.client() as c:
        create_job(c, "r1")
        assert c.post("/api/frontend/jobs/r1/restart").status_code == 409  # pending
        run_to_running(node)
        assert c.post("/api/frontend/jobs/r1/restart").status_code == 409  # running
        node.finish("r1", status="failed", exitCode=3, error="boom")
        failed = c.get("/api/frontend/jobs/r1").json()
        r = c.post("/api/frontend/jobs/r1/restart")
    assert failed["status"] == "failed" and failed["exitCode"] == 3 and failed["error"] == "boom"
    assert r.status_code == 200
    view = r.json()
    assert view["status"] == "pending" and view["attempt"] == 2
    assert view["exitCode"] is None and view["error"] is None


def test_logs_endpoint_limit_after_and_attempt(shelby_server: ServerProcess) -> None:
    """logs: the last `limit` lines, or those after `after`; `attempt` picks an attempt."""
    node = register(shelby_server, "n1")
    with shelby_server.client() as c:
        create_job(c, "g1")
        run_to_running(node)
        node.stream("g1", 0, [f"line {i}" for i in range(10)])
        node.finish("g1")
        c.post("/api/frontend/jobs/g1/restart")
        job = run_to_running(node)
        assert job["attempt"] == 2
        node.stream("g1", 0, ["second run"], attempt=2)
        last3 = c.get("/api/frontend/logs/g1", params={"limit": 3, "attempt": 1}).json()
        after = c.get("/api/frontend/logs/g1", params={"after": 6, "limit": 2, "attempt": 1}).json()
        current = c.get("/api/frontend/logs/g1").json()
        bad = c.get("/api/frontend/logs/g1", params={"limit": 0})
    assert [ln["offset"] for ln in last3["logs"]] == [7, 8, 9] and last3["count"] == 3
    assert [ln["line"] for ln in after["logs"]] == ["line 7", "line 8"]
    assert current["attempt"] == 2 and [ln["line"] for ln in current["logs"]] == ["second run"]
    assert current["logs"][0]["attempt"] == 2
    assert bad.status_code == 422 and "limit" in bad.json()["detail"]


def test_dashboard_and_health_count_jobs(shelby_server: ServerProcess) -> None:
    """Dashboard jobStats and health jobQueue count jobs by status; health shows the log head."""
    node = register(shelby_server, "n1")
    with shelby_server.client() as c:
        create_job(c, "a")
        create_job(c, "b")
        run_to_running(node)
        dash = c.get("/api/frontend/dashboard").json()
    health = shelby_server.client("").get("/api/frontend/system/health").json()
    assert dash["jobStats"] == {
        "pending": 1,
        "assigned": 0,
        "running": 1,
        "finished": 0,
        "failed": 0,
        "total": 2,
    }
    assert dash["activeNodes"] == 1
    assert [j["jobId"] for j in dash["recentJobs"]] == ["b", "a"]
    assert isinstance(dash["timestamp"], float)
    assert health["status"] == "healthy" and health["database"] == "healthy"
    assert health["jobQueue"] == {"pending": 1, "running": 1, "completed": 0, "failed": 0}
    assert health["activeNodes"] == 1
    assert health["eventLog"]["lastSeq"] > 0 and len(health["eventLog"]["headHash"]) == 64

"""The agent protocol, endpoint by endpoint, through a real server."""

from __future__ import annotations

import hashlib
import threading
import time

from api._flow import MODEL_HASH, create_job, register, run_to_running
from conftest import ServerProcess


def test_register_answers_token_and_intervals(shelby_server: ServerProcess) -> None:
    """register returns nodeId, a token, heartbeatIntervalSeconds ≤ lease/3, and the lease;
    the node is active at once."""
    with shelby_server.client(shelby_server.join_token) as c:
        r = c.post("/api/nodes/register", json={"name": "box", "specs": {"cpuCount": 2}})
    assert r.status_code == 200
    body = r.json()
    assert body["nodeId"].startswith("node-") and len(body["token"]) >= 32
    assert body["leaseSeconds"] == shelby_server.lease_seconds
    assert 0 < body["heartbeatIntervalSeconds"] <= body["leaseSeconds"] / 3
    with shelby_server.client() as c:
        nodes = c.get("/api/frontend/nodes").json()
    assert nodes["count"] == 1
    node = nodes["nodes"][0]
    assert node["nodeId"] == body["nodeId"] and node["name"] == "box"
    assert node["status"] == "active" and node["lastSeenAgo"] == 0


def test_registering_again_revokes_the_old_token(shelby_server: ServerProcess) -> None:
    """A second register of the same nodeId issues a new token; the old one is 401."""
    first = register(shelby_server, "same")
    second = register(shelby_server, "same")
    assert first.heartbeat().status_code == 401
    assert second.heartbeat().status_code == 200


def test_nodes_list_in_registration_order_with_merged_specs(shelby_server: ServerProcess) -> None:
    """Nodes are listed in first-registration order; specs are the latest heartbeat's
    over the registration's; runningJobs are the jobs the node holds."""
    a = register(shelby_server, "a", specs={"cpuCount": 4, "os": "Linux"}, labels={"zone": "z"})
    b = register(shelby_server, "b")
    a.heartbeat(cpuUsage=45.2, ramUsage=60.1)
    register(shelby_server, "a", specs={"cpuCount": 4, "os": "Linux"}, labels={"zone": "z"})
    with shelby_server.client() as c:
        create_job(c, "held")
        run_to_running(b)
        nodes = c.get("/api/frontend/nodes").json()["nodes"]
    assert [n["nodeId"] for n in nodes] == ["a", "b"]
    assert nodes[0]["specs"] == {"cpuCount": 4, "os": "Linux", "cpuUsage": 45.2, "ramUsage": 60.1}
    assert nodes[0]["labels"] == {"zone": "z"}
    assert nodes[1]["runningJobs"] == ["held"]


def test_node_goes_inactive_after_a_lease_without_heartbeat(
    shelby_server: ServerProcess,
) -> None:
    """A node not heard from for leaseSeconds shows as inactive and stops counting."""
    register(shelby_server, "quiet")
    time.sleep(shelby_server.lease_seconds + 0.5)
    with shelby_server.client() as c:
        node = c.get("/api/frontend/nodes").json()["nodes"][0]
        dash = c.get("/api/frontend/dashboard").json()
    assert node["status"] == "inactive" and node["lastSeenAgo"] >= shelby_server.lease_seconds
    assert dash["activeNodes"] == 0


def test_heartbeat_cancel_jobs(shelby_server: ServerProcess) -> None:
    """cancelJobs lists what the node runs that is deleted, ended, restarted, unknown or
    held by another node; never a job it legitimately holds."""
    a = register(shelby_server, "a")
    b = register(shelby_server, "b", max_jobs=2)
    with shelby_server.client() as c:
        create_job(c, "mine")
        create_job(c, "deleted")
        create_job(c, "others")
        run_to_running(a)  # mine
        run_to_running(b)  # deleted
        run_to_running(b)  # others
        c.delete("/api/frontend/jobs/deleted")
    r = a.heartbeat(["mine", "deleted", "others", "ghost"])
    assert r.status_code == 200
    assert r.json() == {"ok": True, "cancelJobs": ["deleted", "others", "ghost"]}


def test_poll_shape_and_empty_queue(shelby_server: ServerProcess) -> None:
    """poll answers {"job": null} when nothing is runnable, else the job with its
    attempt, entrypoint and scriptHash; a job without a script is not runnable."""
    node = register(shelby_server, "n")
    with shelby_server.client() as c:
        assert node.poll().json() == {"job": None}
        create_job(c, "noscript", script=None)
        assert node.poll().json() == {"job": None}
        create_job(c, "p1", datasetHash="dh", runtimeMinutesEstimate=2, meta={"k": 1})
        job = node.poll().json()["job"]
    assert {
        "jobId",
        "datasetName",
        "datasetUrl",
        "datasetHash",
        "runtimeMinutesEstimate",
        "meta",
        "attempt",
        "entrypoint",
        "scriptHash",
    } <= set(job)
    assert job["jobId"] == "p1" and job["attempt"] == 1 and job["entrypoint"] == "train.py"
    assert job["scriptHash"] == "sha256:" + hashlib.sha256(b"print('hi')").hexdigest()
    assert job["datasetHash"] == "dh" and job["meta"] == {"k": 1}


def test_poll_respects_max_concurrent_jobs(shelby_server: ServerProcess) -> None:
    """A node at maxConcurrentJobs gets {"job": null} until one of its jobs ends."""
    node = register(shelby_server, "n", max_jobs=2)
    with shelby_server.client() as c:
        for i in range(3):
            create_job(c, f"m{i}")
    first = node.poll().json()["job"]
    second = node.poll().json()["job"]
    assert {first["jobId"], second["jobId"]} == {"m0", "m1"}
    assert node.poll().json() == {"job": None}
    node.ack("m0")
    node.finish("m0")
    assert node.poll().json()["job"]["jobId"] == "m2"


def test_poll_matches_resources_and_labels(shelby_server: ServerProcess) -> None:
    """A job goes only to a node whose specs and labels satisfy it."""
    small = register(shelby_server, "small", specs={"cpuCount": 2, "totalRAM_GB": 4.0, "gpus": []})
    big = register(
        shelby_server,
        "big",
        specs={"cpuCount": 32, "totalRAM_GB": 128.0, "gpus": [{"name": "A100", "memoryGB": 80}]},
        labels={"zone": "eu-1"},
        max_jobs=4,
    )
    with shelby_server.client() as c:
        create_job(c, "needs-gpu", resources={"gpus": 1})
        create_job(c, "needs-ram", resources={"ramGB": 64})
        create_job(c, "needs-zone", labels={"zone": "eu-1"})
        create_job(c, "wrong-zone", labels={"zone": "us-2"})
    assert small.poll().json() == {"job": None}
    taken = [big.poll().json()["job"]["jobId"] for _ in range(3)]
    assert taken == ["needs-gpu", "needs-ram", "needs-zone"]
    assert big.poll().json() == {"job": None}


def test_poll_wait_returns_when_a_job_arrives(shelby_server: ServerProcess) -> None:
    """poll with wait holds until a job becomes runnable, then answers it at once."""
    node = register(shelby_server, "n")
    answer: dict[str, object] = {}

    def long_poll() -> None:
        started = time.monotonic()
        answer["body"] = node.poll(wait=20).json()
        answer["seconds"] = time.monotonic() - started

    t = threading.Thread(target=long_poll)
    t.start()
    time.sleep(0.5)
    with shelby_server.client() as c:
        create_job(c, "late")
    t.join(timeout=25)
    assert answer["body"] == {"job": answer["body"]["job"]}  # type: ignore[index]
    assert answer["body"]["job"]["jobId"] == "late"  # type: ignore[index]
    assert answer["seconds"] < 5  # type: ignore[operator]


def test_poll_wait_times_out_with_null(shelby_server: ServerProcess) -> None:
    """With nothing to run, poll with wait answers {"job": null} after about `wait`."""
    node = register(shelby_server, "n")
    started = time.monotonic()
    r = node.poll(wait=1)
    elapsed = time.monotonic() - started
    assert r.json() == {"job": None}
    assert 0.9 <= elapsed < 4
    assert node.poll(wait=31).status_code == 422


def test_ack_answers_running_and_refuses_others_jobs(shelby_server: ServerProcess) -> None:
    """ack → {jobId, status: running, startedAt}; 409 for a job not assigned to the node
    or a stale attempt; repeating it is harmless."""
    a = register(shelby_server, "a")
    b = register(shelby_server, "b")
    with shelby_server.client() as c:
        create_job(c, "k1")
    job = a.poll().json()["job"]
    assert b.ack("k1").status_code == 409
    assert a.ack("k1", attempt=2).status_code == 409
    r = a.ack("k1", attempt=1)
    assert r.status_code == 200
    body = r.json()
    assert body["jobId"] == "k1" and body["status"] == "running"
    assert isinstance(body["startedAt"], float) and job["attempt"] == 1
    again = a.ack("k1", attempt=1)
    assert again.status_code == 200 and again.json()["startedAt"] == body["startedAt"]


def test_fetch_script(shelby_server: ServerProcess) -> None:
    """fetch-script gives the assigned node the script, requirements, entrypoint and
    hash; another node gets 409."""
    a = register(shelby_server, "a")
    b = register(shelby_server, "b")
    script = "import sys\nprint(sys.argv)\n"
    with shelby_server.client() as c:
        create_job(c, "f1", script=None)
        c.post(
            "/api/jobs/upload-script",
            json={"jobId": "f1", "script": script, "requirements": "numpy", "entrypoint": "m.py"},
        )
    a.poll()
    r = a.fetch_script("f1")
    assert r.status_code == 200
    assert r.json() == {
        "jobId": "f1",
        "script": script,
        "requirements": "numpy",
        "entrypoint": "m.py",
        "scriptHash": "sha256:" + hashlib.sha256(script.encode()).hexdigest(),
    }
    assert b.fetch_script("f1").status_code == 409
    assert a.fetch_script("nope").status_code == 404


def test_stream_log_is_idempotent_by_offset(shelby_server: ServerProcess) -> None:
    """Lines at stored offsets are dropped, so a resent batch duplicates nothing; a gap
    is 409 naming the expected offset."""
    node = register(shelby_server, "n")
    with shelby_server.client() as c:
        create_job(c, "s")
        run_to_running(node)
        first = node.stream("s", 0, ["a", "b", "c"])
        resent = node.stream("s", 0, ["a", "b", "c"])
        overlap = node.stream("s", 2, ["c", "d"])
        gap = node.stream("s", 9, ["z"])
        single = node.http.post(
            "/api/jobs/stream-log",
            json={"jobId": "s", "nodeId": "n", "line": "one more", "timestamp": 1700000123.25},
        )
        logs = c.get("/api/frontend/logs/s").json()["logs"]
    assert first.json() == {"accepted": 3, "nextOffset": 3}
    assert resent.json() == {"accepted": 0, "nextOffset": 3}
    assert overlap.json() == {"accepted": 1, "nextOffset": 4}
    assert gap.status_code == 409 and "4" in gap.json()["detail"]
    assert single.json() == {"accepted": 1, "nextOffset": 5}
    assert [ln["line"] for ln in logs] == ["a", "b", "c", "d", "one more"]
    assert logs[-1]["timestamp"] == 1700000123.25


def test_stream_log_limits(shelby_server: ServerProcess) -> None:
    """Over 1,000 lines or 1 MiB is 413; a line over 16 KiB is cut to 16 KiB and marked."""
    node = register(shelby_server, "n")
    with shelby_server.client() as c:
        create_job(c, "big")
        run_to_running(node)
        too_many = node.stream("big", 0, ["x"] * 1001)
        too_big = node.stream("big", 0, ["y" * 15000] * 80)
        long_line = "é" * 10000  # 20,000 bytes of UTF-8
        cut = node.stream("big", 0, [long_line, "short"])
        logs = c.get("/api/frontend/logs/big").json()["logs"]
    assert too_many.status_code == 413
    assert too_big.status_code == 413
    assert cut.json() == {"accepted": 2, "nextOffset": 2}
    assert logs[0]["truncated"] is True
    assert len(logs[0]["line"].encode()) == 16 * 1024 and logs[0]["line"] == "é" * 8192
    assert "truncated" not in logs[1]


def test_usage_report_sums_per_job(shelby_server: ServerProcess) -> None:
    """usage-report with a jobId adds to the job's usage; without one it is the node's."""
    node = register(shelby_server, "n")
    with shelby_server.client() as c:
        create_job(c, "u")
        run_to_running(node)
        url = "/api/usage-report"
        r1 = node.http.post(
            url,
            json={"nodeId": "n", "jobId": "u", "attempt": 1, "cpuSeconds": 2.5, "peakRamMB": 100},
        )
        r2 = node.http.post(
            url,
            json={
                "nodeId": "n",
                "jobId": "u",
                "cpuSeconds": 1.5,
                "wallSeconds": 4,
                "peakRamMB": 300,
            },
        )
        stale = node.http.post(url, json={"nodeId": "n", "jobId": "u", "attempt": 7})
        node_only = node.http.post(url, json={"nodeId": "n", "cpuSeconds": 9})
        usage = c.get("/api/frontend/jobs/u").json()["usage"]
    assert r1.json() == {"ok": True} and r2.status_code == 200
    assert stale.status_code == 409
    assert node_only.json() == {"ok": True}
    assert usage == {
        "reports": 2,
        "cpuSeconds": 4.0,
        "wallSeconds": 4.0,
        "peakRamMB": 300.0,
        "gpuSeconds": None,
    }


def test_finish_is_idempotent_and_conflicting_finish_is_409(shelby_server: ServerProcess) -> None:
    """The same finish twice is 200 and appends nothing; a different one is 409."""
    node = register(shelby_server, "n")
    with shelby_server.client() as c:
        create_job(c, "f")
        run_to_running(node)
        first = node.finish("f", exitCode=0, metadata={"acc": 0.5})
        before = len(c.get("/api/audit/jobs/f").json()["events"])
        again = node.finish("f", exitCode=0, metadata={"acc": 0.5})
        after = len(c.get("/api/audit/jobs/f").json()["events"])
        different = node.finish("f", status="failed", error="late")
        view = c.get("/api/frontend/jobs/f").json()
    assert first.json() == {"jobId": "f", "status": "finished"}
    assert again.status_code == 200 and again.json() == {"jobId": "f", "status": "finished"}
    assert before == after
    assert different.status_code == 409
    assert view["modelHash"] == MODEL_HASH and view["metadata"] == {"acc": 0.5}


def test_finish_validation_and_failure(shelby_server: ServerProcess) -> None:
    """finished needs a sha256 modelHash (422 otherwise); failed may leave it out and
    keeps its exitCode and error; a script's failure is not retried."""
    node = register(shelby_server, "n")
    with shelby_server.client() as c:
        create_job(c, "x")
        run_to_running(node)
        no_hash = node.http.post(
            "/api/jobs/finish", json={"jobId": "x", "nodeId": "n", "status": "finished"}
        )
        bad_hash = node.finish("x", modelHash="abc")
        newline = node.finish("x", modelHash=MODEL_HASH + "\n")
        bad_status = node.finish("x", status="done")
        failed = node.finish("x", status="failed", exitCode=2, error="exit 2")
        view = c.get("/api/frontend/jobs/x").json()
    assert no_hash.status_code == 422 and "modelHash" in no_hash.json()["detail"]
    assert bad_hash.status_code == 422 and "modelHash" in bad_hash.json()["detail"]
    assert newline.status_code == 422 and "modelHash" in newline.json()["detail"]
    assert bad_status.status_code == 422 and "status" in bad_status.json()["detail"]
    assert failed.json() == {"jobId": "x", "status": "failed"}
    assert view["status"] == "failed" and view["exitCode"] == 2 and view["error"] == "exit 2"
    assert view["attempt"] == 1
    assert node.poll().json() == {"job": None}


def test_job_scoped_endpoints_refuse_a_node_that_does_not_hold_the_job(
    shelby_server: ServerProcess,
) -> None:
    """ack, fetch-script, stream-log, usage-report and finish are 409 for a job that is
    not assigned to the node, and change nothing."""
    holder = register(shelby_server, "holder")
    other = register(shelby_server, "other")
    with shelby_server.client() as c:
        create_job(c, "h")
        run_to_running(holder)
        before = c.get("/api/audit/jobs/h").json()["events"]
        codes = [
            other.ack("h").status_code,
            other.fetch_script("h").status_code,
            other.stream("h", 0, ["x"]).status_code,
            other.http.post(
                "/api/usage-report", json={"nodeId": "other", "jobId": "h", "cpuSeconds": 1}
            ).status_code,
            other.finish("h").status_code,
        ]
        after = c.get("/api/audit/jobs/h").json()["events"]
    assert codes == [409] * 5
    assert before == after

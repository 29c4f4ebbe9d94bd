"""POST /api/jobs/release: the node holding an attempt hands it back unfinished, through
a real server. The lease is long here, so that nothing but the release moves a job."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from api._flow import Node, create_job, register, run_to_running
from conftest import ServerFactory, ServerProcess


@pytest.fixture
def server(server_factory: ServerFactory) -> ServerProcess:
    return server_factory(lease_seconds=60)


def release(node: Node, job_id: str, attempt: int, reason: str = "shutting down") -> httpx.Response:
    return node.http.post(
        "/api/jobs/release",
        json={"jobId": job_id, "nodeId": node.node_id, "attempt": attempt, "reason": reason},
    )


def audit(admin: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = admin.get(f"/api/audit/jobs/{job_id}").json()["events"]
    return events


def test_release_requeues_the_job_at_once_as_the_next_attempt(server: ServerProcess) -> None:
    """The holder's release answers pending on attempt 2; the job waits in the queue with
    no node, its provenance shows JobReleased by the node, and the next poll takes it."""
    node = register(server, "n")
    with server.client() as admin:
        create_job(admin, "r")
        run_to_running(node)
        answer = release(node, "r", 1, reason="the agent shut down")
        view = admin.get("/api/frontend/jobs/r").json()
        polled = node.poll().json()["job"]
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"jobId": "r", "status": "pending", "attempt": 2}
    assert (view["status"], view["attempt"], view["assignedNode"]) == ("pending", 2, None)
    assert view["pendingReason"] == "waiting for a free node"
    entry = view["provenance"][-1]
    assert (entry["type"], entry["actor"]) == ("JobReleased", "n")
    assert entry["data"] == {
        "type": "JobReleased",
        "jobId": "r",
        "nodeId": "n",
        "attempt": 1,
        "reason": "the agent shut down",
        "requeued": True,
    }
    assert (polled["jobId"], polled["attempt"]) == ("r", 2)


def test_release_of_an_assigned_but_unacked_attempt(server: ServerProcess) -> None:
    """An attempt the node was given but never acked can be handed back too."""
    node = register(server, "n")
    with server.client() as admin:
        create_job(admin, "a")
        job = node.poll().json()["job"]
        answer = release(node, "a", job["attempt"])
    assert answer.json() == {"jobId": "a", "status": "pending", "attempt": 2}


def test_release_of_the_last_attempt_fails_the_job(server: ServerProcess) -> None:
    """With maxAttempts used up the release fails the job, naming the node's reason."""
    node = register(server, "n")
    with server.client() as admin:
        create_job(admin, "last", maxAttempts=1)
        run_to_running(node)
        answer = release(node, "last", 1, reason="the agent shut down")
        view = admin.get("/api/frontend/jobs/last").json()
    assert answer.json() == {"jobId": "last", "status": "failed", "attempt": 1}
    assert view["status"] == "failed"
    assert view["error"] == "released by its node on the last attempt: the agent shut down"
    assert [(e["type"], e["actor"]) for e in view["provenance"][-2:]] == [
        ("JobReleased", "n"),
        ("JobFailed", "n"),
    ]
    assert node.poll().json() == {"job": None}


def test_repeating_a_release_answers_200_and_appends_nothing(server: ServerProcess) -> None:
    """A release sent again (its first answer was lost) is 200 with the job as it is now,
    even after the job went to another node, and adds nothing to the log."""
    node = register(server, "n")
    other = register(server, "other")
    with server.client() as admin:
        create_job(admin, "twice")
        run_to_running(node)
        first = release(node, "twice", 1)
        before = audit(admin, "twice")
        again = release(node, "twice", 1)
        run_to_running(other)
        late = release(node, "twice", 1, reason="said differently")
        after = audit(admin, "twice")
    assert first.json() == again.json() == {"jobId": "twice", "status": "pending", "attempt": 2}
    assert late.status_code == 200
    assert late.json() == {"jobId": "twice", "status": "running", "attempt": 2}
    assert [e["type"] for e in after[len(before) :]] == ["JobAssigned", "JobAcked"]


def test_release_by_another_node_or_for_another_attempt_is_409(server: ServerProcess) -> None:
    """Only the node holding the current attempt may release it: another node, an
    attempt that is not current, or a job not held is 409 and changes nothing."""
    holder = register(server, "holder")
    other = register(server, "other")
    with server.client() as admin:
        create_job(admin, "h")
        create_job(admin, "waiting")
        run_to_running(holder)
        before = audit(admin, "h")
        codes = [
            release(other, "h", 1).status_code,
            release(holder, "h", 2).status_code,
            release(holder, "waiting", 1).status_code,
        ]
        after = audit(admin, "h")
        stale = release(holder, "h", 2)
    assert codes == [409, 409, 409]
    assert before == after
    assert "not current" in stale.json()["detail"]


def test_release_of_a_deleted_or_unknown_job_is_404(server: ServerProcess) -> None:
    """A job deleted while its node held it, or one that never was, is 404."""
    node = register(server, "n")
    with server.client() as admin:
        create_job(admin, "doomed")
        run_to_running(node)
        assert admin.delete("/api/frontend/jobs/doomed").status_code == 200
    assert release(node, "doomed", 1).status_code == 404
    assert release(node, "never", 1).status_code == 404


def test_release_validates_its_body(server: ServerProcess) -> None:
    """attempt is required and at least 1 (422 naming it); a node acting for another
    node is 403."""
    node = register(server, "n")
    register(server, "someone")
    missing = node.http.post("/api/jobs/release", json={"jobId": "x", "nodeId": "n"})
    zero = node.http.post(
        "/api/jobs/release", json={"jobId": "x", "nodeId": "n", "attempt": 0, "reason": "r"}
    )
    foreign = node.http.post(
        "/api/jobs/release",
        json={"jobId": "x", "nodeId": "someone", "attempt": 1, "reason": "r"},
    )
    assert missing.status_code == 422 and "attempt" in missing.json()["detail"]
    assert zero.status_code == 422 and "attempt" in zero.json()["detail"]
    assert foreign.status_code == 403


def test_a_release_wakes_a_waiting_poll(server: ServerProcess) -> None:
    """A node long-polling while the job is held elsewhere gets it when it is released,
    within its wait: a release wakes polls like a lost lease does."""
    holder = register(server, "holder")
    waiter = register(server, "waiter")
    got: dict[str, Any] = {}
    with server.client() as admin:
        create_job(admin, "handed")
        run_to_running(holder)

        def long_poll() -> None:
            got["answer"] = waiter.poll(wait=20).json()

        thread = threading.Thread(target=long_poll)
        thread.start()
        # Let the poll reach its wait: released before that, the job would be found by
        # the poll's first look, and the wake-up would go untested.
        time.sleep(0.5)
        assert release(holder, "handed", 1).status_code == 200
        thread.join(timeout=25)
        kinds = [e["type"] for e in audit(admin, "handed")]
    assert not thread.is_alive()
    assert (got["answer"]["job"]["jobId"], got["answer"]["job"]["attempt"]) == ("handed", 2)
    assert "LeaseExpired" not in kinds


def test_openapi_documents_release(server: ServerProcess) -> None:
    """/openapi.json lists POST /api/jobs/release with the node token, its body and
    answer, and its 409."""
    doc = httpx.get(server.url + "/openapi.json").json()
    op = doc["paths"]["/api/jobs/release"]["post"]
    assert op["security"] == [{"nodeToken": []}]
    assert {"200", "404", "409"} <= set(op["responses"])
    body_ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = doc["components"]["schemas"][body_ref.rsplit("/", 1)[1]]
    assert {"jobId", "nodeId", "attempt", "reason"} <= set(body["properties"])
    answer_ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    answer = doc["components"]["schemas"][answer_ref.rsplit("/", 1)[1]]
    assert set(answer["properties"]) == {"jobId", "status", "attempt"}

"""The server starts, answers, and stops through the shared fixture."""

from __future__ import annotations

from conftest import ServerProcess


def test_health_is_public_and_healthy(shelby_server: ServerProcess) -> None:
    """Health needs no token and reports a reachable database."""
    r = shelby_server.client("").get("/api/frontend/system/health")
    assert r.status_code == 200
    assert r.json()["status"] == "healthy"


def test_restart_keeps_the_database(shelby_server: ServerProcess) -> None:
    """A job created before a SIGKILL is still there after a restart on the same db."""
    with shelby_server.client() as c:
        r = c.post("/api/jobs/create", json={"jobId": "kept", "datasetName": "d"})
        assert r.status_code == 200, r.text
    shelby_server.kill()
    shelby_server.start()
    with shelby_server.client() as c:
        assert c.get("/api/frontend/jobs/kept").json()["jobId"] == "kept"

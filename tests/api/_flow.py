"""Small steps of the protocol that many API tests share, through real HTTP."""

from __future__ import annotations

from typing import Any

import httpx

from conftest import ServerProcess

MODEL_HASH = "sha256:" + "ab" * 32


class Node:
    """A registered node: its id and a client that carries its token."""

    def __init__(self, server: ServerProcess, node_id: str, token: str) -> None:
        self.server = server
        self.node_id = node_id
        self.token = token
        self.http = server.client(token)

    def heartbeat(self, running: list[str] | None = None, **specs: Any) -> httpx.Response:
        return self.http.post(
            "/api/nodes/heartbeat",
            json={"nodeId": self.node_id, "specs": specs, "runningJobs": running or []},
        )

    def poll(self, wait: float | None = None) -> httpx.Response:
        params: dict[str, Any] = {"nodeId": self.node_id}
        if wait is not None:
            params["wait"] = wait
        return self.http.get("/api/jobs/poll", params=params)

    def ack(self, job_id: str, attempt: int | None = None) -> httpx.Response:
        body: dict[str, Any] = {"jobId": job_id, "nodeId": self.node_id}
        if attempt is not None:
            body["attempt"] = attempt
        return self.http.post("/api/jobs/ack", json=body)

    def fetch_script(self, job_id: str) -> httpx.Response:
        return self.http.get(
            "/api/jobs/fetch-script", params={"jobId": job_id, "nodeId": self.node_id}
        )

    def stream(
        self, job_id: str, offset: int, lines: list[str], attempt: int | None = None
    ) -> httpx.Response:
        body: dict[str, Any] = {
            "jobId": job_id,
            "nodeId": self.node_id,
            "offset": offset,
            "lines": [{"line": ln, "timestamp": 1700000000.5 + i} for i, ln in enumerate(lines)],
        }
        if attempt is not None:
            body["attempt"] = attempt
        return self.http.post("/api/jobs/stream-log", json=body)

    def finish(
        self, job_id: str, status: str = "finished", attempt: int | None = None, **extra: Any
    ) -> httpx.Response:
        body: dict[str, Any] = {"jobId": job_id, "nodeId": self.node_id, "status": status}
        if status == "finished":
            body["modelHash"] = MODEL_HASH
        if attempt is not None:
            body["attempt"] = attempt
        body.update(extra)
        return self.http.post("/api/jobs/finish", json=body)

    def close(self) -> None:
        self.http.close()


def register(
    server: ServerProcess,
    node_id: str | None = None,
    *,
    specs: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    max_jobs: int = 1,
) -> Node:
    body: dict[str, Any] = {
        "name": node_id or "anonymous",
        "specs": specs if specs is not None else {"cpuCount": 8, "totalRAM_GB": 32.0, "gpus": []},
        "labels": labels or {},
        "maxConcurrentJobs": max_jobs,
    }
    if node_id is not None:
        body["nodeId"] = node_id
    with server.client(server.join_token) as c:
        r = c.post("/api/nodes/register", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    return Node(server, data["nodeId"], data["token"])


def create_job(
    admin: httpx.Client,
    job_id: str | None = None,
    *,
    script: str | None = "print('hi')",
    **fields: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"datasetName": "MNIST", "datasetUrl": "https://example.org/mnist"}
    if job_id is not None:
        body["jobId"] = job_id
    body.update(fields)
    r = admin.post("/api/jobs/create", json=body)
    assert r.status_code == 200, r.text
    job: dict[str, Any] = r.json()
    if script is not None:
        u = admin.post("/api/jobs/upload-script", json={"jobId": job["jobId"], "script": script})
        assert u.status_code == 200, u.text
    return job


def run_to_running(node: Node) -> dict[str, Any]:
    """Poll, ack: the node now runs a job; returns the poll's job."""
    r = node.poll()
    assert r.status_code == 200, r.text
    job: dict[str, Any] = r.json()["job"]
    assert job is not None
    a = node.ack(job["jobId"], job["attempt"])
    assert a.status_code == 200, a.text
    return job

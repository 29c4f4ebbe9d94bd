"""Self-description: OpenAPI, Swagger UI, Redoc and metrics; and the server's own logs."""

from __future__ import annotations

import json
import re

import httpx

from api._flow import create_job, register, run_to_running
from conftest import ServerProcess

API_MD_ENDPOINTS = {
    ("get", "/api/frontend/dashboard"),
    ("get", "/api/frontend/system/health"),
    ("get", "/api/frontend/jobs"),
    ("get", "/api/frontend/jobs/{job_id}"),
    ("delete", "/api/frontend/jobs/{job_id}"),
    ("post", "/api/frontend/jobs/{job_id}/restart"),
    ("get", "/api/frontend/nodes"),
    ("get", "/api/frontend/logs/{job_id}"),
    ("post", "/api/jobs/create"),
    ("post", "/api/jobs/upload-script"),
    ("post", "/api/nodes/register"),
    ("post", "/api/nodes/heartbeat"),
    ("get", "/api/jobs/poll"),
    ("post", "/api/jobs/ack"),
    ("get", "/api/jobs/fetch-script"),
    ("post", "/api/jobs/stream-log"),
    ("post", "/api/usage-report"),
    ("post", "/api/jobs/finish"),
    ("get", "/api/audit/log"),
    ("get", "/api/audit/jobs/{job_id}"),
    ("get", "/metrics"),
}


def _resolve(doc: dict, schema: dict) -> dict:  # type: ignore[type-arg]
    ref = schema.get("$ref")
    return doc["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def test_openapi_covers_every_endpoint_with_schemas(shelby_server: ServerProcess) -> None:
    """/openapi.json (public) documents every endpoint with its request and response
    schemas, its errors and its security scheme."""
    doc = httpx.get(shelby_server.url + "/openapi.json").json()
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert documented >= API_MD_ENDPOINTS
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert "200" in op["responses"], (method, path)
            content = op["responses"]["200"]["content"]
            assert content and all("schema" in c for c in content.values()), (method, path)
            if method == "post" and path != "/api/frontend/jobs/{job_id}/restart":
                assert "requestBody" in op, (method, path)
            assert "security" in op
    ops = {(m, p): op for p, o in doc["paths"].items() for m, op in o.items()}
    assert ops[("get", "/api/frontend/jobs")]["security"] == [{"adminToken": []}]
    assert ops[("post", "/api/nodes/register")]["security"] == [{"joinToken": []}]
    assert ops[("post", "/api/nodes/heartbeat")]["security"] == [{"nodeToken": []}]
    assert ops[("get", "/api/frontend/system/health")]["security"] == []
    poll_params = {p["name"]: p for p in ops[("get", "/api/jobs/poll")]["parameters"]}
    assert poll_params["nodeId"]["required"] is True
    assert poll_params["wait"]["schema"]["maximum"] == 30
    finish = _resolve(
        doc,
        ops[("post", "/api/jobs/finish")]["requestBody"]["content"]["application/json"]["schema"],
    )
    assert {"jobId", "nodeId", "attempt", "status", "modelHash", "exitCode"} <= set(
        finish["properties"]
    )
    job_view = doc["components"]["schemas"]["JobView"]
    assert {"jobId", "pendingReason", "scriptHash", "usage"} <= set(job_view["properties"])
    assert set(doc["components"]["securitySchemes"]) == {"adminToken", "joinToken", "nodeToken"}
    assert "409" in ops[("post", "/api/jobs/ack")]["responses"]
    # Text answers are documented as text: /metrics always, a checkpoint unless JSON is asked.
    assert set(ops[("get", "/metrics")]["responses"]["200"]["content"]) == {"text/plain"}
    checkpoint = ops[("get", "/api/audit/checkpoint")]["responses"]["200"]["content"]
    assert set(checkpoint) == {"text/plain", "application/json"}


def test_swagger_ui_and_redoc_work_offline(shelby_server: ServerProcess) -> None:
    """/docs and /redoc load only assets this server serves itself."""
    with httpx.Client(base_url=shelby_server.url) as c:
        for page in ("/docs", "/redoc"):
            html = c.get(page)
            assert html.status_code == 200 and "text/html" in html.headers["content-type"]
            assert "/openapi.json" in html.text
            assert not re.search(r"(src|href)=\"https?://", html.text)
            assets = re.findall(r"(?:src|href)=\"(/[^\"]+)\"", html.text)
            assert assets
            for asset in assets:
                r = c.get(asset)
                assert r.status_code == 200 and len(r.content) > 1000, asset


def test_metrics_need_the_admin_token_and_count(shelby_server: ServerProcess) -> None:
    """/metrics is Prometheus text with requests by route and code, latency histograms,
    events appended, jobs by status and active nodes; admin token only."""
    node = register(shelby_server, "n")
    with shelby_server.client() as c:
        create_job(c, "m")
        run_to_running(node)
        c.get("/api/frontend/jobs/nope")
        text = c.get("/metrics").text
    assert httpx.get(shelby_server.url + "/metrics").status_code == 401
    assert node.http.get("/metrics").status_code == 403
    assert (
        'shelby_http_requests_total{code="404",method="GET",'
        'route="/api/frontend/jobs/{job_id}"} 1.0'
    ) in text
    assert 'shelby_http_request_duration_seconds_bucket{le="0.005",route="/api/jobs/poll"}' in text
    events = float(re.search(r"^shelby_events_appended_total (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    assert events >= 5  # registered, created, script, assigned, acked
    assert 'shelby_jobs{status="running"} 1.0' in text
    assert "shelby_active_nodes 1.0" in text


def test_server_logs_are_json_lines_without_secrets(shelby_server: ServerProcess) -> None:
    """Each request is one JSON log line with request id, route, status and duration;
    no token and no script body ever appears in the log."""
    secret_script = "print('TOP-SECRET-SCRIPT-BODY')"
    node = register(shelby_server, "n")
    with shelby_server.client() as c:
        create_job(c, "s", script=secret_script)
        run_to_running(node)
        node.fetch_script("s")
        r = c.get("/api/frontend/jobs/s", headers={"X-Request-ID": "trace-me-1"})
        httpx.get(shelby_server.url + "/ws/whatever?token=" + shelby_server.admin_token)
    assert r.headers["x-request-id"] == "trace-me-1"
    shelby_server.stop()
    text = shelby_server.log_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    requests = [ln for ln in lines if ln.get("event") == "request"]
    traced = [ln for ln in requests if ln["request_id"] == "trace-me-1"]
    assert traced and traced[0]["route"] == "/api/frontend/jobs/{job_id}"
    assert traced[0]["status"] == 200 and traced[0]["duration_ms"] >= 0
    assert all(
        {"request_id", "route", "status", "duration_ms", "method"} <= set(ln) for ln in requests
    )
    for secret in (
        shelby_server.admin_token,
        shelby_server.join_token,
        node.token,
        "TOP-SECRET-SCRIPT-BODY",
    ):
        assert secret not in text


def test_audit_log_is_enough_to_recompute_every_hash(shelby_server: ServerProcess) -> None:
    """/api/audit/log pages through the raw log (after, limit) and its fields recompute
    each hash from the first event on, with json and hashlib alone."""
    import hashlib

    node = register(shelby_server, "n")
    with shelby_server.client() as c:
        create_job(c, "a1", meta={"lr": 1e-05, "name": "ünïcode"})
        run_to_running(node)
        node.stream("a1", 0, ["x"])
        events = []
        after = 0
        while True:
            page = c.get("/api/audit/log", params={"after": after, "limit": 3}).json()["events"]
            if not page:
                break
            assert len(page) <= 3
            events.extend(page)
            after = page[-1]["seq"]
        too_many = c.get("/api/audit/log", params={"limit": 10001})
    assert too_many.status_code == 422
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    prev = "0" * 64
    for e in events:
        assert e["prevHash"] == prev
        canonical = json.dumps(
            {
                "data": e["data"],
                "seq": e["seq"],
                "stream": e["stream"],
                "timestamp": e["timestamp"],
                "type": e["type"],
                "version": e["version"],
            },
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        digest = hashlib.sha256(bytes.fromhex(prev) + canonical.encode()).hexdigest()
        assert digest == e["hash"], e["seq"]
        prev = e["hash"]
    node_events = [e for e in events if e["stream"] == "node-n"]
    assert node_events[0]["type"] == "NodeRegistered"


def test_request_logs_carry_node_and_job_ids(shelby_server: ServerProcess) -> None:
    """A node's request is logged with its node id, and job-scoped ones with the job id."""
    node = register(shelby_server, "n")
    with shelby_server.client() as c:
        create_job(c, "ids")
    run_to_running(node)
    shelby_server.stop()
    lines = [json.loads(x) for x in shelby_server.log_text().splitlines() if x.startswith("{")]
    acks = [ln for ln in lines if ln.get("route") == "/api/jobs/ack"]
    assert acks and acks[0]["node_id"] == "n" and acks[0]["job_id"] == "ids"

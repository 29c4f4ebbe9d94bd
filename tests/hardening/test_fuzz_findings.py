"""What the contract fuzzing (test_fuzz_contract.py) found, each kept as a plain
regression test: numbers that made the server raise (500), integers written as whole
floats, query parameters given twice or as ``null``, and rules the server enforced that
its OpenAPI document did not state."""

from __future__ import annotations

import re

import httpx

from api._flow import create_job, register, run_to_running
from conftest import ServerProcess
from hardening._support import head, module_server, server_errors

__all__ = ["module_server"]

BEYOND_INT64 = 2**63
BEYOND_DOUBLE = "1.7e308"  # doubled, or summed twice, it is infinity


def _raw(c: httpx.Client, path: str, text: str) -> httpx.Response:
    return c.post(path, content=text, headers={"Content-Type": "application/json"})


def test_numbers_past_what_is_stored_or_computed_are_422(module_server: ServerProcess) -> None:
    """A log position past 64 bits reached SQLite (OverflowError), an estimate whose
    double is infinity reached the canonical JSON encoder (ValueError), an exit code
    past 64 bits reached the jobs table, and two huge usage reports summed to infinity
    (served as null): each was a 500 or a broken view. Now each is a 422 that names the
    field, and nothing is appended."""
    node = register(module_server, "numbers", max_jobs=2)
    with module_server.client() as c:
        create_job(c, "numbers")
        run_to_running(node)
        before = head(module_server)
        usage = f'{{"nodeId": "numbers", "jobId": "numbers", "cpuSeconds": {BEYOND_DOUBLE}}}'
        answers = {
            "runtimeMinutesEstimate": _raw(
                c, "/api/jobs/create", f'{{"runtimeMinutesEstimate": {BEYOND_DOUBLE}}}'
            ),
            "timeoutMinutes": _raw(c, "/api/jobs/create", f'{{"timeoutMinutes": {BEYOND_DOUBLE}}}'),
            "exitCode": node.finish("numbers", "failed", exitCode=2**70),
            "cpuSeconds": _raw(node.http, "/api/usage-report", usage),
            "after": c.get("/api/audit/log", params={"after": BEYOND_INT64}),
            "after ": c.get("/api/frontend/logs/numbers", params={"after": BEYOND_INT64}),
            "seq": c.get("/api/audit/proof/inclusion", params={"seq": BEYOND_INT64}),
            "offset": node.stream("numbers", BEYOND_INT64, ["x"]),
        }
        at_the_edge = c.get("/api/audit/log", params={"after": BEYOND_INT64 - 1})
    for name, r in answers.items():
        assert r.status_code == 422, (name, r.status_code, r.text)
        assert r.json()["detail"].startswith(name.strip()), (name, r.text)
    assert at_the_edge.status_code == 200 and at_the_edge.json() == {"events": []}
    assert head(module_server) == before
    assert server_errors(module_server) == []


def test_whole_floats_are_integers(module_server: ServerProcess) -> None:
    """JSON Schema (and so /openapi.json) counts 2.0 as the integer 2; the server refused
    it. Now a whole float is taken where an integer belongs, a fraction is still 422,
    and free-form data keeps its floats as sent."""
    with module_server.client() as c:
        made = _raw(
            c,
            "/api/jobs/create",
            '{"jobId": "whole", "maxAttempts": 2.0, "meta": {"lr": 1.0},'
            ' "resources": {"cpuCount": 1.0}}',
        )
        fraction = _raw(c, "/api/jobs/create", '{"maxAttempts": 2.5}')
        too_big = _raw(c, "/api/jobs/create", '{"maxAttempts": 300.0}')
        c.post("/api/jobs/upload-script", json={"jobId": "whole", "script": "x"})
        view = c.get("/api/frontend/jobs/whole")
    assert made.status_code == 200, made.text
    assert made.json()["maxAttempts"] == 2 and made.json()["resources"]["cpuCount"] == 1
    assert '"meta":{"lr":1.0}' in view.text
    assert fraction.status_code == 422 and "maxAttempts" in fraction.json()["detail"]
    assert too_big.status_code == 422 and "<= 100" in too_big.json()["detail"]
    node = register(module_server, "whole", max_jobs=1)
    assert node.poll().json()["job"]["jobId"] == "whole"
    ack = node.http.post(
        "/api/jobs/ack", json={"jobId": "whole", "nodeId": "whole", "attempt": 1.0}
    )
    assert ack.status_code == 200, ack.text


def test_query_parameters_come_once_and_with_a_value(module_server: ServerProcess) -> None:
    """`status=null` listed every job (lax conversion read it as no filter) and a
    parameter given twice silently took the last; both are 422 now, and the document
    no longer offers null for a query parameter. A parameter the endpoint does not
    know is ignored, even given twice."""
    with module_server.client() as c:
        null = c.get("/api/frontend/jobs?status=null")
        empty = c.get("/api/audit/proof/inclusion?seq=1&treeSize=")
        twice = c.get("/api/audit/log?after=1&after=2")
        fine = c.get("/api/frontend/jobs?status=pending&limit=5")
        unknown = c.get("/api/frontend/jobs?_=1&_=2")  # a cache-buster, repeated
    assert null.status_code == 422 and null.json()["detail"].startswith("status")
    assert empty.status_code == 422 and empty.json()["detail"].startswith("treeSize")
    assert twice.status_code == 422 and twice.json()["detail"] == "after: given more than once"
    assert fine.status_code == 200
    assert unknown.status_code == 200, unknown.text  # README: unknown ones are ignored
    doc = httpx.get(module_server.url + "/openapi.json").json()
    for path, item in doc["paths"].items():
        for op in item.values():
            for param in op["parameters"]:
                assert "null" not in str(param["schema"]), (path, param)


def test_the_document_states_the_rules_the_server_enforces(module_server: ServerProcess) -> None:
    """The entrypoint's rule, stream-log's `lines` or `line`, and finish's modelHash for
    a finished job were enforced but not documented, so a client following
    /openapi.json met 422s it could not foresee. The document now carries each rule,
    and the entrypoint pattern it publishes agrees with the server path by path."""
    doc = httpx.get(module_server.url + "/openapi.json").json()
    schemas = doc["components"]["schemas"]
    pattern = schemas["UploadScriptRequest"]["properties"]["entrypoint"]["pattern"]
    with module_server.client() as c:
        create_job(c, "paths", script=None)
        for path in (
            "train.py",
            "src/run.py",
            ".hidden/x.py",
            "..x",
            "/etc/passwd",
            "../up.py",
            "a/../../b.py",
            "a/..",
            "a\\b.py",
            "a//b.py",
            "./x.py",
            "c:x.py",
            "a\x00b.py",
            "a\nb.py",
        ):
            r = c.post(
                "/api/jobs/upload-script",
                json={"jobId": "paths", "script": "x", "entrypoint": path},
            )
            documented = re.fullmatch(pattern, path) is not None
            assert r.status_code == (200 if documented else 422), (path, r.text)
    body = {
        op: doc["paths"][op]["post"]["requestBody"]["content"]["application/json"]["schema"]
        for op in ("/api/jobs/stream-log", "/api/jobs/finish")
    }
    assert {"required": ["lines"], "properties": {"lines": {"type": "array"}}} in body[
        "/api/jobs/stream-log"
    ]["anyOf"]
    assert {"properties": {"status": {"const": "failed"}}} in body["/api/jobs/finish"]["anyOf"]
    meta = schemas["CreateJobRequest"]["properties"]["meta"]
    assert "32 levels" in meta["description"]

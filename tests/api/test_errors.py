"""Error answers, body limits, rate limits and CORS."""

from __future__ import annotations

import time

import httpx

from api._flow import register
from conftest import ServerFactory, ServerProcess


def test_unknown_route_and_method_answer_detail(shelby_server: ServerProcess) -> None:
    """404 for an unknown route and 405 for a wrong method, both as {"detail": …}."""
    with shelby_server.client() as c:
        missing = c.get("/api/no/such/thing")
        wrong = c.put("/api/frontend/jobs")
        wrong_post = c.post("/api/frontend/system/health")
    assert missing.status_code == 404 and set(missing.json()) == {"detail"}
    assert "/api/no/such/thing" in missing.json()["detail"]
    assert wrong.status_code == 405 and set(wrong.json()) == {"detail"}
    assert wrong_post.status_code == 405
    assert missing.headers["content-type"] == "application/json"


def test_malformed_json_is_400(shelby_server: ServerProcess) -> None:
    """A body that is not JSON is 400 {"detail": …}, with no traceback."""
    with shelby_server.client() as c:
        r = c.post(
            "/api/jobs/create", content=b'{"jobId": ', headers={"Content-Type": "application/json"}
        )
        empty = c.post("/api/jobs/create", content=b"")
    assert r.status_code == 400 and r.json()["detail"].startswith("malformed JSON")
    assert "Traceback" not in r.text
    assert empty.status_code == 400


def test_wrong_shape_is_422_naming_the_field(shelby_server: ServerProcess) -> None:
    """A body or query that does not fit the schema is 422 and the detail names the field."""
    node = register(shelby_server, "n")
    with shelby_server.client() as c:
        body = c.post("/api/jobs/create", json={"meta": "not an object"})
        not_object = c.post("/api/jobs/create", json=[1, 2])
        missing = c.post("/api/jobs/upload-script", json={"jobId": "x"})
    query = node.http.get("/api/jobs/poll")  # nodeId missing
    assert body.status_code == 422 and "meta" in body.json()["detail"]
    assert not_object.status_code == 422
    assert missing.status_code == 422 and "script" in missing.json()["detail"]
    assert query.status_code == 422 and "nodeId" in query.json()["detail"]


def test_oversized_bodies_are_413(shelby_server: ServerProcess) -> None:
    """A body over the limit is 413 (1 MiB for most endpoints; scripts may be larger)."""
    with shelby_server.client() as c:
        huge_meta = c.post("/api/jobs/create", json={"meta": {"x": "y" * (1 << 20)}})
        c.post("/api/jobs/create", json={"jobId": "s"})
        script = c.post("/api/jobs/upload-script", json={"jobId": "s", "script": "#" * (2 << 20)})
        too_big_script = c.post(
            "/api/jobs/upload-script", json={"jobId": "s", "script": "#" * (9 << 20)}
        )
    assert huge_meta.status_code == 413 and set(huge_meta.json()) == {"detail"}
    assert script.status_code == 200
    assert too_big_script.status_code == 413


def test_rate_limit_per_token_with_retry_after(server_factory: ServerFactory) -> None:
    """Past the limit a token gets 429 with Retry-After; another token is not affected."""
    server = server_factory("limited", env={"SHELBY_RATE_LIMIT": "5/second"})
    node = register(server, "n")
    with server.client() as c:
        codes = [c.get("/api/frontend/jobs").status_code for _ in range(8)]
        limited = c.get("/api/frontend/jobs")
    assert codes[:5] == [200] * 5
    assert 429 in codes[5:]
    if limited.status_code == 429:
        assert int(limited.headers["retry-after"]) >= 1
        assert set(limited.json()) == {"detail"}
    assert node.heartbeat().status_code == 200
    time.sleep(2.1)
    with server.client() as c:
        assert c.get("/api/frontend/jobs").status_code == 200


def test_invented_tokens_share_their_address_allowance(server_factory: ServerFactory) -> None:
    """A new made-up token per request does not escape the limit: refused requests
    count against the client's address, and the 401s turn into 429s."""
    server = server_factory("guessing", args=("--rate-limit", "3/minute"))
    with server.client() as c:
        codes = [
            c.get("/api/frontend/jobs", headers={"Authorization": f"Bearer guess-{i}"}).status_code
            for i in range(5)
        ]
    # (The fixture's readiness probe came from the same address and counted too.)
    assert codes[0] == 401 and codes[-2:] == [429, 429] and set(codes) == {401, 429}


def test_rate_limit_flag_and_off(server_factory: ServerFactory) -> None:
    """--rate-limit sets the limit; `off` disables it."""
    limited = server_factory("flag", args=("--rate-limit", "3/minute"))
    unlimited = server_factory("off", args=("--rate-limit", "off"))
    with limited.client() as c:
        codes = [c.get("/api/frontend/dashboard").status_code for _ in range(5)]
    with unlimited.client() as c:
        free = [c.get("/api/frontend/dashboard").status_code for _ in range(100)]
    assert codes[:3] == [200] * 3 and codes[3:] == [429, 429]
    assert free == [200] * 100


def test_cors_follows_the_settings(server_factory: ServerFactory) -> None:
    """Only the configured origins get CORS headers; a preflight is answered."""
    server = server_factory("cors", args=("--cors-origin", "http://ui.test"))
    with server.client() as c:
        allowed = c.get("/api/frontend/jobs", headers={"Origin": "http://ui.test"})
        other = c.get("/api/frontend/jobs", headers={"Origin": "http://evil.test"})
    preflight = httpx.options(
        server.url + "/api/jobs/create",
        headers={
            "Origin": "http://ui.test",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert allowed.headers["access-control-allow-origin"] == "http://ui.test"
    assert "access-control-allow-origin" not in other.headers
    assert preflight.status_code == 200
    assert "POST" in preflight.headers["access-control-allow-methods"]


def test_no_cors_headers_by_default(shelby_server: ServerProcess) -> None:
    """Without --cors-origin no origin is allowed."""
    with shelby_server.client() as c:
        r = c.get("/api/frontend/jobs", headers={"Origin": "http://ui.test"})
    assert "access-control-allow-origin" not in r.headers


def test_health_is_503_when_the_database_is_unreadable(shelby_server: ServerProcess) -> None:
    """When the database file is destroyed under it, health answers 503 unhealthy and
    other endpoints answer {"detail"} without a traceback."""
    with shelby_server.client() as c:
        assert c.get("/api/frontend/system/health").status_code == 200
        for path in shelby_server.data_dir.glob("shelby.db*"):
            with open(path, "r+b") as f:
                f.write(b"\xff" * 4096)
        r = c.get("/api/frontend/system/health")
        jobs = c.get("/api/frontend/jobs")
    assert r.status_code == 503, r.text
    assert r.json()["status"] == "unhealthy"
    assert jobs.status_code in (500, 503) and set(jobs.json()) == {"detail"}
    assert "Traceback" not in jobs.text

"""Who may call what: the admin, join and node tokens of API.md, "Credentials"."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import httpx
import pytest

from api._flow import create_job, register, run_to_running
from conftest import ServerFactory, ServerProcess

# (method, path, access); paths name real ids where a job or node is needed.
ADMIN_CALLS = [
    ("GET", "/api/frontend/dashboard"),
    ("GET", "/api/frontend/jobs"),
    ("GET", "/api/frontend/jobs/J"),
    ("GET", "/api/frontend/nodes"),
    ("GET", "/api/frontend/logs/J"),
    ("POST", "/api/frontend/jobs/J/restart"),
    ("DELETE", "/api/frontend/jobs/J"),
    ("POST", "/api/jobs/create"),
    ("POST", "/api/jobs/upload-script"),
    ("GET", "/api/audit/log"),
    ("GET", "/api/audit/jobs/J"),
    ("GET", "/metrics"),
]
NODE_CALLS = [
    ("POST", "/api/nodes/heartbeat", {"nodeId": "N", "runningJobs": []}),
    ("GET", "/api/jobs/poll?nodeId=N", None),
    ("POST", "/api/jobs/ack", {"jobId": "J", "nodeId": "N"}),
    ("GET", "/api/jobs/fetch-script?jobId=J&nodeId=N", None),
    ("POST", "/api/jobs/stream-log", {"jobId": "J", "nodeId": "N", "offset": 0, "lines": []}),
    ("POST", "/api/usage-report", {"nodeId": "N", "cpuSeconds": 1}),
    ("POST", "/api/jobs/finish", {"jobId": "J", "nodeId": "N", "status": "failed"}),
    ("POST", "/api/jobs/release", {"jobId": "J", "nodeId": "N", "attempt": 1, "reason": "x"}),
]
REGISTER = ("POST", "/api/nodes/register", {"name": "x"})


def _call(
    server: ServerProcess, token: str | None, method: str, path: str, body: object = None
) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.request(method, server.url + path, headers=headers, json=body, timeout=30)
    return r.status_code


def test_credentials_matrix(shelby_server: ServerProcess) -> None:
    """Every endpoint against every kind of token: 401 for missing, unknown or
    out-of-place join/admin tokens, 403 for a valid token outside its scope."""
    node = register(shelby_server, "N")
    other = register(shelby_server, "other")
    with shelby_server.client() as c:
        create_job(c, "J")
    tokens = {
        "none": None,
        "unknown": "not-a-token",
        "join": shelby_server.join_token,
        "admin": shelby_server.admin_token,
        "node": node.token,
        "other-node": other.token,
    }
    for method, path in ADMIN_CALLS:
        got = {k: _call(shelby_server, t, method, path) for k, t in tokens.items()}
        assert got["none"] == got["unknown"] == got["join"] == 401, (path, got)
        assert got["node"] == got["other-node"] == 403, (path, got)
        assert got["admin"] not in (401, 403), (path, got)
    for method, path, body in NODE_CALLS:
        got = {k: _call(shelby_server, t, method, path, body) for k, t in tokens.items()}
        assert got["none"] == got["unknown"] == got["join"] == 401, (path, got)
        assert got["admin"] == 403, (path, got)
        assert got["other-node"] == 403, (path, got)  # acting for node N
        assert got["node"] not in (401, 403), (path, got)
    method, path, body = REGISTER
    got = {k: _call(shelby_server, t, method, path, body) for k, t in tokens.items()}
    assert got == {
        "none": 401,
        "unknown": 401,
        "join": 200,
        "admin": 401,
        "node": 401,
        "other-node": 401,
    }
    public = _call(shelby_server, None, "GET", "/api/frontend/system/health")
    assert public == 200


def test_error_bodies_are_detail_and_401_names_bearer(shelby_server: ServerProcess) -> None:
    """401 and 403 answer {"detail": …}; 401 carries WWW-Authenticate: Bearer."""
    r = httpx.get(shelby_server.url + "/api/frontend/jobs")
    assert r.status_code == 401 and set(r.json()) == {"detail"}
    assert r.headers["www-authenticate"] == "Bearer"
    node = register(shelby_server, "n")
    f = node.http.get("/api/frontend/jobs")
    assert f.status_code == 403 and set(f.json()) == {"detail"}


def test_only_token_hashes_reach_the_log(shelby_server: ServerProcess) -> None:
    """No token appears anywhere in the database file; the log holds its SHA-256."""
    node = register(shelby_server, "n")
    with shelby_server.client() as c:
        create_job(c, "j")
        run_to_running(node)
    shelby_server.stop()
    raw = b"".join(p.read_bytes() for p in shelby_server.data_dir.glob("shelby.db*"))
    for token in (node.token, shelby_server.admin_token, shelby_server.join_token):
        assert token.encode() not in raw
    db = sqlite3.connect(shelby_server.db)
    data = db.execute("SELECT data FROM events WHERE type = 'NodeRegistered'").fetchone()[0]
    import hashlib

    assert hashlib.sha256(node.token.encode()).hexdigest() in data


def test_generated_tokens_are_kept_and_printed_once(server_factory: ServerFactory) -> None:
    """Without the environment's tokens the server makes them, keeps them beside the
    database, prints the dashboard URL with the admin token on the first start only."""
    server = server_factory("gen", admin_token=None, join_token=None)
    token_file = server.data_dir / "admin.token"
    assert token_file.read_text().strip() == server.admin_token
    assert (token_file.stat().st_mode & 0o777) == 0o600
    first = server.log_text()
    assert f"http://127.0.0.1:{server.port}/?token={server.admin_token}" in first
    with server.client() as c:
        assert c.get("/api/frontend/dashboard").status_code == 200
    server.restart()
    second = server.log_text()[len(first) :]
    assert server.admin_token not in second
    with server.client() as c:
        assert c.get("/api/frontend/dashboard").status_code == 200  # same token after restart
    register(server, "n")  # the kept join token works


def test_dev_mode_turns_credentials_off(server_factory: ServerFactory) -> None:
    """--dev: no token needed anywhere, every CORS origin allowed, a warning logged."""
    server = server_factory("dev", args=("--dev",))
    with server.client("") as c:
        assert c.get("/api/frontend/jobs").status_code == 200
        reg = c.post("/api/nodes/register", json={"nodeId": "d", "name": "d"})
        assert reg.status_code == 200
        assert c.post("/api/nodes/heartbeat", json={"nodeId": "d"}).status_code == 200
        cors = c.get("/api/frontend/jobs", headers={"Origin": "http://elsewhere.test"})
    assert cors.headers["access-control-allow-origin"] == "*"
    assert "dev mode" in server.log_text()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1"])
def test_dev_mode_refuses_a_non_loopback_address(tmp_path: object, host: str) -> None:
    """--dev will not bind anything but loopback: the command exits with an error."""
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "shelby",
            "serve",
            "--dev",
            "--host",
            host,
            "--db",
            f"{tmp_path}/x.db",
        ],
        capture_output=True,
        timeout=30,
        text=True,
    )
    assert r.returncode != 0
    assert "loopback" in r.stderr

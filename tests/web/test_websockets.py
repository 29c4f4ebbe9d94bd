"""The websockets of API.md, "Real time", against a real ``shelby serve``: credentials,
snapshots, the live log tail, and the dashboard's static files."""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from conftest import JOIN_TOKEN, ServerFactory, ServerProcess
from shelby.api.realtime import LOG_QUEUE

WEB_DIR = Path(__file__).resolve().parents[2] / "src" / "shelby" / "web"


def _ws_url(server: ServerProcess, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


async def _recv(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = msgspec.json.decode(await asyncio.wait_for(ws.recv(), 10))
    return message


async def _closed_with(ws: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as info:
        await asyncio.wait_for(ws.recv(), 10)
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


class Agent:
    """The agent side of the protocol over HTTP, by hand, to control each step."""

    def __init__(self, http: httpx.AsyncClient, node_id: str) -> None:
        self.http = http
        self.node_id = node_id

    @classmethod
    async def register(cls, server: ServerProcess) -> Agent:
        async with server.async_client(JOIN_TOKEN) as join:
            r = await join.post(
                "/api/nodes/register",
                json={"name": "ws-test", "specs": {"cpuCount": 2, "totalRAM_GB": 4.0}},
            )
            r.raise_for_status()
        body = r.json()
        return cls(server.async_client(body["token"]), body["nodeId"])

    async def take(self, job_id: str) -> int:
        r = await self.http.get("/api/jobs/poll", params={"nodeId": self.node_id})
        r.raise_for_status()
        job = r.json()["job"]
        assert job["jobId"] == job_id
        r = await self.http.post(
            "/api/jobs/ack",
            json={"jobId": job_id, "nodeId": self.node_id, "attempt": job["attempt"]},
        )
        r.raise_for_status()
        attempt: int = job["attempt"]
        return attempt

    async def log(
        self, job_id: str, attempt: int, offset: int, lines: list[tuple[str, str]]
    ) -> None:
        r = await self.http.post(
            "/api/jobs/stream-log",
            json={
                "jobId": job_id,
                "nodeId": self.node_id,
                "attempt": attempt,
                "offset": offset,
                "lines": [
                    {"line": text, "timestamp": 1700000000.0 + offset + i, "stream": stream}
                    for i, (text, stream) in enumerate(lines)
                ],
            },
        )
        r.raise_for_status()

    async def finish(self, job_id: str, attempt: int) -> None:
        r = await self.http.post(
            "/api/jobs/finish",
            json={
                "jobId": job_id,
                "nodeId": self.node_id,
                "attempt": attempt,
                "status": "finished",
                "modelHash": "sha256:" + "ab" * 32,
                "exitCode": 0,
            },
        )
        r.raise_for_status()


async def _new_job(server: ServerProcess, job_id: str) -> None:
    async with server.async_client() as admin:
        r = await admin.post("/api/jobs/create", json={"jobId": job_id, "datasetName": "d"})
        r.raise_for_status()
        r = await admin.post(
            "/api/jobs/upload-script", json={"jobId": job_id, "script": "print('hi')"}
        )
        r.raise_for_status()


# --- credentials -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ws/dashboard", "/ws/nodes", "/ws/jobs/x/logs"])
async def test_websockets_refuse_a_missing_or_wrong_token(
    shelby_server: ServerProcess, path: str
) -> None:
    """No token, an unknown one, or the join token: closed with 4401 before any data."""
    for query in ("", "?token=nope", f"?token={JOIN_TOKEN}"):
        async with connect(_ws_url(shelby_server, path + query)) as ws:
            code, reason = await _closed_with(ws)
            assert code == 4401, (query, reason)


async def test_a_node_token_is_forbidden_on_the_dashboard(shelby_server: ServerProcess) -> None:
    """A node token is valid but outside its scope here: 4403, as 403 over HTTP."""
    agent = await Agent.register(shelby_server)
    token = agent.http.headers["Authorization"].removeprefix("Bearer ")
    async with connect(_ws_url(shelby_server, f"/ws/dashboard?token={token}")) as ws:
        code, _ = await _closed_with(ws)
    assert code == 4403
    await agent.http.aclose()


async def test_the_admin_token_works_as_query_or_header(shelby_server: ServerProcess) -> None:
    """``?token=`` (for browsers) and the bearer header both open the dashboard."""
    token = shelby_server.admin_token
    async with connect(_ws_url(shelby_server, f"/ws/dashboard?token={token}")) as ws:
        assert (await _recv(ws))["type"] == "dashboard"
    async with connect(
        _ws_url(shelby_server, "/ws/nodes"),
        additional_headers={"Authorization": f"Bearer {token}"},
    ) as ws:
        message = await _recv(ws)
        assert message["type"] == "nodes"
        assert message["data"]["nodes"] == []


async def test_dev_mode_needs_no_token(server_factory: ServerFactory) -> None:
    """``shelby serve --dev`` turns credentials off for the websockets too."""
    server = server_factory("dev", args=("--dev",))
    async with connect(_ws_url(server, "/ws/dashboard")) as ws:
        assert (await _recv(ws))["type"] == "dashboard"


# --- snapshots ---------------------------------------------------------------------------


async def test_dashboard_sends_a_snapshot_on_connect_and_after_each_change(
    shelby_server: ServerProcess,
) -> None:
    """The snapshot has the HTTP dashboard's shape and follows a job being created."""
    url = _ws_url(shelby_server, f"/ws/dashboard?token={shelby_server.admin_token}")
    async with connect(url) as ws:
        first = await _recv(ws)
        async with shelby_server.async_client() as admin:
            http = (await admin.get("/api/frontend/dashboard")).json()
        assert set(first["data"]) == set(http)
        assert first["data"]["jobStats"]["total"] == 0
        await _new_job(shelby_server, "snap-1")
        while True:
            snapshot = await _recv(ws)
            if snapshot["data"]["jobStats"]["total"] == 1:
                break
        assert snapshot["data"]["recentJobs"][0]["jobId"] == "snap-1"
        assert snapshot["data"]["activity"][-1]["created"] == 1


async def test_nodes_socket_follows_a_heartbeat(shelby_server: ServerProcess) -> None:
    """A node's new CPU and RAM figures reach the nodes socket."""
    agent = await Agent.register(shelby_server)
    url = _ws_url(shelby_server, f"/ws/nodes?token={shelby_server.admin_token}")
    async with connect(url) as ws:
        first = await _recv(ws)
        assert [n["nodeId"] for n in first["data"]["nodes"]] == [agent.node_id]
        r = await agent.http.post(
            "/api/nodes/heartbeat",
            json={"nodeId": agent.node_id, "specs": {"cpuUsage": 73.5, "ramUsage": 41.0}},
        )
        r.raise_for_status()
        while True:
            node = (await _recv(ws))["data"]["nodes"][0]
            if node["specs"].get("cpuUsage") == 73.5:
                break
        assert node["specs"]["ramUsage"] == 41.0
        assert node["specs"]["cpuCount"] == 2  # the registration's, beneath
    await agent.http.aclose()


# --- the log tail ------------------------------------------------------------------------


async def test_log_socket_sends_stored_lines_then_each_new_batch(
    shelby_server: ServerProcess,
) -> None:
    """Stored lines first, then live batches in order, stdout and stderr kept apart."""
    await _new_job(shelby_server, "tail-1")
    agent = await Agent.register(shelby_server)
    attempt = await agent.take("tail-1")
    await agent.log("tail-1", attempt, 0, [("one", "stdout"), ("two", "stderr")])
    url = _ws_url(shelby_server, f"/ws/jobs/tail-1/logs?token={shelby_server.admin_token}")
    async with connect(url) as ws:
        assert await _recv(ws) == {
            "type": "status",
            "status": "running",
            "attempt": 1,
            "event": None,
        }
        stored = await _recv(ws)
        assert [(ln["offset"], ln["line"], ln["stream"]) for ln in stored["lines"]] == [
            (0, "one", "stdout"),
            (1, "two", "stderr"),
        ]
        await agent.log("tail-1", attempt, 2, [("three", "stdout"), ("four", "stderr")])
        live = await _recv(ws)
        assert live["type"] == "log"
        assert [
            (ln["offset"], ln["line"], ln["stream"], ln["attempt"]) for ln in live["lines"]
        ] == [
            (2, "three", "stdout", 1),
            (3, "four", "stderr", 1),
        ]
        await agent.finish("tail-1", attempt)
        status = await _recv(ws)
        assert (status["status"], status["event"]) == ("finished", "JobFinished")
    await agent.http.aclose()


async def test_log_socket_resumes_after_an_offset(shelby_server: ServerProcess) -> None:
    """``?after=K`` sends only the lines past K: a reconnecting page loses and repeats nothing."""
    await _new_job(shelby_server, "tail-2")
    agent = await Agent.register(shelby_server)
    attempt = await agent.take("tail-2")
    await agent.log("tail-2", attempt, 0, [(f"line {i}", "stdout") for i in range(6)])
    url = _ws_url(
        shelby_server,
        f"/ws/jobs/tail-2/logs?attempt=1&after=3&token={shelby_server.admin_token}",
    )
    async with connect(url) as ws:
        await _recv(ws)  # status
        stored = await _recv(ws)
        assert [ln["offset"] for ln in stored["lines"]] == [4, 5]
    await agent.http.aclose()


async def test_log_socket_follows_a_restart_into_the_next_attempt(
    shelby_server: ServerProcess,
) -> None:
    """After a restart the same socket carries the new attempt's lines, from offset 0."""
    await _new_job(shelby_server, "tail-3")
    agent = await Agent.register(shelby_server)
    first = await agent.take("tail-3")
    await agent.log("tail-3", first, 0, [("first run", "stdout")])
    await agent.finish("tail-3", first)
    url = _ws_url(shelby_server, f"/ws/jobs/tail-3/logs?token={shelby_server.admin_token}")
    async with connect(url) as ws:
        assert (await _recv(ws))["status"] == "finished"
        assert (await _recv(ws))["lines"][0]["line"] == "first run"
        async with shelby_server.async_client() as admin:
            (await admin.post("/api/frontend/jobs/tail-3/restart")).raise_for_status()
        assert (await _recv(ws))[  # the restart
            "status"
        ] == "pending"
        second = await agent.take("tail-3")
        assert second == 2
        await agent.log("tail-3", second, 0, [("second run", "stdout")])
        messages = [await _recv(ws) for _ in range(3)]  # assigned, running, the line
        assert [m.get("status") for m in messages[:2]] == ["assigned", "running"]
        assert [(ln["attempt"], ln["offset"], ln["line"]) for ln in messages[2]["lines"]] == [
            (2, 0, "second run")
        ]
    await agent.http.aclose()


async def test_log_socket_ends_when_the_job_is_deleted(shelby_server: ServerProcess) -> None:
    """Deleting the job sends a ``deleted`` status and closes the socket normally."""
    await _new_job(shelby_server, "tail-4")
    url = _ws_url(shelby_server, f"/ws/jobs/tail-4/logs?token={shelby_server.admin_token}")
    async with connect(url) as ws:
        assert (await _recv(ws))["status"] == "pending"
        async with shelby_server.async_client() as admin:
            (await admin.delete("/api/frontend/jobs/tail-4")).raise_for_status()
        assert (await _recv(ws))["status"] == "deleted"
        code, _ = await _closed_with(ws)
        assert code == 1000


async def test_log_socket_for_an_unknown_job_closes_with_4404(
    shelby_server: ServerProcess,
) -> None:
    """A job that does not exist is 4404, the websocket's 404."""
    url = _ws_url(shelby_server, f"/ws/jobs/nope/logs?token={shelby_server.admin_token}")
    async with connect(url) as ws:
        code, _ = await _closed_with(ws)
    assert code == 4404


async def test_a_reader_that_stops_reading_is_dropped_and_holds_up_no_one(
    server_factory: ServerFactory,
) -> None:
    """A client that stops reading is cut off (1013) once its bounded queue overflows,
    having missed nothing before the cut; an attentive client meanwhile gets every line."""
    # The agent below streams for a while without heartbeats: a lease that outlasts a
    # slow machine keeps its attempt current (leases are not what this tests).
    shelby_server = server_factory("slow-reader", lease_seconds=120)
    await _new_job(shelby_server, "tail-5")
    agent = await Agent.register(shelby_server)
    attempt = await agent.take("tail-5")
    url = _ws_url(shelby_server, f"/ws/jobs/tail-5/logs?token={shelby_server.admin_token}")
    # A socket with a tiny receive buffer, and a client that stops pulling from it after
    # one message: the server's writes to it stall once the kernel's buffers are full.
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect((shelby_server.host, shelby_server.port))
    raw.setblocking(False)
    async with (
        connect(url, sock=raw, max_queue=1, max_size=None, compression=None) as stalled,
        connect(url, max_size=None, compression=None) as attentive,
    ):
        await _recv(attentive)  # status
        seen = 0

        async def send_and_follow(lines: list[tuple[str, str]]) -> None:
            nonlocal seen
            await agent.log("tail-5", attempt, seen, lines)
            target = seen + len(lines)
            while seen < target:
                message = await _recv(attentive)
                assert message["type"] == "log"
                assert message["lines"][0]["offset"] == seen
                seen += len(message["lines"])

        # Incompressible lines, well past what the stalled socket buffers (about 13 MB)...
        for _ in range(80):
            await send_and_follow([(secrets.token_urlsafe(12_000), "stdout")] * 10)
        # ... then more appends than its queue holds.
        for i in range(LOG_QUEUE + 50):
            await send_and_follow([(f"small {i}", "stderr")])
        assert seen == 800 + LOG_QUEUE + 50
        # The stalled client reads at last: a gap-free prefix, then the order to reconnect.
        got = -1
        with pytest.raises(ConnectionClosed) as info:
            while True:
                message = msgspec.json.decode(await asyncio.wait_for(stalled.recv(), 30))
                for ln in message.get("lines", ()):
                    assert ln["offset"] == got + 1
                    got = ln["offset"]
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1013
        assert got < seen - 1
    await agent.http.aclose()


# --- the static page ---------------------------------------------------------------------


def test_the_page_and_its_assets_are_served_without_a_token(
    shelby_server: ServerProcess,
) -> None:
    """``/`` and ``/web/…`` need no token, and the page may run only its own scripts."""
    with shelby_server.client("") as anyone:
        page = anyone.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        script = anyone.get("/web/js/app.js")
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
        assert anyone.get("/web/nope.js").status_code == 404
        assert anyone.get("/api/frontend/jobs").status_code == 401


def test_the_web_app_loads_nothing_from_the_internet() -> None:
    """Every src, href and import in the web app is a path on this server: it works offline."""
    references: list[str] = []
    for path in WEB_DIR.rglob("*"):
        if path.suffix in (".html", ".js", ".css"):
            text = path.read_text()
            references += re.findall(r'(?:src|href)="([^"#][^"]*)"', text)
            references += re.findall(r'\bfrom\s+"([^"]+)"', text)
            references += re.findall(r"url\(([^)]+)\)", text)
    assert references, "the scan found nothing: the patterns are wrong"
    remote = [r for r in references if re.match(r"^(?:[a-z]+:)?//", r)]
    assert remote == []

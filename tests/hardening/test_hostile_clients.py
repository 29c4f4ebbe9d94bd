"""Hostile clients against a real server: each gets its documented refusal, as
``{"detail": …}``, and changes nothing (the log's head stays where it was, no request
raised inside the server).

Covered elsewhere, and not repeated here: bodies over the limit with a Content-Length
(tests/api/test_errors.py::test_oversized_bodies_are_413), more than 1,000 lines or 1 MiB
in one stream-log and a line over 16 KiB cut to 16 KiB with ``truncated``
(tests/api/test_agents.py::test_stream_log_limits), a sequential flood and invented
tokens (tests/api/test_errors.py), entrypoints leaving the job directory at upload
(tests/api/test_jobs.py::test_entrypoint_must_stay_inside_the_job_directory and
tests/hardening/test_fuzz_findings.py, NUL and newline included), a node token acting
for another node (tests/api/test_credentials.py::test_credentials_matrix) or on a job
it does not hold (tests/api/test_agents.py::
test_job_scoped_endpoints_refuse_a_node_that_does_not_hold_the_job, and every step of
tests/hardening/test_lifecycle_stateful.py). Node tokens do not expire; re-registering
revokes one, which is tested here on every node endpoint.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api._flow import create_job, register, run_to_running
from api.test_credentials import NODE_CALLS
from conftest import ServerFactory, ServerProcess
from hardening._support import Head, head, module_server, server_errors
from shelby.agent.environments import EnvironmentCache
from shelby.agent.process import StopRequest
from shelby.agent.runner import Assignment, AttemptRunner, Script

__all__ = ["module_server"]

SLOW_TIMEOUT = 1.5  # seconds for a head or a body, on the slow clients' server


@pytest.fixture
def unchanged(module_server: ServerProcess) -> Iterator[Head]:
    """The test's hostile requests must leave the log where it was, and raise nothing."""
    before = head(module_server)
    yield before
    assert head(module_server) == before
    assert server_errors(module_server) == []


def _exchange(server: ServerProcess, raw: bytes) -> tuple[int, dict[str, object]]:
    """Send raw bytes, read the whole answer: its status and its JSON body."""
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        s.sendall(raw)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in headers.lower(), answer[:300]
    return int(status_line.split()[1]), json.loads(body)


# --- heads --------------------------------------------------------------------------


def test_oversized_heads_are_431_and_a_normal_head_passes(
    module_server: ServerProcess, unchanged: Head
) -> None:
    """httptools keeps a request's head in memory with no limit: an 8 MiB header was
    read whole and answered 200, and an 8 MiB request line got a text/plain 400. The
    request line and headers together are now bounded (64 KiB): 431 with a detail, the
    connection closed after the answer is read. A real 16 KiB header still passes."""
    health = b"GET /api/frontend/system/health"
    big_header = health + b" HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (8 << 20) + b"\r\n\r\n"
    long_line = health + b"?" + b"a" * (1 << 20) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    many = health + b" HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 100_000 + b"\r\n"
    for raw in (big_header, long_line, many):
        status, body = _exchange(module_server, raw)
        assert status == 431
        assert body == {"detail": "the request line and headers are larger than 65536 bytes"}
    fine = httpx.get(
        module_server.url + "/api/frontend/jobs",
        headers={**module_server.admin_headers, "X-Context": "c" * (16 << 10)},
    )
    assert fine.status_code == 200


def test_a_malformed_request_is_400_with_a_detail(
    module_server: ServerProcess, unchanged: Head
) -> None:
    """What httptools cannot parse was answered in text/plain; now {"detail": …}."""
    for raw in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"):
        assert _exchange(module_server, raw) == (400, {"detail": "malformed HTTP request"})


SLOW_HEAD = b"GET /api/frontend/system/health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"z" * 1000
SLOW_BODY = (
    b"POST /api/jobs/create HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
    b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
)


async def _slow_client(server: ServerProcess, kind: str) -> tuple[float, bytes]:
    """A connection that sends nothing, or its head a byte every 50 ms, or a whole head
    and then its body a byte every 50 ms; when and what the server answers."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(server.host, server.port)
    if kind == "body":
        writer.write(SLOW_BODY % server.admin_token.encode())

    async def drip() -> None:
        for byte in SLOW_HEAD if kind == "head" else b" " * 1000:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)

    async def answer() -> bytes:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as closed:
            return closed.partial
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        return head + await reader.readexactly(length)

    dripping = asyncio.create_task(drip()) if kind != "silent" else None
    try:
        answered = await asyncio.wait_for(answer(), timeout=SLOW_TIMEOUT + 5)
    finally:
        if dripping is not None:
            dripping.cancel()
        writer.close()
    return time.monotonic() - started, answered


def test_slow_clients_do_not_stop_others_and_are_cut_off(server_factory: ServerFactory) -> None:
    """50 connections sending their heads or bodies a byte at a time (or nothing):
    uvicorn held each open for ever. Meanwhile every normal request is answered at
    once, and at the timeout each slow connection is answered 408 with a detail and
    closed (one that sent nothing is closed quietly)."""
    timeouts = {"SHELBY_HEAD_TIMEOUT_SECONDS": "1.5", "SHELBY_BODY_TIMEOUT_SECONDS": "1.5"}
    server = server_factory("slow", lease_seconds=60, env=timeouts)
    before = head(server)
    kinds = ["silent", "head", "head", "body", "body"] * 10

    async def run() -> tuple[list[tuple[float, bytes]], list[float]]:
        slow = [asyncio.create_task(_slow_client(server, kind)) for kind in kinds]
        await asyncio.sleep(0.3)  # all of them open and dripping
        took = []
        async with server.async_client() as c:
            for _ in range(20):
                t0 = time.monotonic()
                r = await c.get("/api/frontend/jobs")
                took.append(time.monotonic() - t0)
                assert r.status_code == 200
                await asyncio.sleep(0.03)
        return list(await asyncio.gather(*slow)), took

    slow, took = asyncio.run(run())
    assert max(took) < 1.0, took
    for kind, (seconds, answer) in zip(kinds, slow, strict=True):
        if kind == "silent":  # closed quietly, as an idle keep-alive connection is
            assert answer == b""
        else:
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
            part = b"head" if kind == "head" else b"body"
            assert answer.endswith(
                b'{"detail":"the request %s did not arrive within 1.5 s"}' % part
            )
        assert SLOW_TIMEOUT - 0.1 < seconds < SLOW_TIMEOUT + 3, (kind, seconds)
    assert head(server) == before


# --- bodies -------------------------------------------------------------------------


def test_a_chunked_body_over_the_limit_is_413(
    module_server: ServerProcess, unchanged: Head
) -> None:
    """Without a Content-Length the limit is counted as the body streams in."""

    def chunks() -> Iterator[bytes]:
        yield b'{"meta": {"x": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}}'

    with module_server.client() as c:
        r = c.post("/api/jobs/create", content=chunks())
    assert r.status_code == 413 and r.json() == {"detail": "the body is larger than 1048576 bytes"}


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        # msgspec gave up with RecursionError, a 500 (a meta ~970 deep was even stored).
        (f'{{"meta": {{"a": {_nested(100_000)}}}}}', 400, "malformed JSON: nested too deeply"),
        (f'{{"meta": {{"a": {_nested(40)}}}}}', 422, "meta: nested deeper than 32 levels"),
        # msgspec goes deep even where an object belongs before it complains.
        (_nested(100_000), 400, "malformed JSON: nested too deeply"),
        # msgspec checks a number's range while parsing, without the field: a second
        # reading names it.
        ('{"meta": {"a": 1' + "0" * 100_000 + "}}", 422, "meta.a: Integer value out of range"),
        ('{"meta": {"a": [1, 1e999999]}}', 422, "meta.a[1]: Number out of range"),
        ('{"maxAttempts": ' + "9" * 10_000 + "}", 422, "maxAttempts: Integer value out of range"),
        ('{"datasetName": "' + "\\ud800" * 10 + '"}', 400, "malformed JSON"),
    ],
    ids=[
        "100k-deep",
        "40-deep",
        "bare-100k-deep",
        "long-int",
        "huge-exponent",
        "huge-int",
        "lone-surrogate",
    ],
)
def test_deep_or_huge_json_is_refused_quickly(
    module_server: ServerProcess, unchanged: Head, body: str, status: int, detail: str
) -> None:
    started = time.monotonic()
    with module_server.client() as c:
        r = c.post("/api/jobs/create", content=body, headers={"Content-Type": "application/json"})
    assert time.monotonic() - started < 2.0
    assert r.status_code == status, r.text
    assert detail in r.json()["detail"]


def test_deep_specs_in_a_heartbeat_are_422(module_server: ServerProcess) -> None:
    node = register(module_server, "deep-specs")
    before = head(module_server)
    r = node.http.post(
        "/api/nodes/heartbeat",
        content=f'{{"nodeId": "deep-specs", "specs": {{"gpus": {_nested(200)}}}}}',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 422 and r.json() == {"detail": "specs: nested deeper than 32 levels"}
    assert head(module_server) == before


# --- tokens -------------------------------------------------------------------------


def test_a_flood_from_one_token_is_429_while_another_is_served(
    server_factory: ServerFactory,
) -> None:
    """100 concurrent creates from the admin token against 20/second: the excess gets
    429 with Retry-After and creates nothing; a node's heartbeats at the same time all
    pass, and no job exists but those answered 200."""
    server = server_factory("flood", lease_seconds=60, env={"SHELBY_RATE_LIMIT": "20/second"})
    node = register(server, "calm")

    async def run() -> tuple[list[httpx.Response], list[int]]:
        async with server.async_client() as admin, server.async_client(node.token) as calm:

            async def beats() -> list[int]:
                codes = []
                for _ in range(10):
                    r = await calm.post("/api/nodes/heartbeat", json={"nodeId": "calm"})
                    codes.append(r.status_code)
                    await asyncio.sleep(0.05)
                return codes

            flood = [
                admin.post("/api/jobs/create", json={"jobId": f"flood-{i}"}) for i in range(100)
            ]
            *answers, codes = await asyncio.gather(*flood, beats())
            return answers, codes

    answers, beat_codes = asyncio.run(run())
    assert beat_codes == [200] * 10
    made = {r.json()["jobId"] for r in answers if r.status_code == 200}
    limited = [r for r in answers if r.status_code == 429]
    assert len(made) + len(limited) == 100 and 20 <= len(made) <= 45, len(made)
    for r in limited:
        assert int(r.headers["retry-after"]) >= 1
        assert set(r.json()) == {"detail"} and "rate limit" in r.json()["detail"]
    time.sleep(1.1)
    with server.client() as c:
        listed = {
            j["jobId"] for j in c.get("/api/frontend/jobs", params={"limit": 1000}).json()["jobs"]
        }
    assert listed == made


def test_a_revoked_node_token_is_401_everywhere(module_server: ServerProcess) -> None:
    """Registering a nodeId again revokes its old token: on every node endpoint the old
    token is 401 and appends nothing, while the new one works."""
    old = register(module_server, "N")
    with module_server.client() as c:
        create_job(c, "J")
    run_to_running(old)
    new = register(module_server, "N")
    before = head(module_server)
    for method, path, body in NODE_CALLS:
        r = old.http.request(method, path, json=body)
        assert r.status_code == 401, (path, r.text)
        assert set(r.json()) == {"detail"}
    assert head(module_server) == before
    assert new.heartbeat().status_code == 200


# --- the agent's side -----------------------------------------------------------------


@pytest.mark.parametrize(
    "entrypoint",
    ["../escape.py", "../../escape.py", "/tmp/escape.py", "a/../../escape.py", "x\0.py"],
)
def test_the_agent_writes_no_entrypoint_outside_the_job_directory(
    tmp_path: Path, entrypoint: str
) -> None:
    """The server refuses such entrypoints at upload; should one reach an agent anyway
    (a server of another version, a man in the middle), the agent fails the attempt
    before writing anything, and nothing appears outside the attempt's directory."""
    runner = AttemptRunner(EnvironmentCache(tmp_path / "envs"), secrets=lambda: [])
    job_dir = tmp_path / "jobs" / "j" / "1"
    before = set(tmp_path.rglob("*"))
    ending = asyncio.run(
        runner.run(
            Assignment("j", 1, None, None, 60.0, entrypoint),
            Script("open('/tmp/escaped', 'w')", "", entrypoint, None),
            job_dir,
            sink=lambda stream, text, at: None,
            stop=StopRequest(),
        )
    )
    assert ending.status == "failed" and "not a relative path" in (ending.error or "")
    made = set(tmp_path.rglob("*")) - before
    assert all(p == job_dir or job_dir in p.parents or p in job_dir.parents for p in made), made
    assert not any(p.name == "escape.py" for p in tmp_path.rglob("*"))
    assert not Path("/tmp/escape.py").exists()

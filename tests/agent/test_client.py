"""The agent sorts every server answer into what to do about it."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from shelby.agent.backoff import Backoff
from shelby.agent.client import (
    AgentClient,
    AttemptGone,
    NotRegistered,
    OffsetGap,
    Rejected,
    Unreachable,
    persist,
)


def answering(
    status: int, body: dict[str, object], headers: dict[str, str] | None = None
) -> AgentClient:
    """A client whose every request gets this answer (httpx's own mock transport)."""
    transport = httpx.MockTransport(
        lambda request: httpx.Response(status, json=body, headers=headers)
    )
    client = AgentClient("http://server.test", transport=transport)
    client.token = "node-token"
    return client


async def test_a_409_on_a_job_call_means_the_attempt_is_gone() -> None:
    """409 (not this node's, or not the current attempt) and 404 (deleted) stop the attempt."""
    with pytest.raises(AttemptGone):
        await answering(409, {"detail": "attempt 1 of job 'j' is not current"}).ack("j", "n", 1)
    with pytest.raises(AttemptGone):
        await answering(404, {"detail": "job 'j' not found"}).finish({"jobId": "j"})


async def test_a_log_gap_names_the_offset_the_server_expects() -> None:
    """A stream-log 409 about offsets is a gap to resend from, not a lost attempt."""
    client = answering(409, {"detail": "expected offset 120, got 130"})
    with pytest.raises(OffsetGap) as gap:
        await client.stream_log("j", "n", 1, 130, [])
    assert gap.value.expected == 120


async def test_server_trouble_is_unreachable_and_429_carries_retry_after() -> None:
    """5xx and 429 are worth retrying; Retry-After is kept."""
    with pytest.raises(Unreachable):
        await answering(503, {"detail": "database unavailable"}).heartbeat("n", {}, [])
    with pytest.raises(Unreachable) as limited:
        await answering(429, {"detail": "slow down"}, {"Retry-After": "3"}).poll("n", 0)
    assert limited.value.retry_after == 3.0


async def test_refused_tokens_mean_register_again_and_the_rest_is_rejected() -> None:
    """401 asks for a new registration; 422 is a bug to report, not to retry."""
    with pytest.raises(NotRegistered):
        await answering(401, {"detail": "unknown token"}).heartbeat("n", {}, [])
    with pytest.raises(NotRegistered):
        await answering(404, {"detail": "node 'n' is not registered"}).heartbeat("n", {}, [])
    with pytest.raises(Rejected):
        await answering(422, {"detail": "nodeId: required"}).heartbeat("n", {}, [])


async def test_the_node_token_goes_in_the_bearer_header() -> None:
    """Register uses the join token, every later call the node token it returned."""
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        if request.url.path == "/api/nodes/register":
            return httpx.Response(
                200,
                json={
                    "nodeId": "n1",
                    "token": "fresh",
                    "heartbeatIntervalSeconds": 1,
                    "leaseSeconds": 3,
                },
            )
        return httpx.Response(200, json={"ok": True, "cancelJobs": []})

    client = AgentClient("http://server.test", transport=httpx.MockTransport(handler))
    await client.register("join-secret", {"name": "x"})
    await client.heartbeat("n1", {}, [])
    assert seen == ["Bearer join-secret", "Bearer fresh"]


async def test_persist_retries_a_closed_port_with_backoff_until_its_deadline() -> None:
    """Connection refused is retried with growing waits, and given up at the deadline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends
    client = AgentClient(f"http://127.0.0.1:{port}", timeout=2)
    backoff = Backoff(base=0.05, cap=0.2, jitter=0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(Unreachable):
        await persist(
            lambda: client.heartbeat("n", {}, []), backoff, what="test", deadline=started + 0.6
        )
    assert backoff.failures >= 3
    assert loop.time() - started < 2
    await client.aclose()


async def test_persist_returns_once_the_server_answers() -> None:
    """Two failures, then an answer: persist returns it and resets the backoff."""
    answers = iter([503, 503, 200])
    transport = httpx.MockTransport(
        lambda request: httpx.Response(next(answers), json={"ok": True, "cancelJobs": ["j9"]})
    )
    client = AgentClient("http://server.test", transport=transport)
    backoff = Backoff(base=0.01, cap=0.02)
    answer = await persist(lambda: client.heartbeat("n", {}, []), backoff, what="test")
    assert answer["cancelJobs"] == ["j9"] and backoff.failures == 0


async def test_release_names_the_attempt_and_a_409_means_it_is_gone() -> None:
    """release posts jobId, nodeId, attempt and reason to /api/jobs/release; a 409 (the
    attempt moved on) is AttemptGone, like every job-scoped call."""
    sent: list[tuple[str, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append((request.url.path, request.content))
        return httpx.Response(200, json={"jobId": "j", "status": "pending", "attempt": 2})

    client = AgentClient("http://server.test", transport=httpx.MockTransport(handler))
    answer = await client.release("j", "n", 1, "the agent shut down")
    assert answer == {"jobId": "j", "status": "pending", "attempt": 2}
    assert [path for path, _ in sent] == ["/api/jobs/release"]
    assert httpx.Response(200, content=sent[0][1]).json() == {
        "jobId": "j",
        "nodeId": "n",
        "attempt": 1,
        "reason": "the agent shut down",
    }
    with pytest.raises(AttemptGone):
        await answering(409, {"detail": "attempt 1 of job 'j' is not current"}).release(
            "j", "n", 1, "x"
        )

"""An agent behind a hostile network: connections dropped, answers slow or lost, a
partition longer than the lease, the server restarted mid-job.

A real ``shelby agent`` talks to a real ``shelby serve`` through a TCP proxy in this
test. The proxy drops requests before they reach the server and responses after the
server acted on them (at random, seeded: ``SHELBY_NET_SEED`` replays a run, and, once
each, the first answer of every agent call that writes), delays answers, and cuts
the agent off for longer than a lease. Meanwhile the server is SIGKILLed and
restarted. The job's script prints numbered lines and holds an exclusive lock for as
long as it runs, so a second run of it at the same time would be seen.

After the job finished:

- the attempt that finished has every line exactly once, in order, at contiguous
  offsets; the attempt cut off by the partition has a prefix of them, nothing twice;
- the job finished once; every event of the job names the attempt that was current
  when it was written (each attempt fenced), and no attempt was assigned while the
  one before it was still held; no script ran twice at once;
- calls for the stale attempt are refused with 409 and change nothing;
- the node registered once, and each attempt's usage was recorded at most once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import AgentFactory, ServerFactory, ServerProcess, free_port, wait_for

LINES = 60
LEASE = 3.0

# Agent calls whose first answer is lost after the server acted on them: each must be
# safe to send again.
LOSE_FIRST_ANSWER = (
    "POST /api/nodes/register",
    "POST /api/jobs/ack",
    "GET /api/jobs/fetch-script",
    "POST /api/jobs/stream-log",
    "POST /api/usage-report",
    "POST /api/jobs/finish",
)

SCRIPT = """
import fcntl, os, pathlib, time
attempt = os.environ["SHELBY_ATTEMPT"]
lock = open({lock!r}, "a")
try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    open({overlaps!r}, "a").write(f"attempt {{attempt}} started while another ran\\n")
    raise SystemExit(3)
for i in range({lines}):
    print(f"line {{i}}", flush=True)
    time.sleep(0.05)
(pathlib.Path(os.environ["SHELBY_OUTPUT_DIR"]) / "model").write_text("attempt " + attempt)
"""


class FaultyProxy:
    """A TCP proxy on a loopback port in front of ``upstream``, on its own thread."""

    def __init__(self, upstream: int, seed: int) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.rng = random.Random(seed)
        self.drop_request = 0.0
        self.drop_response = 0.0
        self.slow = 0.0  # chance that an answer takes a second
        self.lose_first = set(LOSE_FIRST_ANSWER)
        self.counts: Counter[str] = Counter()
        self.journal: list[str] = []  # what it did, with when: printed on a failure
        self._partitioned = False
        self._open: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    # --- control, from the test's thread ----------------------------------------------

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def partition(self, on: bool) -> None:
        """Cut every connection and refuse new ones, or let them through again."""
        self._partitioned = on
        if on:
            asyncio.run_coroutine_threadsafe(self._cut_all(), self._loop).result(10)

    # --- the proxy, on its loop -------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _close(self) -> None:
        self._server.close()
        await self._cut_all()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _cut_all(self) -> None:
        for writer in list(self._open):
            writer.transport.abort()

    def _note(self, what: str, asked: list[str]) -> None:
        call = asked[0] if asked else "?"
        self.counts[f"{what}: {call}" if what == "answer lost" else what] += 1
        self.journal.append(f"{time.monotonic():.2f} {what}: {call}")

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)
        if self._partitioned:
            client_w.transport.abort()
            return
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:  # the server is down: the agent sees the connection cut
            client_w.transport.abort()
            return
        self._open.update((client_w, server_w))
        asked: list[str] = []  # the request line of the call in flight

        def cut() -> None:
            client_w.transport.abort()
            server_w.transport.abort()

        async def requests() -> None:
            while data := await client_r.read(1 << 16):
                if data[:4] in (b"GET ", b"POST"):
                    line = b" ".join(data.split(b" ", 2)[:2]).decode(errors="replace")
                    asked[:] = [line.split("?")[0]]
                if self._partitioned or self.rng.random() < self.drop_request:
                    self._note("request dropped", asked)
                    return cut()
                server_w.write(data)
                await server_w.drain()

        async def answers() -> None:
            while data := await server_r.read(1 << 16):
                if self.rng.random() < self.slow:
                    self._note("answer slow", asked)
                    await asyncio.sleep(1.0)
                else:
                    await asyncio.sleep(self.rng.uniform(0, 0.05))
                call = asked[0] if asked else ""
                lose = call in self.lose_first and data.startswith(b"HTTP/1.1 200")
                if lose or self._partitioned or self.rng.random() < self.drop_response:
                    self.lose_first.discard(call)
                    self._note("answer lost" if lose else "answer dropped", asked)
                    client_w.write(data[: len(data) // 2])  # cut off mid-answer
                    return cut()
                client_w.write(data)
                await client_w.drain()

        pumps = [asyncio.ensure_future(requests()), asyncio.ensure_future(answers())]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cut()
            self._open.difference_update((client_w, server_w))
            for pump in pumps:
                pump.cancel()
            for outcome in await asyncio.gather(*pumps, return_exceptions=True):
                # A cut connection is what this proxy is for; anything else is its bug.
                if isinstance(outcome, Exception) and not isinstance(outcome, OSError):
                    raise outcome


@pytest.fixture
def proxy_for() -> Iterator[Any]:
    started: list[FaultyProxy] = []

    def make(server: ServerProcess, seed: int) -> FaultyProxy:
        proxy = FaultyProxy(server.port, seed)
        proxy.start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.stop()


def job_events(server: ServerProcess, job_id: str) -> list[dict[str, Any]]:
    with server.client() as http:
        events: list[dict[str, Any]] = http.get(f"/api/audit/jobs/{job_id}").json()["events"]
    for e in events:
        e["data"] = json.loads(e["data"]) if isinstance(e["data"], str) else e["data"]
    return events


def attempt_log(server: ServerProcess, job_id: str, attempt: int) -> list[dict[str, Any]]:
    with server.client() as http:
        r = http.get(f"/api/frontend/logs/{job_id}", params={"attempt": attempt, "limit": 10_000})
    assert r.status_code == 200, r.text
    lines: list[dict[str, Any]] = r.json()["logs"]
    return lines


def job(server: ServerProcess) -> dict[str, Any]:
    with contextlib.suppress(httpx.TransportError), server.client() as http:
        r = http.get("/api/frontend/jobs/net")
        if r.status_code == 200:
            found: dict[str, Any] = r.json()
            return found
    return {"status": "unknown", "attempt": 0}


def check_fenced(events: list[dict[str, Any]]) -> None:
    """Each event that names an attempt names the current one, and an attempt is
    assigned only once the one before it has ended."""
    current, held = 0, False
    for e in events:
        kind, data = e["type"], e["data"]
        if kind == "JobAssigned":
            assert not held, f"attempt {data['attempt']} assigned while {current} was held"
            current, held = data["attempt"], True
        elif "attempt" in data:
            assert data["attempt"] == current, f"{kind} for attempt {data['attempt']} in {current}"
            if kind in ("LeaseExpired", "JobReleased", "JobFinished", "JobFailed"):
                held = False


def test_an_agent_behind_a_hostile_network_runs_its_job_once_and_loses_no_line(
    server_factory: ServerFactory, agents: AgentFactory, proxy_for: Any, tmp_path: Path
) -> None:
    seed = int(os.environ.get("SHELBY_NET_SEED") or random.randrange(1 << 32))
    print(f"network faults seed {seed} (SHELBY_NET_SEED={seed} replays it)")
    server = server_factory("net", lease_seconds=LEASE)
    proxy = proxy_for(server, seed)
    proxy.drop_request = proxy.drop_response = 0.05
    proxy.slow = 0.02
    lock, overlaps = tmp_path / "running.lock", tmp_path / "overlaps"
    script = SCRIPT.format(lock=str(lock), overlaps=str(overlaps), lines=LINES)
    with server.client() as http:
        created = http.post("/api/jobs/create", json={"jobId": "net", "maxAttempts": 10})
        assert created.status_code == 200, created.text
        r = http.post("/api/jobs/upload-script", json={"jobId": "net", "script": script})
        assert r.status_code == 200, r.text
    agent = agents(server, url=proxy.url, name="behind-proxy")
    node_id = agent.node_id()

    def stdout(attempt: int) -> list[str]:
        return [
            ln["line"] for ln in attempt_log(server, "net", attempt) if ln["stream"] == "stdout"
        ]

    def running_with(lines: int) -> dict[str, Any] | None:
        now = job(server)
        return now if now["status"] == "running" and len(stdout(now["attempt"])) >= lines else None

    try:
        # An attempt runs and ships lines; then the agent is cut off past its lease.
        cut = wait_for(lambda: running_with(1), 20, "an attempt to ship lines")["attempt"]
        proxy.partition(True)
        wait_for(lambda: job(server)["attempt"] > cut, 3 * LEASE, f"attempt {cut} to expire")
        proxy.partition(False)
        # The agent comes back, drops that attempt, takes the next; the server dies under it.
        wait_for(lambda: running_with(10), 20, "the next attempt to ship lines")
        server.kill()
        time.sleep(0.5)
        server.start()
        done = wait_for(
            lambda: job(server) if job(server)["status"] in ("finished", "failed") else None,
            40,
            "the job to end",
        )
        # The agent has its answer too (it may have been lost and asked again).
        wait_for(lambda: '"event":"reported"' in agent.log_text(), 20, "the agent to report")
    finally:
        print("proxy:", dict(proxy.counts), *proxy.journal[-50:], sep="\n")
    assert done["status"] == "finished", done

    # Every line of the attempt that finished, once, in order, at contiguous offsets;
    # of each attempt before it, a prefix of them, nothing twice.
    final = done["attempt"]
    assert final > cut
    for attempt in range(1, final + 1):
        lines = attempt_log(server, "net", attempt)
        assert [ln["offset"] for ln in lines] == list(range(len(lines))), attempt
        printed = stdout(attempt)
        assert printed == [f"line {i}" for i in range(LINES if attempt == final else len(printed))]

    events = job_events(server, "net")
    check_fenced(events)
    kinds = Counter(e["type"] for e in events)
    assert kinds["JobFinished"] == 1 and kinds["JobFailed"] == 0, kinds
    usage = Counter(e["data"]["attempt"] for e in events if e["type"] == "UsageReported")
    assert all(n == 1 for n in usage.values()), f"usage recorded twice: {usage}"
    assert not overlaps.exists(), overlaps.read_text()

    # The stale attempt's calls are refused and change nothing.
    token = json.loads((agent.work_dir / "node.json").read_text())["token"]
    stale = {"jobId": "net", "nodeId": node_id, "attempt": cut}
    with server.client(token) as http:
        calls = [
            http.post("/api/jobs/ack", json=stale),
            http.post(
                "/api/jobs/stream-log",
                json={**stale, "offset": 0, "lines": [{"line": "late", "timestamp": 1}]},
            ),
            http.post("/api/usage-report", json={**stale, "cpuSeconds": 1.0}),
            http.post(
                "/api/jobs/finish",
                json={**stale, "status": "finished", "modelHash": "sha256:" + "0" * 64},
            ),
        ]
    assert [c.status_code for c in calls] == [409] * 4, [c.text for c in calls]
    assert job_events(server, "net") == events
    # The node joined once, though its first registration's answer was lost.
    with server.client() as http:
        nodes = http.get("/api/frontend/nodes").json()["nodes"]
    assert [n["nodeId"] for n in nodes] == [node_id]
    assert "attempt crashed" not in agent.log_text()
    # Not a run without the faults it is about: each call lost its first answer once.
    assert all(proxy.counts[f"answer lost: {call}"] == 1 for call in LOSE_FIRST_ANSWER)

"""A server SIGKILLed again and again under concurrent writes loses no acknowledged write.

One real ``shelby serve`` on one file. Writer threads create jobs, stream log lines by
offset for a running job, and heartbeat from three nodes, noting every write the
server acknowledged (2xx). At a random moment (seeded: ``SHELBY_CRASH_SEED`` replays a
run; the seed is printed and in every failure) the server is killed with SIGKILL and
started again on the same file, five times. After each restart:

- every acknowledged write is in the log exactly once: each job created once, each
  log line at its offset with its text and in no second event, each heartbeat once;
- ``shelby verify`` passes on the file (it reads the log; the server keeps running);
- a copy of the file, rebuilt by ``shelby rebuild``, holds the same projection
  tables as the live server had written.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from api._flow import Node, register
from cli._logfile import dump, rebuild, verify
from conftest import ServerFactory, ServerProcess

ROUNDS = 5
HEARTBEATING = 3
LOG_JOB = "streaming"


class Writers:
    """The writer threads, and what the server acknowledged to each."""

    def __init__(self, server: ServerProcess, nodes: list[Node]) -> None:
        self.server = server
        self.nodes = nodes
        self.jobs: list[str] = []  # created, acknowledged
        self.job_seq = 0
        self.lines_acked = 0  # the log job's lines below this offset are acknowledged
        self.beats: dict[str, list[int]] = {n.node_id: [] for n in nodes}
        self.beat_seq = dict.fromkeys(self.beats, 0)
        self.running = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self, rng: random.Random) -> None:
        self.running.set()
        seeds = [rng.random() for _ in range(2 + len(self.nodes))]
        loops: list[Callable[[httpx.Client, random.Random], None]] = [self._create, self._stream]
        clients = [self.server.client(), self.server.client(self.nodes[0].token)]
        for node in self.nodes:
            loops.append(lambda http, r, node=node: self._heartbeat(http, r, node))
            clients.append(self.server.client(node.token))
        self._threads = [
            threading.Thread(target=self._loop, args=(loop, http, random.Random(seed)))
            for loop, http, seed in zip(loops, clients, seeds, strict=True)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self.running.clear()
        for thread in self._threads:
            thread.join(timeout=30)
            assert not thread.is_alive(), "a writer thread did not stop"

    def _loop(
        self,
        step: Callable[[httpx.Client, random.Random], None],
        http: httpx.Client,
        rng: random.Random,
    ) -> None:
        with http:
            while self.running.is_set():
                try:
                    step(http, rng)
                except httpx.TransportError:
                    # Killed mid-request: the outcome is unknown, so nothing is noted.
                    time.sleep(0.01)

    def _create(self, http: httpx.Client, rng: random.Random) -> None:
        self.job_seq += 1
        job_id = f"crash-{self.job_seq}"
        r = http.post("/api/jobs/create", json={"jobId": job_id, "datasetName": "crash"})
        if r.is_success:
            self.jobs.append(job_id)
        else:
            assert r.status_code == 503, r.text

    def _stream(self, http: httpx.Client, rng: random.Random) -> None:
        # As an agent does: resend from the acknowledged offset until it is taken.
        offset = self.lines_acked
        count = rng.randint(1, 20)
        lines = [
            {"line": f"line {i}", "timestamp": 1_700_000_000.0 + i}
            for i in range(offset, offset + count)
        ]
        r = http.post(
            "/api/jobs/stream-log",
            json={
                "jobId": LOG_JOB,
                "nodeId": self.nodes[0].node_id,
                "attempt": 1,
                "offset": offset,
                "lines": lines,
            },
        )
        if r.is_success:
            assert r.json()["nextOffset"] >= offset + count, r.text
            self.lines_acked = offset + count
        else:
            assert r.status_code == 503, r.text

    def _heartbeat(self, http: httpx.Client, rng: random.Random, node: Node) -> None:
        with self._lock:
            self.beat_seq[node.node_id] += 1
            beat = self.beat_seq[node.node_id]
        running = [LOG_JOB] if node is self.nodes[0] else []
        r = http.post(
            "/api/nodes/heartbeat",
            json={"nodeId": node.node_id, "specs": {"beat": beat}, "runningJobs": running},
        )
        if r.is_success:
            self.beats[node.node_id].append(beat)
        else:
            assert r.status_code == 503, r.text

    def progressed(self, jobs: int, lines: int, beats: dict[str, int]) -> bool:
        """Each writer has been acknowledged at least once since these counts."""
        return (
            len(self.jobs) > jobs
            and self.lines_acked > lines
            and all(len(self.beats[n]) > beats[n] for n in self.beats)
        )


def whole_log(server: ServerProcess) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    with server.client() as http:
        while True:
            after = events[-1]["seq"] if events else 0
            r = http.get("/api/audit/log", params={"after": after, "limit": 10_000})
            assert r.status_code == 200, r.text
            page = r.json()["events"]
            if not page:
                return events
            for event in page:
                data = event["data"]
                event["data"] = json.loads(data) if isinstance(data, str) else data
            events.extend(page)


def check_acknowledged(server: ServerProcess, writers: Writers, seed: int) -> None:
    events = whole_log(server)
    created: dict[str, int] = {}
    spans: list[tuple[int, int, list[str]]] = []
    beats: dict[str, list[int]] = {n: [] for n in writers.beats}
    for e in events:
        data = e["data"]
        if e["type"] == "JobCreated":
            created[data["jobId"]] = created.get(data["jobId"], 0) + 1
        elif e["type"] == "LogLinesAppended" and data["jobId"] == LOG_JOB:
            texts = [line["line"] for line in data["lines"]]
            spans.append((data["offset"], data["offset"] + len(texts), texts))
        elif e["type"] == "NodeHeartbeat" and data["nodeId"] in beats:
            beats[data["nodeId"]].append(data["specs"]["beat"])
    where = f"(seed {seed})"
    # Jobs: every acknowledged one created exactly once.
    lost = [j for j in writers.jobs if created.get(j) != 1]
    assert not lost, f"acknowledged jobs lost or doubled {where}: {lost[:10]}"
    assert all(n == 1 for n in created.values()), f"a job created twice {where}"
    # Log lines: the events tile 0..N without overlap, each line its own text.
    spans.sort()
    covered = 0
    for start, end, texts in spans:
        assert start == covered, f"log events overlap or leave a gap at {start} {where}"
        assert texts == [f"line {i}" for i in range(start, end)], where
        covered = end
    assert covered >= writers.lines_acked, f"acknowledged log lines lost {where}"
    with server.client() as http:
        r = http.get(f"/api/frontend/logs/{LOG_JOB}", params={"limit": 10_000})
    assert r.status_code == 200, r.text
    stored = r.json()["logs"]
    assert [(ln["offset"], ln["line"]) for ln in stored] == [
        (i, f"line {i}") for i in range(covered)
    ], where
    # Heartbeats: each acknowledged one is an event of its own, none twice.
    for node, acked in writers.beats.items():
        assert len(beats[node]) == len(set(beats[node])), f"a heartbeat stored twice {where}"
        missing = set(acked) - set(beats[node])
        assert not missing, f"acknowledged heartbeats of {node} lost {where}: {sorted(missing)}"


def check_file(server: ServerProcess, copy: Path, seed: int) -> None:
    """``shelby verify`` on the live file; ``shelby rebuild`` of a snapshot of it gives
    back the projection tables the server had written."""
    copy.unlink(missing_ok=True)
    live = sqlite3.connect(server.db)
    target = sqlite3.connect(copy)
    try:
        live.backup(target)  # one consistent snapshot, WAL included
    finally:
        target.close()
        live.close()
    before = dump(copy)
    with ThreadPoolExecutor(2) as pool:  # two processes side by side
        verifying = pool.submit(verify, server.db)
        rebuilt = rebuild(copy)
        verified = verifying.result()
    assert verified.returncode == 0, f"verify failed (seed {seed}): {verified.stderr}"
    assert verified.stdout.startswith("ok: "), verified.stdout
    assert rebuilt.returncode == 0, rebuilt.stderr
    after = dump(copy)
    differ = [table for table in before if before[table] != after[table]]
    assert not differ, f"rebuilt projections differ from the live ones (seed {seed}): {differ}"


def test_sigkill_loop_loses_no_acknowledged_write(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    seed = int(os.environ.get("SHELBY_CRASH_SEED") or random.randrange(1 << 32))
    print(f"crash loop seed {seed} (SHELBY_CRASH_SEED={seed} replays it)")
    rng = random.Random(seed)
    server = server_factory("crash", lease_seconds=30)
    nodes = [register(server, f"crash-node-{k}") for k in range(HEARTBEATING)]
    with server.client() as admin:
        assert admin.post("/api/jobs/create", json={"jobId": LOG_JOB}).status_code == 200
        assert (
            admin.post(
                "/api/jobs/upload-script", json={"jobId": LOG_JOB, "script": "print(1)"}
            ).status_code
            == 200
        )
    job = nodes[0].poll().json()["job"]
    assert job["jobId"] == LOG_JOB
    assert nodes[0].ack(LOG_JOB, 1).status_code == 200
    for node in nodes:
        node.close()

    writers = Writers(server, nodes)
    for round_ in range(ROUNDS):
        counts = (
            len(writers.jobs),
            writers.lines_acked,
            {n: len(b) for n, b in writers.beats.items()},
        )
        writers.start(rng)
        deadline = time.monotonic() + 10
        while not writers.progressed(*counts):
            assert time.monotonic() < deadline, f"writers made no progress (seed {seed})"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.5))
        server.kill()
        writers.stop()
        server.start()
        check_acknowledged(server, writers, seed)
        check_file(server, tmp_path / f"copy-{round_}.db", seed)
    # Not an empty run: every kind of write was acknowledged many times over.
    assert len(writers.jobs) > ROUNDS and writers.lines_acked > ROUNDS
    assert all(len(b) > ROUNDS for b in writers.beats.values())

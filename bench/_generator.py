"""A realistic Shelby log of any size, written through the real write path.

Every event is the answer of the real deciders to a command, appended by the real
``CommandHandler`` to a ``SQLiteEventStore`` with every projection and the Merkle tree
kept in the append's transaction, exactly as a server writes them. Speed comes from
concurrency, not from shortcuts: thousands of commands are in flight at once, so the
store's group commit writes about a thousand events per transaction.

What the log holds, for ``events`` = N (defaults; ``Shape`` sets them):

- a fleet of 1,000 nodes, registered first, heartbeating round-robin (about 10 s apart
  in simulated time) with live usage and the jobs they hold: most of the log;
- N / 100 jobs (10,000 at a million events), created evenly over the history, each
  with a fate: finished, failed, failed and restarted, lease expired and requeued,
  handed back by its agent, timed out by the server, never acked, deleted, never given
  a script, asking for resources no node has; the last ones are still assigned or
  running at the end, so every status is present;
- each attempt that runs streams batches of 1-40 log lines (about a fifth of the
  events) and reports its usage before its end;
- one long job, running from the start to the end, writing a batch of 100 lines every
  so often: about a twentieth of all the log batches, so its log grows with the
  history (a million lines at a million events).

Time is simulated: the log ends at the moment it was built (``end``), and starts
``events`` x ``dt`` seconds before, so that each node heartbeats about every 10 s.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import os
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shelby.domain import JOBS, NODES
from shelby.domain.handler import Decider
from shelby.domain.jobs import (
    AckJob,
    AppendLogLines,
    AssignJob,
    CreateJob,
    DeleteJob,
    ExpireLease,
    FinishJob,
    ReleaseJob,
    ReportJobUsage,
    RestartJob,
    TimeOutJob,
    UploadScript,
)
from shelby.domain.nodes import Heartbeat, RegisterNode
from shelby.events.sqlite import SQLiteEventStore
from shelby.events.types import LogLine, Resources, job_stream, node_stream
from shelby.projections import all_projections

__all__ = [
    "GENERATOR_VERSION",
    "Generated",
    "Shape",
    "bench_dir",
    "cached_log",
    "generate",
    "long_job_id",
    "node_name",
]

# Bump when what the generator writes changes, so cached logs are not reused.
# 2: the store's 2 KB pages and its Merkle tree a row per batch (merkle_batches).
GENERATOR_VERSION = 2

HEARTBEAT_SECONDS = 10.0
HEARTBEAT_SHARE = 0.68  # about this share of the events are heartbeats
BATCH_SHARE = 0.19  # and this share are log batches of ordinary jobs
LONG_JOB_SHARE = 0.01  # and this share the long job's batches
LONG_JOB_LINES = 100
# Commands awaiting their append at once: enough for the store's group commit to fill
# one transaction while the next is queued, and a few heartbeats per node at most, so
# timestamps stay within seconds of their place in the log.
IN_FLIGHT_PER_NODE = 3
MAX_IN_FLIGHT = 4096

# How a job's life goes, per hundred jobs (the last few are left assigned instead).
FATES = {
    "finish": 62,
    "fail": 10,
    "fail_restart": 5,
    "lease": 4,
    "release": 3,
    "timeout": 2,
    "lost_ack": 2,
    "delete_after": 5,
    "delete_pending": 2,
    "no_script": 2,
    "unmatched": 3,
}
assert sum(FATES.values()) == 100

DATASETS = ("mnist", "cifar10", "imagenet-1k", "wikitext-103", "librispeech", "coco-2017")
ZONES = ("eu-west", "eu-central", "us-east")

# Figures for log lines, drawn once: writing a million lines must not cost a million
# draws of each.
_figures = random.Random(7)
_LOSS = [f"{_figures.uniform(0.05, 2.5):.4f}" for _ in range(997)]
_ACC = [f"{_figures.uniform(0.2, 0.99):.4f}" for _ in range(991)]
_SPEED = [f"{_figures.uniform(200, 900):.1f}" for _ in range(983)]


def node_name(k: int) -> str:
    return f"node-{k:04d}"


def job_name(k: int) -> str:
    return f"job-{k:06d}"


def long_job_id() -> str:
    """The job that runs from the start to the end with the longest log."""
    return job_name(0)


# --- what the commands say ---------------------------------------------------------------


def new_job(rng: random.Random, job_id: str, *, fate: str = "finish") -> CreateJob:
    """A job as a person submits it; ``fate`` ``unmatched`` asks what no node has."""
    resources = None
    if fate == "unmatched":
        resources = Resources(gpus=16)  # no node has sixteen GPUs
    elif rng.random() < 0.5:
        resources = Resources(cpu_count=rng.choice((2, 4, 8)), gpus=1)
    dataset = rng.choice(DATASETS)
    return CreateJob(
        job_id=job_id,
        dataset_name=dataset,
        dataset_url=f"https://datasets.example.org/{dataset}/v{rng.randint(1, 3)}.tar",
        dataset_hash="sha256:" + hashlib.sha256(dataset.encode()).hexdigest(),
        runtime_minutes_estimate=float(rng.choice((5, 10, 30, 60, 120))),
        meta={
            "lr": rng.choice((1e-3, 3e-4, 1e-4)),
            "batchSize": rng.choice((32, 64, 128, 256)),
            "model": rng.choice(("resnet50", "vit-b16", "gpt2-small", "whisper-tiny")),
            "owner": f"user{rng.randint(1, 40)}",
        },
        max_attempts=3,
        timeout_minutes=100_000.0 if fate == "long" else 240.0,
        resources=resources,
        labels={"team": rng.choice(("vision", "speech", "nlp"))},
    )


def script_for(create: CreateJob) -> UploadScript:
    script = (
        f"# {create.job_id}\nimport torch\nfrom train import main\n\n"
        f"main(lr={create.meta['lr']}, batch_size={create.meta['batchSize']})\n"
    )
    return UploadScript(
        job_id=create.job_id,
        script=script,
        requirements="torch==2.3.1\nnumpy>=1.26\n",
        entrypoint="train.py",
    )


def log_batch(
    job_id: str, node_id: str, attempt: int, offset: int, size: int, now: float
) -> AppendLogLines:
    """Lines ``offset`` .. ``offset + size - 1`` of a training run's output."""
    lines = []
    for step in range(offset, offset + size):
        if step % 37 == 36:
            text = f"WARNING: step {step}: gradient norm {_LOSS[step % 997]}e1, clipped"
            lines.append(LogLine(line=text, timestamp=now, stream="stderr"))
        else:
            text = (
                f"epoch {step // 500} step {step} loss={_LOSS[step % 997]}"
                f" acc={_ACC[step % 991]} lr=3.0e-04 {_SPEED[step % 983]} samples/s"
            )
            lines.append(LogLine(line=text, timestamp=now))
    return AppendLogLines(
        job_id=job_id, node_id=node_id, attempt=attempt, offset=offset, lines=lines
    )


def usage(
    rng: random.Random, job_id: str, node_id: str, attempt: int, wall: float
) -> ReportJobUsage:
    return ReportJobUsage(
        job_id=job_id,
        node_id=node_id,
        attempt=attempt,
        cpu_seconds=round(wall * rng.uniform(2, 14), 1),
        wall_seconds=round(wall, 1),
        peak_ram_mb=float(rng.randint(1500, 60000)),
        gpu_seconds=round(wall * 0.93, 1),
    )


def finish(rng: random.Random, job_id: str, node_id: str, attempt: int, ok: bool) -> FinishJob:
    if ok:
        digest = hashlib.sha256(f"{job_id}/{attempt}".encode()).hexdigest()
        return FinishJob(
            job_id=job_id,
            node_id=node_id,
            attempt=attempt,
            status="finished",
            model_hash="sha256:" + digest,
            exit_code=0,
            metadata={"finalLoss": round(rng.uniform(0.01, 0.4), 4)},
        )
    return FinishJob(
        job_id=job_id,
        node_id=node_id,
        attempt=attempt,
        status="failed",
        exit_code=1,
        error=rng.choice(
            (
                "RuntimeError: CUDA out of memory",
                "FileNotFoundError: data/train.idx",
                "ValueError: loss is NaN",
            )
        ),
    )


def heartbeat(rng: random.Random, node_id: str, held: list[str]) -> Heartbeat:
    """What an agent sends every few seconds: live usage and the jobs it holds."""
    busy = bool(held)
    gpus = [round(rng.uniform(70, 99) if busy else rng.uniform(0, 3), 1)]
    specs = {
        "cpuUsage": round(rng.uniform(35, 95) if busy else rng.uniform(1, 8), 1),
        "ramUsage": round(rng.uniform(20, 80) if busy else rng.uniform(3, 6), 1),
        "gpuUsage": gpus,
        "diskFreeGB": round(rng.uniform(200, 900), 1),
    }
    return Heartbeat(node_id=node_id, specs=specs, running_jobs=list(held))


def register(k: int, seed: int = 0) -> RegisterNode:
    node_id = node_name(k)
    gpus = [{"name": "A100", "memoryGB": 80}] * (1 if k % 4 else 2)
    return RegisterNode(
        node_id=node_id,
        name=f"gpu-{k:04d}.{ZONES[k % 3]}.cluster",
        token_hash=hashlib.sha256(f"token-{k}-{seed}".encode()).hexdigest(),
        specs={
            "cpuCount": 32,
            "totalRAM_GB": 256.0,
            "os": "Linux 6.1",
            "gpus": gpus,
            "python": "3.11.9",
        },
        labels={"zone": ZONES[k % 3], "pool": "a100"},
    )


@dataclass(frozen=True)
class Shape:
    """What to build: ``events`` exactly, with ``nodes`` and ``jobs`` (N / 100)."""

    events: int
    nodes: int = 1000
    jobs: int = 0  # 0: events // 100, at least 20
    seed: int = 0

    @property
    def job_count(self) -> int:
        return self.jobs or max(20, self.events // 100)

    def key(self) -> str:
        """Names a built file: the same key, the same log (but for its timestamps)."""
        versions = ",".join(f"{p.name}{p.version}" for p in all_projections())
        digest = hashlib.sha256(versions.encode()).hexdigest()[:8]
        return (
            f"v{GENERATOR_VERSION}-e{self.events}-n{self.nodes}-j{self.job_count}"
            f"-s{self.seed}-{digest}"
        )


@dataclass
class Generated:
    path: Path
    events: int
    seconds: float
    statuses: dict[str, int] = field(default_factory=dict)
    deleted: int = 0
    log_lines: int = 0
    long_job_lines: int = 0

    @property
    def rate(self) -> float:
        return self.events / max(self.seconds, 1e-9)


# --- the simulation ---------------------------------------------------------------------

Command = tuple[str, Decider[Any, Any], Any]


@dataclass
class _Node:
    node_id: str
    held: list[str] = field(default_factory=list)


@dataclass
class _Job:
    job_id: str
    fate: str
    attempt: int = 1
    node: _Node | None = None
    offset: int = 0


class _Simulation:
    """Commands in the order a coordinator would see them, each with the slot (its
    place in the log, one event per slot) it happens at. Jobs are generators of
    ``(command, slots until the next step)``; the slots between their steps are filled
    with heartbeats, round-robin over the fleet."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.rng = random.Random(shape.seed)
        self.n = shape.events
        self.nodes = [_Node(node_name(k)) for k in range(shape.nodes)]
        self.free = list(self.nodes)
        self.jobs = shape.job_count
        self.slot = 0
        self.beats = 0
        self.lines = 0
        self.long_lines = 0
        self.deleted = 0
        # Mean slots an ordinary attempt runs, and between two of its log batches, so
        # that batches come to about BATCH_SHARE of the log.
        self.run_slots = 0.0225 * self.n
        running = max(self.jobs * 0.0225 * 1.15, 1.0)
        self.batch_gap = max(running / BATCH_SHARE, 1.0)
        self.long_gap = 1 / LONG_JOB_SHARE
        fates = [f for f, k in FATES.items() for _ in range(k)]
        self.rng.shuffle(fates)
        self.fates = fates

    # -- jobs

    def _create(self, k: int) -> CreateJob:
        return new_job(self.rng, job_name(k), fate="long" if k == 0 else self._fate(k))

    def _fate(self, k: int) -> str:
        if k >= self.jobs - max(2, self.jobs // 200):
            return "assigned"  # the newest jobs: handed out, not yet acked at the end
        return self.fates[k % len(self.fates)]

    def _take_node(self) -> _Node | None:
        if not self.free:
            return None
        i = self.rng.randrange(len(self.free))
        self.free[i], self.free[-1] = self.free[-1], self.free[i]
        return self.free.pop()

    def _let_go(self, job: _Job) -> None:
        node = job.node
        if node is not None:
            node.held.remove(job.job_id)
            self.free.append(node)
            job.node = None

    def _batch(self, job: _Job, size: int) -> AppendLogLines:
        assert job.node is not None
        now = self.time_of(self.slot)
        command = log_batch(job.job_id, job.node.node_id, job.attempt, job.offset, size, now)
        job.offset += size
        self.lines += size
        return command

    def _usage(self, job: _Job, slots: float) -> ReportJobUsage:
        assert job.node is not None
        return usage(self.rng, job.job_id, job.node.node_id, job.attempt, slots * self.dt)

    def _finish(self, job: _Job, ok: bool) -> FinishJob:
        assert job.node is not None
        return finish(self.rng, job.job_id, job.node.node_id, job.attempt, ok)

    def _attempt(self, job: _Job, ending: str) -> Iterator[tuple[Any, float]]:
        """One attempt, from assignment to ``ending``: ``finish``, ``fail``, ``lease``,
        ``release``, ``timeout``, ``lost_ack``, ``assigned`` (left as it is) or
        ``running`` (runs past the end of the log)."""
        while (node := self._take_node()) is None:
            yield None, 50.0  # every node is busy: ask again a little later
        job.node = node
        node.held.append(job.job_id)
        yield AssignJob(job_id=job.job_id, node_id=node.node_id), self.rng.uniform(5, 60)
        if ending == "assigned":
            return
        if ending == "lost_ack":  # the poll's answer was lost: the lease runs out
            yield ExpireLease(job_id=job.job_id, node_id=node.node_id, attempt=job.attempt), 1
            self._let_go(job)
            job.attempt += 1
            return
        yield AckJob(job_id=job.job_id, node_id=node.node_id, attempt=job.attempt), 1
        job.offset = 0
        long = job.job_id == long_job_id()
        if long or ending == "running":
            run = float(self.n)  # past the end
        else:
            run = self.rng.uniform(0.2, 1.8) * self.run_slots
            if ending in ("lease", "release", "timeout"):
                run *= self.rng.uniform(0.2, 0.8)
        spent = 0.0
        while True:
            gap = self.rng.expovariate(1 / (self.long_gap if long else self.batch_gap))
            if spent + gap >= run:
                break
            spent += gap
            yield None, gap
            if long:
                yield self._batch(job, LONG_JOB_LINES), 1
                self.long_lines += LONG_JOB_LINES
            else:
                yield self._batch(job, self.rng.randint(1, 40)), 1
        yield None, max(run - spent, 1.0)
        node_id = node.node_id
        if ending in ("finish", "fail"):
            yield self._usage(job, run), 1
            yield self._finish(job, ending == "finish"), 1
        elif ending == "lease":
            yield ExpireLease(job_id=job.job_id, node_id=node_id, attempt=job.attempt), 1
            job.attempt += 1
        elif ending == "release":
            yield self._usage(job, run), 1
            yield (
                ReleaseJob(
                    job_id=job.job_id,
                    node_id=node_id,
                    attempt=job.attempt,
                    reason="agent shutting down",
                ),
                1,
            )
            job.attempt += 1
        elif ending == "timeout":
            yield TimeOutJob(job_id=job.job_id, attempt=job.attempt), 1
        self._let_go(job)

    def _life(self, k: int) -> Iterator[tuple[Any, float]]:
        create = self._create(k)
        fate = "long" if k == 0 else self._fate(k)
        job = _Job(create.job_id, fate)
        rng = self.rng
        yield create, rng.uniform(1, 200)
        if fate == "delete_pending":
            yield DeleteJob(job_id=job.job_id), 1
            self.deleted += 1
            return
        if fate == "no_script":
            return
        yield script_for(create), rng.uniform(1, 0.002 * self.n + 2)
        if fate == "unmatched":
            return  # pending: no node matches it
        if fate in ("long", "assigned"):
            yield from self._attempt(job, "running" if fate == "long" else "assigned")
            return
        if fate in ("lease", "release", "lost_ack"):
            yield from self._attempt(job, fate)
            yield None, rng.uniform(10, 300)  # back in the queue
            yield from self._attempt(job, "finish")
        elif fate == "timeout":
            yield from self._attempt(job, "timeout")
        elif fate == "fail_restart":
            yield from self._attempt(job, "fail")
            yield None, rng.uniform(50, 0.01 * self.n + 60)
            yield RestartJob(job_id=job.job_id), rng.uniform(5, 200)
            job.attempt += 1
            yield from self._attempt(job, "finish")
        else:
            yield from self._attempt(job, "fail" if fate == "fail" else "finish")
        if fate == "delete_after":
            yield None, rng.uniform(50, 0.01 * self.n + 60)
            yield DeleteJob(job_id=job.job_id), 1
            self.deleted += 1

    # -- the timeline

    @property
    def dt(self) -> float:
        """Simulated seconds per slot: each node heartbeats every HEARTBEAT_SECONDS."""
        return HEARTBEAT_SECONDS * HEARTBEAT_SHARE / max(len(self.nodes), 1)

    def time_of(self, slot: float) -> float:
        return self.start + slot * self.dt

    def commands(self, start: float) -> Iterator[tuple[float, int, Command]]:
        """``(time, events it appends, command)`` in order, exactly ``n`` events."""
        self.start = start
        rng = self.rng
        for k, node in enumerate(self.nodes):
            yield start, 1, (node_stream(node.node_id), NODES, register(k, self.shape.seed))
        self.slot = len(self.nodes)
        tie = itertools.count()
        due: list[tuple[float, int, Iterator[tuple[Any, float]]]] = []
        first = float(self.slot)
        spacing = max((0.99 * self.n - first) / self.jobs, 1.0)
        next_job, next_job_at = 0, first
        made = self.slot
        while made < self.n:
            if next_job < self.jobs and next_job_at <= self.slot:
                heapq.heappush(due, (float(self.slot), next(tie), self._life(next_job)))
                next_job += 1
                next_job_at = first + (next_job + rng.uniform(-0.4, 0.4)) * spacing
            command = self._next_step(due, tie)
            if command is None:
                yield self.time_of(self.slot), 1, self._heartbeat()
                made += 1
            else:
                # A server's timeout appends JobTimedOut and JobFailed at once.
                width = 2 if isinstance(command, TimeOutJob) else 1
                if made + width > self.n:  # the very last slot: a heartbeat fits it
                    yield self.time_of(self.slot), 1, self._heartbeat()
                    made += 1
                else:
                    stream = job_stream(command.job_id)
                    yield self.time_of(self.slot), width, (stream, JOBS, command)
                    made += width
            self.slot += 1

    def _next_step(
        self, due: list[tuple[float, int, Iterator[tuple[Any, float]]]], tie: Iterator[int]
    ) -> Any:
        """The command of the first job whose next step is due, if any; a job that only
        waits goes back in the heap for later."""
        while due and due[0][0] <= self.slot:
            _, _, life = heapq.heappop(due)
            step = next(life, None)
            if step is None:
                continue  # that job's story is over
            command, wait = step
            heapq.heappush(due, (self.slot + wait, next(tie), life))
            if command is not None:
                return command
        return None

    def _heartbeat(self) -> Command:
        node = self.nodes[self.beats % len(self.nodes)]
        self.beats += 1
        return node_stream(node.node_id), NODES, heartbeat(self.rng, node.node_id, node.held)


class _Streams:
    """Decides commands with the real deciders and appends their events with the real
    store, one append in flight per stream (as the command handler's stream lock
    does). A job's commands that arrive while its append is written are decided in
    turn and appended together, in one multi-event append (sharing its timestamp); a
    node's heartbeats are appended one by one, each with its own time, as a server
    records them."""

    def __init__(self, store: SQLiteEventStore, window: int) -> None:
        self.store = store
        self.window = window
        self.states: dict[str, tuple[Any, int]] = {}
        self.queues: dict[str, list[tuple[float, Decider[Any, Any], Any]]] = {}
        self.in_flight = 0  # commands queued or being appended
        self.room = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.failures: list[BaseException] = []
        self.written = 0
        self.last_time = 0.0

    async def submit(self, at: float, command: Command) -> None:
        """Queue a command, waiting while ``window`` commands are not yet durable."""
        while self.in_flight >= self.window:
            self.room.clear()
            await self.room.wait()
        self.in_flight += 1
        if self.failures:
            raise self.failures[0]
        stream, decider, body = command
        queue = self.queues.get(stream)
        if queue is not None:  # an append of this stream is being written
            queue.append((at, decider, body))
            return
        self.queues[stream] = [(at, decider, body)]
        task = asyncio.create_task(self._write(stream))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def settle(self) -> None:
        while self.tasks:
            await asyncio.gather(*self.tasks)
        if self.failures:
            raise self.failures[0]

    def _done(self, commands: int) -> None:
        self.in_flight -= commands
        if self.in_flight < self.window:
            self.room.set()

    async def _write(self, stream: str) -> None:
        try:
            while queue := self.queues[stream]:
                decider = queue[0][1]
                take = len(queue) if decider is JOBS else 1
                batch, self.queues[stream] = queue[:take], queue[take:]
                state, version = self.states.get(stream) or (decider.initial_state(), 0)
                events = []
                for _, _, body in batch:
                    decided = decider.decide(body, state)
                    state = decider.fold(state, decided)
                    events.extend(decided)
                # The log's timestamps never go back, as a server's clock does not.
                at = self.last_time = max(self.last_time, batch[-1][0])
                await self.store.append(
                    stream, events, expected_version=version, timestamp=round(at, 6)
                )
                self.states[stream] = (state, version + len(events))
                self.written += len(events)
                self._done(len(batch))
        except BaseException as exc:  # a refusal is a bug of the simulation
            self.failures.append(exc)
            self._done(self.window)
        finally:
            del self.queues[stream]


# --- running it ---------------------------------------------------------------------------


async def _drive(
    path: Path, shape: Shape, progress: Callable[[int, float], None] | None
) -> tuple[int, _Simulation]:
    sim = _Simulation(shape)
    start = time.time() - shape.events * sim.dt
    store = SQLiteEventStore(path, all_projections())
    await store.open()
    streams = _Streams(store, min(MAX_IN_FLIGHT, max(IN_FLIGHT_PER_NODE * shape.nodes, 64)))
    expected = reported = 0
    try:
        for at, width, command in sim.commands(start):
            await streams.submit(at, command)
            expected += width
            if expected == len(sim.nodes):
                await streams.settle()  # every node is registered before anything names it
            if progress is not None and streams.written - reported >= 100_000:
                reported = streams.written
                progress(reported, at)
        await streams.settle()
    finally:
        for task in streams.tasks:
            task.cancel()
        await store.close()
    if streams.written != expected or expected != shape.events:
        raise AssertionError(
            f"the generator wrote {streams.written} events, expected {expected} of {shape.events}"
        )
    return streams.written, sim


def generate(
    path: Path, shape: Shape, progress: Callable[[int, float], None] | None = None
) -> Generated:
    """Build a new log of exactly ``shape.events`` events at ``path`` (which must not
    exist), checkpointed so the file holds everything."""
    if path.exists():
        raise FileExistsError(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    written, sim = asyncio.run(_drive(path, shape, progress))
    seconds = time.perf_counter() - started
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        statuses = dict(conn.execute("SELECT status, n FROM job_counts").fetchall())
    finally:
        conn.close()
    return Generated(
        path=path,
        events=written,
        seconds=seconds,
        statuses=statuses,
        deleted=sim.deleted,
        log_lines=sim.lines,
        long_job_lines=sim.long_lines,
    )


def bench_dir() -> Path:
    """Where built logs are kept between benches: ``$BENCH_DIR``, else the temp dir."""
    root = os.environ.get("BENCH_DIR") or tempfile.gettempdir()
    return Path(root) / "shelby-bench-logs"


def cached_log(shape: Shape, *, echo: Callable[[str], None] = print) -> Path:
    """The built log of ``shape``, made once and kept (under ``bench_dir()``) by its
    key; a build that did not finish is never reused, it is built again."""
    path = bench_dir() / f"{shape.key()}.db"
    if path.exists():
        echo(f"  reusing the log of {shape.events:,} events at {path}")
        return path
    building = path.with_name(f"{path.stem}.building-{os.getpid()}.db")
    for leftover in path.parent.glob(f"{path.stem}.building-*"):
        if not _alive(leftover.name.split(".building-")[1].split(".")[0]):
            leftover.unlink(missing_ok=True)  # a build that died; one still running stays
    echo(
        f"  building a log of {shape.events:,} events ({shape.nodes:,} nodes,"
        f" {shape.job_count:,} jobs) at {path}"
    )

    def progress(written: int, _at: float) -> None:
        echo(f"    {written:,} events")

    built = generate(building, shape, progress)
    building.rename(path)
    built.path = path
    for leftover in path.parent.glob(f"{building.name}-*"):  # an empty -wal or -shm
        leftover.unlink()
    echo(f"  built: {describe(built)}")
    return path


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def describe(built: Generated) -> str:
    statuses = ", ".join(f"{n:,} {s}" for s, n in built.statuses.items())
    return (
        f"{built.events:,} events in {built.seconds:.1f} s ({built.rate:,.0f} events/s);"
        f" {built.path.stat().st_size / 1e6:,.0f} MB; jobs: {statuses}, {built.deleted:,}"
        f" deleted; {built.log_lines:,} log lines ({built.long_job_lines:,} in the long job)"
    )

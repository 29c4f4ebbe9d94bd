"""A simulated fleet against one real ``shelby serve``: what ``bench_load`` and
``bench_fleet`` share.

Three processes: this benchmark (which starts the server, sets the fleet up, samples
the server's RSS and CPU every second and checks the log at the end), the server, and
the load generator (this file run as a script), so that the generator's CPU is its own
and shows.

The generator is open-loop. One scheduler hands out heartbeats at an even rate (node
``k mod N`` at ``start + k / rate``, so the nodes' phases are spread evenly), another
hands out log batches the same way; each simulated node and each job's log stream is
its own keep-alive HTTP/1.1 connection that sends what it is handed in order. Latency
is measured from the *scheduled* time, so a server that falls behind shows up as
latency, not as fewer requests (no coordinated omission); the generator's own lateness
is measured apart, as the lag of a 10 ms ticker on its event loop.

Raw asyncio HTTP rather than httpx: the generator shares the machine's two cores with
the server, and httpx costs several times more CPU per request.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

__all__ = ["FleetRun", "ServerSamples", "line_text", "run_fleet"]

LINE = "step {n} loss={loss:.4f} lr=3.0e-04 grad_norm=1.{g:03d} tokens/s=51234 job {job}"


def line_text(job: str, n: int) -> str:
    """The ``n``-th line a simulated job prints: about 80 bytes, like a training log."""
    return LINE.format(n=n, loss=1.0 / (1 + n), g=n % 1000, job=job)


# --- the generator (its own process) ----------------------------------------------------


@dataclass
class Phase:
    """Requests scheduled in one phase, and what became of them."""

    label: str
    mult: float
    seconds: float
    hb: list[float] = field(default_factory=list)  # latencies from the scheduled time
    log: list[float] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)  # the generator's own ticker lag
    errors: list[str] = field(default_factory=list)
    scheduled_hb: int = 0
    scheduled_log: int = 0
    outstanding: int = 0
    started: float = 0.0
    ended: float = 0.0
    cpu: float = 0.0  # the generator's CPU seconds over the phase
    connects: int = 0  # connections opened during the phase

    def summary(self, hb_rate: float) -> dict[str, Any]:
        return {
            "label": self.label,
            "mult": self.mult,
            "seconds": self.ended - self.started,
            "target_hb_rate": hb_rate,
            "heartbeats": len(self.hb),
            "scheduled_heartbeats": self.scheduled_hb,
            "log_batches": len(self.log),
            "scheduled_log_batches": self.scheduled_log,
            "hb_p50_ms": _q(self.hb, 0.5),
            "hb_p99_ms": _q(self.hb, 0.99),
            "hb_max_ms": _q(self.hb, 1.0),
            "log_p50_ms": _q(self.log, 0.5),
            "log_p99_ms": _q(self.log, 0.99),
            "lag_p99_ms": _q(self.lag, 0.99),
            "errors": len(self.errors),
            "error_samples": self.errors[:5],
            "unanswered": self.outstanding,
            "generator_cpu_pct": 100 * self.cpu / max(self.ended - self.started, 1e-9),
            "connects": self.connects,
        }


def _q(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * q))]


class _Conn:
    """One keep-alive HTTP/1.1 connection; the server always sends Content-Length.

    Like a client's connection pool (httpx's, in the agent), it opens a new connection
    when the server has closed the idle one (uvicorn closes a connection idle for 5 s,
    and a node heartbeats every 10 s), and sends again once when a reused connection
    turns out closed before any answer came: every request here may be repeated
    (a heartbeat is one more heartbeat, a log batch carries its offset)."""

    connects = 0  # over all connections: what the server had to accept

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, data: bytes) -> tuple[int, bytes]:
        reused = self.reader is not None and not self.reader.at_eof()
        if not reused:
            await self._connect()
        try:
            return await self._exchange(data)
        except (OSError, asyncio.IncompleteReadError) as exc:
            self._close()
            if not (reused and isinstance(exc, asyncio.IncompleteReadError) and not exc.partial):
                raise
        await self._connect()
        try:
            return await self._exchange(data)
        except (OSError, asyncio.IncompleteReadError):
            self._close()
            raise

    async def _connect(self) -> None:
        self._close()
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        _Conn.connects += 1

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def _exchange(self, data: bytes) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return int(head[9:12]), await self.reader.readexactly(length)


def _post(path: str, token: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


class _Generator:
    def __init__(self, config: dict[str, Any]) -> None:
        self.port: int = config["port"]
        self.interval: float = config["hb_interval"]
        self.nodes: list[list[Any]] = config["nodes"]  # [node_id, token, running_job | None]
        self.jobs: list[list[Any]] = config["jobs"]  # [job_id, node_id, token, attempt]
        self.batch: int = config["log_batch_lines"]
        self.batches_per_second: float = config["log_batches_per_second"]
        self.phase = Phase("setup", 1, 0)
        self.stopping = False
        self.answered_heartbeats = 0  # in every phase, cool-downs included
        self._hb_k = 0  # heartbeats handed out so far: the next goes to node k mod N
        self.acked_lines: dict[str, int] = {job[0]: 0 for job in self.jobs}
        self.node_queues: list[deque[tuple[float, Phase]]] = [deque() for _ in self.nodes]
        self.node_wake = [asyncio.Event() for _ in self.nodes]
        self.job_queues: list[deque[tuple[float, Phase]]] = [deque() for _ in self.jobs]
        self.job_wake = [asyncio.Event() for _ in self.jobs]

    # Each simulated node: its heartbeats in order on its own connection.
    async def node(self, i: int) -> None:
        node_id, token, running = self.nodes[i]
        body = json.dumps(
            {
                "nodeId": node_id,
                "specs": {"cpuUsage": 45.2, "ramUsage": 60.1, "gpuUsage": 0.0},
                "runningJobs": [running] if running else [],
            },
            separators=(",", ":"),
        ).encode()
        request = _post("/api/nodes/heartbeat", token, body)
        conn = _Conn(self.port)
        queue, wake = self.node_queues[i], self.node_wake[i]
        while True:
            while not queue:
                wake.clear()
                await wake.wait()
            scheduled, phase = queue.popleft()
            try:
                status, answer = await conn.request(request)
            except (OSError, asyncio.IncompleteReadError) as exc:
                phase.errors.append(f"heartbeat {node_id}: {exc!r}")
            else:
                if status != 200 or b'"cancelJobs":[]' not in answer:
                    phase.errors.append(f"heartbeat {node_id}: {status} {answer[:200]!r}")
                else:
                    phase.hb.append(time.perf_counter() - scheduled)
                    self.answered_heartbeats += 1
            phase.outstanding -= 1

    # Each job's log stream: batches of consecutive lines, at the offset the server expects.
    async def job(self, i: int) -> None:
        job_id, node_id, token, attempt = self.jobs[i]
        conn = _Conn(self.port)
        queue, wake = self.job_queues[i], self.job_wake[i]
        offset = 0
        while True:
            while not queue:
                wake.clear()
                await wake.wait()
            scheduled, phase = queue.popleft()
            now = time.time()
            lines = [
                {"line": line_text(job_id, offset + n), "timestamp": now, "stream": "stdout"}
                for n in range(self.batch)
            ]
            body = json.dumps(
                {
                    "jobId": job_id,
                    "nodeId": node_id,
                    "attempt": attempt,
                    "offset": offset,
                    "lines": lines,
                },
                separators=(",", ":"),
            ).encode()
            try:
                status, answer = await conn.request(_post("/api/jobs/stream-log", token, body))
            except (OSError, asyncio.IncompleteReadError) as exc:
                phase.errors.append(f"stream-log {job_id}: {exc!r}")
            else:
                result = json.loads(answer) if status == 200 else {}
                if result.get("accepted") != self.batch or result.get("nextOffset") != (
                    offset + self.batch
                ):
                    phase.errors.append(f"stream-log {job_id}@{offset}: {status} {answer[:200]!r}")
                else:
                    phase.log.append(time.perf_counter() - scheduled)
                if status == 200:  # resend nothing the server holds, skip nothing it lacks
                    offset = int(result["nextOffset"])
                    self.acked_lines[job_id] = offset
            phase.outstanding -= 1

    async def heartbeats(self, phase: Phase) -> None:
        """Hand heartbeats out evenly over ``phase``: node k mod N at start + k / rate."""
        n = len(self.nodes)
        step = self.interval / (phase.mult * n)
        t = phase.started
        k = self._hb_k
        end = phase.started + phase.seconds
        while t < end:
            now = time.perf_counter()
            if t > now:
                await asyncio.sleep(t - now)
                continue
            i = k % n
            self.node_queues[i].append((t, phase))
            self.node_wake[i].set()
            phase.scheduled_hb += 1
            phase.outstanding += 1
            k += 1
            t += step
        self._hb_k = k

    async def logs(self, started: float) -> None:
        """Log batches at a constant rate from ``started`` on, whatever the phase."""
        n = len(self.jobs)
        if n == 0:
            return
        step = 1.0 / (self.batches_per_second * n)
        t, k = started, 0
        while not self.stopping:
            now = time.perf_counter()
            if t > now:
                await asyncio.sleep(t - now)
                continue
            i = k % n
            self.job_queues[i].append((t, self.phase))
            self.job_wake[i].set()
            self.phase.scheduled_log += 1
            self.phase.outstanding += 1
            k += 1
            t += step

    async def ticker(self) -> None:
        while not self.stopping:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            self.phase.lag.append(max(0.0, time.perf_counter() - before - 0.01))

    async def run_phase(self, phase: Phase) -> Phase:
        phase.started = time.perf_counter()
        cpu = time.process_time()
        connects = _Conn.connects
        self.phase = phase
        _emit({"event": "phase_start", "label": phase.label})
        await self.heartbeats(phase)
        phase.ended = time.perf_counter()
        phase.cpu = time.process_time() - cpu
        phase.connects = _Conn.connects - connects
        _emit({"event": "phase_end", "label": phase.label})
        return phase

    async def drain(self, phase: Phase, seconds: float) -> None:
        """Wait (at most ``seconds``) for the answers to the phase's requests."""
        deadline = time.perf_counter() + seconds
        while phase.outstanding > 0 and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    def report(self, phase: Phase) -> dict[str, Any]:
        summary = phase.summary(phase.mult * len(self.nodes) / self.interval)
        _emit({"event": "phase", **summary})
        return summary

    async def main(self, plan: list[dict[str, Any]], search: dict[str, Any] | None) -> None:
        tasks = [asyncio.create_task(self.node(i)) for i in range(len(self.nodes))]
        tasks += [asyncio.create_task(self.job(i)) for i in range(len(self.jobs))]
        tasks.append(asyncio.create_task(self.ticker()))
        logs = asyncio.create_task(self.logs(time.perf_counter()))
        phases = [Phase(p["label"], p["mult"], p["seconds"]) for p in plan]
        last: Phase | None = None
        for phase in phases:
            await self.run_phase(phase)
            if last is not None:
                self.report(last)
            last = phase
        if search is not None:
            await self.search(search, last)
            last = None
        self.stopping = True
        await logs
        await self.drain(self.phase, 15)  # the last phase: whatever ran last is answered
        if last is not None:
            self.report(last)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        _emit(
            {
                "event": "done",
                "acked_lines": self.acked_lines,
                "answered_heartbeats": self.answered_heartbeats,
                "connects": _Conn.connects,
            }
        )

    async def search(self, cfg: dict[str, Any], previous: Phase | None) -> None:
        """Double the heartbeat rate until p99 passes the limit (or errors), then bisect
        between the last rate held and the first that was not; between steps a short
        spell at the fleet's own rate lets the server drain."""

        tries: dict[float, int] = {}

        async def step(mult: float) -> bool:
            tries[mult] = tries.get(mult, 0) + 1
            label = f"x{mult:g}" + ("" if tries[mult] == 1 else " again")
            phase = await self.run_phase(Phase(label, mult, cfg["seconds"]))
            await self.run_phase(Phase("cool-down", 1, cfg["cooldown"]))
            await self.drain(phase, 15)
            summary = self.report(phase)
            held = (
                summary["errors"] == 0
                and summary["unanswered"] == 0
                and summary["hb_p99_ms"] <= cfg["p99_limit_ms"]
            )
            _emit({"event": "step", "mult": mult, "held": held})
            return held

        if previous is not None:
            await self.drain(previous, 15)
            self.report(previous)

        async def holds(mult: float) -> bool:
            # Other work on the machine can spoil one step: a step that fails is tried
            # once more, and holds if either try held.
            return await step(mult) or await step(mult)

        held, failed = 1.0, None
        mult = cfg["start_mult"]
        while mult <= cfg["max_mult"]:
            if not await holds(mult):
                failed = mult
                break
            held = mult
            mult *= 2
        for _ in range(cfg["refine"] if failed is not None else 0):
            mid = round((held * failed) ** 0.5, 2)
            if await holds(mid):
                held = mid
            else:
                failed = mid
        _emit({"event": "search", "held_mult": held, "failed_mult": failed})


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def generate(config_file: str) -> None:
    config = json.loads(Path(config_file).read_text())
    gen_main = _Generator(config).main(config["phases"], config.get("search"))
    import uvloop

    uvloop.run(gen_main)


# --- setting the fleet up (from the benchmark's process) --------------------------------


@dataclass
class FleetSetup:
    nodes: list[list[Any]]  # [node_id, token, running_job | None]
    jobs: list[list[Any]]  # [job_id, node_id, token, attempt]
    seconds: float  # how long setting up took


def set_up_fleet(port: int, n_nodes: int, n_jobs: int) -> FleetSetup:
    """Register the nodes, create the jobs with their scripts, and have the first
    ``n_jobs`` nodes poll and ack one each, so that the jobs are running."""
    import httpx

    from bench_dispatch import _create_jobs
    from bench_heartbeats import register_nodes

    started = time.perf_counter()
    registered = register_nodes(port, n_nodes, prefix="fleet")
    nodes: list[list[Any]] = [[node_id, token, None] for node_id, token in registered]
    _create_jobs(port, n_jobs, "fleet-job")
    jobs: list[list[Any]] = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
        for node in nodes[:n_jobs]:
            node_id, token, _ = node
            auth = {"Authorization": f"Bearer {token}"}
            r = c.get("/api/jobs/poll", params={"nodeId": node_id}, headers=auth)
            r.raise_for_status()
            job = r.json()["job"]
            c.post(
                "/api/jobs/ack",
                json={"jobId": job["jobId"], "nodeId": node_id, "attempt": job["attempt"]},
                headers=auth,
            ).raise_for_status()
            node[2] = job["jobId"]
            jobs.append([job["jobId"], node_id, token, job["attempt"]])
    return FleetSetup(nodes, jobs, time.perf_counter() - started)


# --- sampling the server and running the generator ---------------------------------------


@dataclass
class ServerSamples:
    """The server's RSS every second, and its CPU seconds at each phase's edges."""

    pid: int
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, bytes)
    cpu_marks: dict[str, float] = field(default_factory=dict)
    wall_marks: dict[str, float] = field(default_factory=dict)
    stall_marks: dict[str, float] = field(default_factory=dict)
    host_cpu: list[float] = field(default_factory=list)  # whole machine, % of all cores

    def cpu(self) -> float:
        import psutil

        t = psutil.Process(self.pid).cpu_times()
        return float(t.user + t.system)

    def mark(self, name: str) -> None:
        self.cpu_marks[name] = self.cpu()
        self.wall_marks[name] = time.perf_counter()
        self.stall_marks[name] = _cpu_stalled()

    def cpu_pct(self, start: str, end: str) -> float:
        wall = self.wall_marks[end] - self.wall_marks[start]
        return 100 * (self.cpu_marks[end] - self.cpu_marks[start]) / max(wall, 1e-9)

    def pressure_pct(self, start: str, end: str) -> float:
        """The machine's CPU pressure between two marks: the share of the time in which
        some runnable task waited for a core (Linux PSI, ``/proc/pressure/cpu``). On a
        machine shared with other work this, not our load, is what sets the tail."""
        wall = self.wall_marks[end] - self.wall_marks[start]
        stalled = self.stall_marks[end] - self.stall_marks[start]
        return 100 * stalled / max(wall, 1e-9)


def _cpu_stalled() -> float:
    """Seconds in which some task waited for a CPU since boot (nan without PSI)."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return float("nan")
    return int(line.rpartition("total=")[2]) / 1e6


def run_generator(
    port: int,
    setup: FleetSetup,
    *,
    hb_interval: float,
    log_batch_lines: int,
    log_batches_per_second: float,
    phases: list[dict[str, Any]],
    search: dict[str, Any] | None,
    samples: ServerSamples,
    workdir: Path,
    timeout: float,
) -> list[dict[str, Any]]:
    """Run the generator to its end, sampling the server every second meanwhile; the
    generator's JSON lines come back in order, each phase's edges marked in
    ``samples``."""
    import psutil

    config = {
        "port": port,
        "hb_interval": hb_interval,
        "nodes": setup.nodes,
        "jobs": setup.jobs,
        "log_batch_lines": log_batch_lines,
        "log_batches_per_second": log_batches_per_second,
        "phases": phases,
        "search": search,
    }
    config_file = workdir / "generator.json"
    config_file.write_text(json.dumps(config))
    proc = subprocess.Popen(
        [sys.executable, __file__, "--generate", str(config_file)],
        stdout=subprocess.PIPE,
        text=True,
    )
    out: list[dict[str, Any]] = []
    counts: dict[str, int] = {}

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            msg = json.loads(line)
            if msg["event"] in ("phase_start", "phase_end"):
                # The same label may come back (cool-downs): number them.
                key = f"{msg['event']}:{msg['label']}"
                counts[key] = counts.get(key, 0) + 1
                samples.mark(f"{key}#{counts[key]}")
            out.append(msg)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    server = psutil.Process(samples.pid)
    started = time.perf_counter()
    psutil.cpu_percent()
    deadline = started + timeout
    try:
        while proc.poll() is None:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"the generator ran past {timeout:.0f} s")
            samples.rss.append((time.perf_counter() - started, server.memory_info().rss))
            samples.host_cpu.append(psutil.cpu_percent())
            time.sleep(1.0)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join(timeout=5)
    if proc.returncode != 0:
        raise RuntimeError(f"the generator exited with {proc.returncode}")
    return out


# --- one whole run ----------------------------------------------------------------------


@dataclass
class FleetRun:
    setup: FleetSetup
    samples: ServerSamples
    messages: list[dict[str, Any]]  # the generator's, in order
    heartbeat_events: int  # NodeHeartbeat events appended during the run
    answered_heartbeats: int
    read_back: int  # log lines read back at the end
    expected_lines: int  # log lines the server acknowledged
    problems: list[str]  # lines lost, doubled or changed

    def phases(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["event"] == "phase"]

    def event(self, name: str) -> dict[str, Any]:
        return next(m for m in self.messages if m["event"] == name)

    @property
    def kept(self) -> bool:
        """Every answered heartbeat an event, every acknowledged line stored once."""
        return (
            self.heartbeat_events == self.answered_heartbeats
            and not self.problems
            and self.read_back == self.expected_lines
        )

    def kept_line(self) -> str:
        return (
            f"  kept        {self.heartbeat_events:,} NodeHeartbeat events for"
            f" {self.answered_heartbeats:,} answered heartbeats; {self.read_back:,} of"
            f" {self.expected_lines:,} acknowledged log lines read back, each exactly once and"
            f" in order: {'yes' if self.kept else 'NO'}"
            + "".join(f"\n    lost or doubled: {p}" for p in self.problems[:10])
        )


def run_fleet(
    *,
    nodes: int,
    jobs: int,
    lease: float,
    rate_limit: str,
    log_batch_lines: int,
    log_batches_per_second: float,
    phases: list[dict[str, Any]],
    search: dict[str, Any] | None = None,
    profile_to: Path | None = None,
) -> FleetRun:
    """Start a server, set the fleet up, run the generator against it (sampling the
    server, and profiling it if asked), then read back what it kept, and stop it."""
    from _profile import record, stop_recording
    from _servers import ADMIN, free_port, start_shelby, stop
    from shelby.settings import heartbeat_interval

    with tempfile.TemporaryDirectory(prefix="shelby-bench-") as tmp:
        data = Path(tmp)
        port = free_port()
        server = start_shelby(data / "shelby.db", port, lease_seconds=lease, rate_limit=rate_limit)
        profiler = None
        try:
            setup = set_up_fleet(port, nodes, jobs)
            before = heartbeat_events(data / "shelby.db")
            samples = ServerSamples(server.pid)
            if profile_to is not None:
                profiler = record(server.pid, profile_to)
            messages = run_generator(
                port,
                setup,
                hb_interval=heartbeat_interval(lease),
                log_batch_lines=log_batch_lines,
                log_batches_per_second=log_batches_per_second,
                phases=phases,
                search=search,
                samples=samples,
                workdir=data,
                timeout=sum(p["seconds"] for p in phases) + (900 if search else 120),
            )
            if profiler is not None:
                stop_recording(profiler)
                profiler = None
            after = heartbeat_events(data / "shelby.db")
            done = next(m for m in messages if m["event"] == "done")
            acked: dict[str, int] = done["acked_lines"]
            read_back, problems = verify_logs(port, acked, setup.jobs, ADMIN)
        finally:
            if profiler is not None:
                stop_recording(profiler)
            stop(server)
    return FleetRun(
        setup,
        samples,
        messages,
        after - before,
        done["answered_heartbeats"],
        read_back,
        sum(acked.values()),
        problems,
    )


# --- checking what the server kept -------------------------------------------------------


def heartbeat_events(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(
            conn.execute("SELECT count(*) FROM events WHERE type = 'NodeHeartbeat'").fetchone()[0]
        )


def verify_logs(
    port: int, acked: dict[str, int], jobs: list[list[Any]], admin: str
) -> tuple[int, list[str]]:
    """Read every job's log back: each acknowledged line there exactly once, in order,
    with the text that was sent. Returns the lines read and what was wrong.

    The attempt is named: once the generator stops, the nodes fall silent and their
    leases may expire while this reads, which starts the jobs' next attempts."""
    attempts = {job[0]: job[3] for job in jobs}
    import httpx

    problems: list[str] = []
    total = 0
    with httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {admin}"},
        timeout=30,
    ) as c:
        for job_id, expected in acked.items():
            got: list[dict[str, Any]] = []
            after = -1
            while True:
                r = c.get(
                    f"/api/frontend/logs/{job_id}",
                    params={"after": after, "limit": 10000, "attempt": attempts[job_id]},
                )
                r.raise_for_status()
                page = r.json()["logs"]
                if not page:
                    break
                got.extend(page)
                after = page[-1]["offset"]
            total += len(got)
            offsets = [line["offset"] for line in got]
            if offsets != list(range(expected)):
                problems.append(f"{job_id}: {len(got)} lines stored, {expected} acknowledged")
            elif any(line["line"] != line_text(job_id, line["offset"]) for line in got):
                problems.append(f"{job_id}: a stored line differs from the one sent")
    return total, problems


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--generate":
        generate(sys.argv[2])

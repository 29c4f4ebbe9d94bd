"""Heartbeats per second through the real server against a bare Starlette endpoint.

Shelby: ``shelby serve`` (a subprocess, SQLite on local disk, synchronous=FULL), every
heartbeat authenticated by its node token, rate-limited (with a limit too high to
refuse anything, so its cost is counted), decoded with msgspec, appended as its own
``NodeHeartbeat`` event with the hash chain and projections, and answered only once
durable. Baseline: a bare Starlette app on the same uvicorn settings (uvloop,
httptools, no access log) whose one endpoint decodes the same body with the same
msgspec type and returns the same answer, storing nothing.

The load generator is a separate process: raw asyncio HTTP/1.1 keep-alive
connections, one per simulated node, each sending its next heartbeat as soon as the
last is answered. Both servers are measured in the same run, alternately.

    python -m bench heartbeats      # or: python bench/bench_heartbeats.py [--quick]
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# The bench folder itself, also when this file runs as a script (its load and
# baseline server run as subprocesses of it).
sys.path.insert(0, str(Path(__file__).parent))

from _servers import JOIN, free_port, start_shelby, stop, wait_ready

# High enough never to refuse, so the limiter's cost is measured, not its 429s.
RATE_LIMIT = "1000000/second"
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
TARGET_RATIO = 0.6


# --- the bare baseline server ------------------------------------------------------------


def serve_bare(port: int) -> None:
    """The baseline: decode the heartbeat with msgspec, answer, store nothing."""
    import msgspec
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from shelby.api.schemas import HeartbeatRequest, HeartbeatResponse

    decoder = msgspec.json.Decoder(HeartbeatRequest)
    encoder = msgspec.json.Encoder()

    async def heartbeat(request: Request) -> Response:
        body = decoder.decode(await request.body())
        answer = HeartbeatResponse(ok=bool(body.node_id), cancel_jobs=[])
        return Response(encoder.encode(answer), media_type="application/json")

    async def health(request: Request) -> Response:
        return Response(b'{"status":"healthy"}', media_type="application/json")

    app = Starlette(
        routes=[
            Route("/api/nodes/heartbeat", heartbeat, methods=["POST"]),
            Route("/api/frontend/system/health", health, methods=["GET"]),
        ]
    )
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        server_header=False,
        log_level="warning",
    )


# --- the load generator (its own process) ------------------------------------------------


async def _connection(
    port: int, request: bytes, until: float, latencies: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


def _heartbeat_request(node_id: str, token: str) -> bytes:
    body = json.dumps(
        {
            "nodeId": node_id,
            "specs": {"cpuUsage": 45.2, "ramUsage": 60.1},
            "runningJobs": [],
        },
        separators=(",", ":"),
    ).encode()
    return (
        b"POST /api/nodes/heartbeat HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


async def _load(port: int, nodes: list[tuple[str, str]], seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    until = started + seconds
    await asyncio.gather(
        *(_connection(port, _heartbeat_request(n, t), until, latencies, errors) for n, t in nodes)
    )
    elapsed = time.perf_counter() - started
    return {
        "count": len(latencies),
        "errors": len(errors),
        "seconds": elapsed,
        "latencies": latencies,
    }


def run_load(port: int, nodes_file: str, seconds: float) -> None:
    nodes = [tuple(x) for x in json.loads(Path(nodes_file).read_text())]
    try:
        import uvloop

        result = uvloop.run(_load(port, nodes, seconds))  # type: ignore[arg-type]
    except ImportError:
        result = asyncio.run(_load(port, nodes, seconds))  # type: ignore[arg-type]
    lat = sorted(result.pop("latencies"))
    result["p50_ms"] = 1000 * lat[len(lat) // 2] if lat else float("nan")
    result["p99_ms"] = 1000 * lat[int(len(lat) * 0.99)] if lat else float("nan")
    print(json.dumps(result))


# --- orchestration ----------------------------------------------------------------------


def start_bare(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-bare", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_ready(port, proc)
    return proc


def register_nodes(port: int, n: int, prefix: str = "bench") -> list[tuple[str, str]]:
    import httpx

    nodes = []
    with httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {JOIN}"}
    ) as c:
        for i in range(n):
            r = c.post(
                "/api/nodes/register",
                json={
                    "nodeId": f"{prefix}-{i}",
                    "name": f"{prefix}-{i}",
                    "specs": {"cpuCount": 8, "totalRAM_GB": 32.0},
                },
            )
            r.raise_for_status()
            nodes.append((r.json()["nodeId"], r.json()["token"]))
    return nodes


def _cpu(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def measure(port: int, nodes_file: Path, seconds: float, pid: int | None = None) -> dict[str, Any]:
    cpu_before = _cpu(pid) if pid else 0.0
    out = subprocess.run(
        [sys.executable, __file__, "--load", str(port), str(nodes_file), str(seconds)],
        capture_output=True,
        check=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    result["rate"] = result["count"] / result["seconds"]
    if pid:
        result["cpu_us"] = 1e6 * (_cpu(pid) - cpu_before) / max(result["count"], 1)
    return result


def _round(
    shelby_port: int,
    bare_port: int,
    nodes_file: Path,
    seconds: float,
    shelby_pid: int,
    bare_pid: int,
    rounds: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    real, base = [], []
    for _ in range(rounds):  # alternate, so that a noisy neighbour hits both alike
        real.append(measure(shelby_port, nodes_file, seconds, shelby_pid))
        base.append(measure(bare_port, nodes_file, seconds, bare_pid))
    return real, base


def _report(label: str, rows: list[dict[str, Any]]) -> str:
    return (
        f"  {label:<46}{statistics.median(r['rate'] for r in rows):8,.0f} /s"
        f"  p50 {statistics.median(r['p50_ms'] for r in rows):6.2f} ms"
        f"  p99 {statistics.median(r['p99_ms'] for r in rows):6.2f} ms"
        f"  server CPU {statistics.median(r['cpu_us'] for r in rows):4.0f} us/req"
        f"  errors {sum(r['errors'] for r in rows)}"
    )


def main(quick: bool = False) -> None:
    seconds = 3.0 if quick else 6.0
    rounds = 1 if quick else 3
    fleets = [CONNECTIONS] if quick or "BENCH_CONNECTIONS" in os.environ else [32, 128]
    with tempfile.TemporaryDirectory(prefix="shelby-bench-") as tmp:
        data = Path(tmp)
        shelby_port, bare_port = free_port(), free_port()
        shelby = start_shelby(data / "shelby.db", shelby_port, rate_limit=RATE_LIMIT)
        bare = start_bare(bare_port)
        try:
            all_nodes = register_nodes(shelby_port, max(fleets))
            db = sqlite3.connect(data / "shelby.db")
            for fleet in fleets:
                nodes_file = data / f"nodes-{fleet}.json"
                nodes_file.write_text(json.dumps(all_nodes[:fleet]))
                measure(shelby_port, nodes_file, 1.0)  # warm-up, both
                measure(bare_port, nodes_file, 1.0)
                before = db.execute(
                    "SELECT count(*) FROM events WHERE type = 'NodeHeartbeat'"
                ).fetchone()[0]
                real, base = _round(
                    shelby_port, bare_port, nodes_file, seconds, shelby.pid, bare.pid, rounds
                )
                after = db.execute(
                    "SELECT count(*) FROM events WHERE type = 'NodeHeartbeat'"
                ).fetchone()[0]
                answered = sum(r["count"] - r["errors"] for r in real)
                ratio = statistics.median(r["rate"] for r in real) / statistics.median(
                    r["rate"] for r in base
                )
                print(
                    f"heartbeats: {fleet} nodes on keep-alive connections,"
                    f" {seconds:.0f} s x {rounds} alternating rounds"
                )
                print(_report("shelby serve (durable NodeHeartbeat events)", real))
                print(_report("bare Starlette + msgspec (baseline)", base))
                print(
                    f"  ratio {ratio:.2f} (target >= {TARGET_RATIO});"
                    f" {after - before:,} events appended for {answered:,} answered heartbeats"
                )
            db.close()
        finally:
            stop(shelby)
            stop(bare)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--serve-bare":
        serve_bare(int(sys.argv[2]))
    elif len(sys.argv) >= 5 and sys.argv[1] == "--load":
        run_load(int(sys.argv[2]), sys.argv[3], float(sys.argv[4]))
    else:
        main(quick="--quick" in sys.argv)

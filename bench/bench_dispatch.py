"""Jobs dispatched per second: 20 simulated agents poll, ack and finish through the
real server until the queue is empty.

Shelby: ``shelby serve`` (a subprocess, SQLite), jobs created and scripted beforehand;
each agent is a keep-alive HTTP/1.1 connection in a separate load process that polls
(``wait=0``), acks and finishes (three durable appends' worth of requests a job, each
assignment through the expected-version check). Baseline: the bare Starlette app of
``bench_heartbeats`` extended with canned poll/ack/finish answers decoded and encoded
with the same msgspec types, storing nothing: the HTTP stack's ceiling for the same
three requests per job, measured in the same run.

    python -m bench dispatch        # or: python bench/bench_dispatch.py [--quick]
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _servers import ADMIN, free_port, start_shelby, stop, wait_ready
from bench_heartbeats import RATE_LIMIT, register_nodes

AGENTS = 20
MODEL_HASH = "sha256:" + "ab" * 32


# --- the bare baseline server ------------------------------------------------------------


def serve_bare(port: int) -> None:
    import msgspec
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from shelby.api.schemas import (
        AckRequest,
        AckResponse,
        FinishRequest,
        FinishResponse,
        PollQuery,
        PollResponse,
    )
    from shelby.scheduler import Assigned

    encoder = msgspec.json.Encoder()
    ack_decoder = msgspec.json.Decoder(AckRequest)
    finish_decoder = msgspec.json.Decoder(FinishRequest)
    counter = iter(range(1, 1 << 62))

    async def poll(request: Request) -> Response:
        q = msgspec.convert(dict(request.query_params), PollQuery, strict=False)
        job = Assigned(
            job_id=f"bare-{next(counter)}-{q.node_id}",
            dataset_name="d",
            dataset_url=None,
            dataset_hash=None,
            runtime_minutes_estimate=None,
            meta={},
            attempt=1,
            entrypoint="train.py",
            script_hash="sha256:" + "0" * 64,
            timeout_minutes=60.0,
        )
        return Response(encoder.encode(PollResponse(job=job)), media_type="application/json")

    async def ack(request: Request) -> Response:
        body = ack_decoder.decode(await request.body())
        answer = AckResponse(
            job_id=body.job_id, status="running", started_at=time.time(), attempt=1
        )
        return Response(encoder.encode(answer), media_type="application/json")

    async def finish(request: Request) -> Response:
        body = finish_decoder.decode(await request.body())
        answer = FinishResponse(job_id=body.job_id, status=body.status)
        return Response(encoder.encode(answer), media_type="application/json")

    async def health(request: Request) -> Response:
        return Response(b'{"status":"healthy"}', media_type="application/json")

    app = Starlette(
        routes=[
            Route("/api/jobs/poll", poll, methods=["GET"]),
            Route("/api/jobs/ack", ack, methods=["POST"]),
            Route("/api/jobs/finish", finish, methods=["POST"]),
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


# --- the agents (their own process) ------------------------------------------------------


class _Conn:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: str
    ) -> None:
        self.reader, self.writer, self.token = reader, writer, token

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        self.writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {self.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        data = await self.reader.readexactly(length)
        return int(head[9:12]), json.loads(data)


async def _agent(
    port: int,
    node_id: str,
    token: str,
    limit: int | None,
    done: list[str],
    latencies: list[float],
    errors: list[int],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = _Conn(reader, writer, token)
    try:
        while limit is None or len(done) < limit:
            started = time.perf_counter()
            status, body = await conn.request("GET", f"/api/jobs/poll?nodeId={node_id}")
            if status != 200:
                errors.append(status)
                continue
            job = body["job"]
            if job is None:
                return
            job_id, attempt = job["jobId"], job["attempt"]
            s1, _ = await conn.request(
                "POST", "/api/jobs/ack", {"jobId": job_id, "nodeId": node_id, "attempt": attempt}
            )
            s2, _ = await conn.request(
                "POST",
                "/api/jobs/finish",
                {
                    "jobId": job_id,
                    "nodeId": node_id,
                    "attempt": attempt,
                    "status": "finished",
                    "modelHash": MODEL_HASH,
                    "exitCode": 0,
                },
            )
            if (s1, s2) != (200, 200):
                errors.append(max(s1, s2))
                continue
            latencies.append(time.perf_counter() - started)
            done.append(job_id)
    finally:
        writer.close()


async def _agents(port: int, nodes: list[tuple[str, str]], limit: int | None) -> dict[str, Any]:
    done: list[str] = []
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    await asyncio.gather(*(_agent(port, n, t, limit, done, latencies, errors) for n, t in nodes))
    elapsed = time.perf_counter() - started
    lat = sorted(latencies)
    return {
        "jobs": len(done),
        "unique": len(set(done)),
        "errors": len(errors),
        "seconds": elapsed,
        "p50_ms": 1000 * lat[len(lat) // 2] if lat else float("nan"),
        "p99_ms": 1000 * lat[int(len(lat) * 0.99)] if lat else float("nan"),
    }


def run_agents(port: int, nodes_file: str, limit: int) -> None:
    nodes = [tuple(x) for x in json.loads(Path(nodes_file).read_text())]
    import uvloop

    print(json.dumps(uvloop.run(_agents(port, nodes, limit or None))))  # type: ignore[arg-type]


# --- orchestration ----------------------------------------------------------------------


def _create_jobs(port: int, n: int, prefix: str) -> None:
    import httpx

    with httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {ADMIN}"}
    ) as c:
        for i in range(n):
            job_id = f"{prefix}-{i:05}"
            c.post("/api/jobs/create", json={"jobId": job_id}).raise_for_status()
            c.post(
                "/api/jobs/upload-script", json={"jobId": job_id, "script": "print(1)"}
            ).raise_for_status()


def _measure(port: int, nodes_file: Path, limit: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--agents", str(port), str(nodes_file), str(limit)],
        capture_output=True,
        check=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    result["rate"] = result["jobs"] / result["seconds"]
    return result


def main(quick: bool = False) -> None:
    jobs = 200 if quick else 1000
    rounds = 1 if quick else 2
    with tempfile.TemporaryDirectory(prefix="shelby-bench-") as tmp:
        data = Path(tmp)
        shelby_port, bare_port = free_port(), free_port()
        shelby = start_shelby(data / "shelby.db", shelby_port, rate_limit=RATE_LIMIT)
        bare = subprocess.Popen(
            [sys.executable, __file__, "--serve-bare", str(bare_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_ready(bare_port, bare)
            nodes = register_nodes(shelby_port, AGENTS, prefix="agent")
            nodes_file = data / "agents.json"
            nodes_file.write_text(json.dumps(nodes))
            real, base = [], []
            for r in range(rounds):
                _create_jobs(shelby_port, jobs, f"r{r}")
                real.append(_measure(shelby_port, nodes_file, 0))
                base.append(_measure(bare_port, nodes_file, jobs))
        finally:
            stop(shelby)
            stop(bare)
    rate = statistics.median(r["rate"] for r in real)
    bare_rate = statistics.median(r["rate"] for r in base)
    print(f"dispatch: {AGENTS} agents, {jobs} jobs x {rounds} rounds, poll + ack + finish a job")
    for label, rows, value in (
        ("shelby serve", real, rate),
        ("bare Starlette (baseline)", base, bare_rate),
    ):
        print(
            f"  {label:<28}{value:8,.0f} jobs/s"
            f"  p50 {statistics.median(r['p50_ms'] for r in rows):6.2f} ms"
            f"  p99 {statistics.median(r['p99_ms'] for r in rows):6.2f} ms a job"
            f"  errors {sum(r['errors'] for r in rows)}"
        )
    dispatched = sum(r["jobs"] for r in real)
    unique = sum(r["unique"] for r in real)
    print(
        f"  ratio {rate / bare_rate:.2f};"
        f" {dispatched} jobs finished, {unique} distinct (each dispatched once: "
        f"{dispatched == unique == jobs * rounds})"
    )


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--serve-bare":
        serve_bare(int(sys.argv[2]))
    elif len(sys.argv) >= 5 and sys.argv[1] == "--agents":
        run_agents(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    else:
        main(quick="--quick" in sys.argv or os.environ.get("BENCH_QUICK") == "1")

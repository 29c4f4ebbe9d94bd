"""Log fan-out: from a ``stream-log`` POST to the line arriving at every websocket
subscriber of that job's log, and the server's CPU for it.

A real ``shelby serve`` (a subprocess, SQLite, synchronous=FULL) and, in this process,
one agent posting single-line batches and N websocket clients on
``/ws/jobs/{id}/logs`` (permessage-deflate on, as browsers negotiate it). Each line is
posted only once every subscriber has the previous one, so the figures are latencies,
not queueing. The server's CPU (user + system, psutil on its process) is read around
the measured lines.

Baselines, in the same run: 0 subscribers (the POST's own round trip and the append's
CPU) and 1 subscriber; the ratios compare 100 subscribers with 1.

    python -m bench ws_fanout       # or: python bench/bench_ws_fanout.py [--quick]
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import httpx
import psutil

from _servers import ADMIN, JOIN, free_port, start_shelby, stop

SUBSCRIBERS = 100


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


class _Setup:
    """One node that may hold several jobs, and a running job per measurement."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.admin = httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30
        )
        self.node: httpx.AsyncClient | None = None
        self.node_id = ""

    async def register(self) -> None:
        async with httpx.AsyncClient(base_url=self.base, timeout=30) as c:
            r = await c.post(
                "/api/nodes/register",
                headers={"Authorization": f"Bearer {JOIN}"},
                json={"name": "bench", "specs": {"cpuCount": 2}, "maxConcurrentJobs": 10},
            )
            r.raise_for_status()
        body = r.json()
        self.node_id = body["nodeId"]
        self.node = httpx.AsyncClient(
            base_url=self.base, headers={"Authorization": f"Bearer {body['token']}"}, timeout=30
        )

    async def running_job(self, job_id: str) -> None:
        assert self.node is not None
        (await self.admin.post("/api/jobs/create", json={"jobId": job_id})).raise_for_status()
        r = await self.admin.post(
            "/api/jobs/upload-script", json={"jobId": job_id, "script": "print(1)"}
        )
        r.raise_for_status()
        r = await self.node.get("/api/jobs/poll", params={"nodeId": self.node_id})
        assert r.json()["job"]["jobId"] == job_id, r.text
        r = await self.node.post(
            "/api/jobs/ack", json={"jobId": job_id, "nodeId": self.node_id, "attempt": 1}
        )
        r.raise_for_status()

    async def post_line(self, job_id: str, offset: int) -> None:
        assert self.node is not None
        r = await self.node.post(
            "/api/jobs/stream-log",
            json={
                "jobId": job_id,
                "nodeId": self.node_id,
                "attempt": 1,
                "offset": offset,
                "lines": [{"line": f"step {offset} loss=0.{offset:04d}", "timestamp": time.time()}],
            },
        )
        r.raise_for_status()

    async def close(self) -> None:
        await self.admin.aclose()
        if self.node is not None:
            await self.node.aclose()


async def _measure(
    setup: _Setup,
    server: psutil.Process,
    port: int,
    job_id: str,
    subscribers: int,
    lines: int,
    warmup: int,
    *,
    deflate: bool = True,
) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    await setup.running_job(job_id)
    total = warmup + lines
    sent_at: list[float] = [0.0] * total
    latencies: list[float] = []
    counts = [0] * total
    done = [asyncio.Event() for _ in range(total)]
    url = f"ws://127.0.0.1:{port}/ws/jobs/{job_id}/logs?token={ADMIN}"

    async def subscriber(ready: asyncio.Event) -> None:
        async with connect(url, max_size=None, compression="deflate" if deflate else None) as ws:
            ready.set()
            async for raw in ws:
                now = time.perf_counter()
                message = json.loads(raw)
                for ln in message.get("lines", ()):
                    offset = ln["offset"]
                    if offset >= warmup:
                        latencies.append(now - sent_at[offset])
                    counts[offset] += 1
                    if counts[offset] == subscribers:
                        done[offset].set()
                    if offset == total - 1:
                        return

    readies = [asyncio.Event() for _ in range(subscribers)]
    tasks = [asyncio.create_task(subscriber(r)) for r in readies]
    for r in readies:
        await asyncio.wait_for(r.wait(), 30)
    # Every socket is registered with the hub once its first message (the status) arrived.
    await asyncio.sleep(0.5)

    posts: list[float] = []
    cpu_before = None
    started = 0.0
    for offset in range(total):
        if offset == warmup:
            cpu_before = server.cpu_times()
            started = time.perf_counter()
        sent_at[offset] = time.perf_counter()
        await setup.post_line(job_id, offset)
        if offset >= warmup:
            posts.append(time.perf_counter() - sent_at[offset])
        if subscribers:
            await asyncio.wait_for(done[offset].wait(), 30)
    elapsed = time.perf_counter() - started
    cpu_after = server.cpu_times()
    assert cpu_before is not None
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    await asyncio.gather(*tasks)
    return {
        "subscribers": subscribers,
        "deflate": deflate,
        "lines": lines,
        "p50_ms": 1000 * _pct(latencies or posts, 0.50),
        "p99_ms": 1000 * _pct(latencies or posts, 0.99),
        "post_p50_ms": 1000 * _pct(posts, 0.50),
        "cpu_ms_per_1000_lines": 1000 * cpu / lines * 1000,
        "cpu_us_per_delivery": 1e6 * cpu / (lines * max(1, subscribers)),
        "lines_per_s": lines / elapsed,
    }


async def _run(quick: bool) -> list[dict[str, Any]]:
    lines = 200 if quick else 1000
    warmup = 20 if quick else 50
    with tempfile.TemporaryDirectory(prefix="bench-ws-") as tmp:
        port = free_port()
        proc = start_shelby(Path(tmp) / "shelby.db", port, lease_seconds=600)
        try:
            server = psutil.Process(proc.pid)
            setup = _Setup(f"http://127.0.0.1:{port}")
            await setup.register()
            results = []
            for i, n in enumerate((0, 1, SUBSCRIBERS)):
                results.append(await _measure(setup, server, port, f"bench-{i}", n, lines, warmup))
            # What permessage-deflate, negotiated per client, costs the server.
            results.append(
                await _measure(
                    setup, server, port, "bench-raw", SUBSCRIBERS, lines, warmup, deflate=False
                )
            )
            await setup.close()
            return results
        finally:
            stop(proc)


def main(quick: bool = False) -> None:
    try:
        import uvloop

        results = uvloop.run(_run(quick))
    except ImportError:
        results = asyncio.run(_run(quick))
    print("ws_fanout: stream-log POST -> line at every /ws/jobs/{id}/logs subscriber")
    print(
        f"{'subscribers':>11} {'deflate':>8} {'p50 ms':>8} {'p99 ms':>8} {'POST p50':>9} "
        f"{'server CPU ms/1000 lines':>25} {'CPU us/delivery':>16}"
    )
    for r in results:
        print(
            f"{r['subscribers']:>11} {'on' if r['deflate'] else 'off':>8} "
            f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
            f"{r['post_p50_ms']:>9.2f} {r['cpu_ms_per_1000_lines']:>25.1f} "
            f"{r['cpu_us_per_delivery']:>16.1f}"
        )
    none, one, many, raw = results
    print(
        f"baseline (1 subscriber) vs {many['subscribers']}: "
        f"p50 x{many['p50_ms'] / one['p50_ms']:.2f}, p99 x{many['p99_ms'] / one['p99_ms']:.2f}, "
        f"server CPU x{many['cpu_ms_per_1000_lines'] / one['cpu_ms_per_1000_lines']:.2f}"
    )
    fan_cpu = many["cpu_ms_per_1000_lines"] - none["cpu_ms_per_1000_lines"]
    print(
        f"fan-out's own server CPU (100 subscribers less 0): {fan_cpu:.0f} ms per 1,000 lines, "
        f"{fan_cpu / many['subscribers']:.1f} us per line per subscriber"
    )
    raw_cpu = raw["cpu_ms_per_1000_lines"] - none["cpu_ms_per_1000_lines"]
    print(
        f"the same without permessage-deflate: {raw_cpu:.0f} ms per 1,000 lines "
        f"(x{raw_cpu / fan_cpu:.2f}), p50 {raw['p50_ms']:.2f} ms, p99 {raw['p99_ms']:.2f} ms"
    )
    print("(the 0-subscriber row is the append alone: its p50/p99 are the POST round trip)")


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)

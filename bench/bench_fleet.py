"""Fleet (issue 9.5): 1,000 nodes heartbeating every 10 s and 50 running jobs streaming
logs, for 2 minutes against one ``shelby serve``; then the heartbeat rate is raised
step by step until p99 passes 100 ms, to find the largest load the server holds.

The server runs as in production (SQLite, ``synchronous=FULL``, request log on, rate
limiting on at a limit no agent reaches), with a 30 s lease, so that it asks for a
heartbeat every 10 s. 1,000 nodes register, 50 jobs are created and the first 50
nodes poll and ack one each; each job then prints 20 lines a second, shipped as a
5-line batch every 250 ms at the offset the server expects. The generator is its own
process (see ``_fleet``), open-loop, latencies from the scheduled send time.

The step search doubles the heartbeat rate (x2, x4, … of the fleet's 100/s, each step
10 s, the log streams unchanged beside it) until a step's p99 passes 100 ms or a
request fails, then tries the geometric middle once. Between steps 4 s at the fleet's
own rate let a backlog drain, so that one step's queue is not the next step's latency.

``BENCH_PROFILE=FILE`` also runs ``py-spy`` on the server for the whole run and writes
its raw stacks to FILE and a summary by module beside the figures (see ``_profile``).

    python -m bench fleet           # or: python bench/bench_fleet.py [--quick]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _fleet import run_fleet
from _profile import summarize
from shelby.settings import heartbeat_interval

NODES = 1000
JOBS = 50
LEASE = 30.0  # the server then asks for a heartbeat every 10 s
LINES_PER_SECOND = 20
BATCH = 5
RATE_LIMIT = "1000/second"  # per token; the 1,000 registrations come on one join token
P99_LIMIT_MS = 100.0


def _row(step: dict[str, Any], server_cpu: float, pressure: float) -> str:
    requests = step["scheduled_heartbeats"] + step["scheduled_log_batches"]
    return (
        f"    {step['label']:<11}{step['target_hb_rate']:7,.0f} hb/s"
        f"  p50 {step['hb_p50_ms']:7.2f} ms  p99 {step['hb_p99_ms']:8.2f} ms"
        f"  max {step['hb_max_ms']:8.2f} ms  log p99 {step['log_p99_ms']:8.2f} ms"
        f"  errors {step['errors'] + step['unanswered']}"
        f"  server CPU {server_cpu:4.0f} % ({10_000 * server_cpu * step['seconds'] / requests:4.0f}"
        f" us/request)  generator {step['generator_cpu_pct']:3.0f} %"
        f" (lag p99 {step['lag_p99_ms']:5.1f} ms)  CPU pressure {pressure:3.0f} %"
    )


def main(quick: bool = False) -> None:
    seconds = 20.0 if quick else 120.0
    search = {
        "start_mult": 2,
        "max_mult": 128,
        "seconds": 4.0 if quick else 10.0,
        "cooldown": 2.0 if quick else 4.0,
        "p99_limit_ms": P99_LIMIT_MS,
        "refine": 0 if quick else 1,
    }
    interval = heartbeat_interval(LEASE)
    batches_per_second = LINES_PER_SECOND / BATCH
    profile_to = os.environ.get("BENCH_PROFILE")
    run = run_fleet(
        nodes=NODES,
        jobs=JOBS,
        lease=LEASE,
        rate_limit=RATE_LIMIT,
        log_batch_lines=BATCH,
        log_batches_per_second=batches_per_second,
        phases=[{"label": "fleet", "mult": 1, "seconds": seconds}],
        search=search,
        profile_to=Path(profile_to) if profile_to else None,
    )
    samples = run.samples
    phases = run.phases()
    steady = next(p for p in phases if p["label"] == "fleet")
    steps = [p for p in phases if p["label"].startswith("x")]
    found = run.event("search")
    server_cpu = samples.cpu_pct("phase_start:fleet#1", "phase_end:fleet#1")
    rss = [r / 2**20 for _, r in samples.rss]
    steady_host = samples.host_cpu[1 : int(seconds)]
    host = sum(steady_host) / max(len(steady_host), 1)
    requests = steady["scheduled_heartbeats"] + steady["scheduled_log_batches"]
    log_rate = JOBS * batches_per_second

    print(
        f"fleet: {NODES:,} nodes heartbeating every {interval:g} s ({NODES / interval:,.0f}/s)"
        f" + {JOBS} running jobs x {LINES_PER_SECOND} lines/s ({BATCH}-line batches every"
        f" {1000 / batches_per_second:.0f} ms, {log_rate:,.0f} requests/s), {seconds:.0f} s,"
        f" one shelby serve (SQLite, lease {LEASE:g} s, rate limit {RATE_LIMIT} a token);"
        f" set up in {run.setup.seconds:.1f} s"
    )
    print(
        f"  sustained   {steady['scheduled_heartbeats']:,} heartbeats +"
        f" {steady['scheduled_log_batches']:,} log batches in {steady['seconds']:.1f} s"
        f" ({requests / steady['seconds']:,.0f}/s); errors"
        f" {steady['errors'] + steady['unanswered']};"
        f" {steady['connects'] / steady['seconds']:,.0f} new connections/s"
    )
    for sample in steady["error_samples"]:
        print(f"    error: {sample}")
    print(
        f"  heartbeat   p50 {steady['hb_p50_ms']:6.2f} ms  p99 {steady['hb_p99_ms']:6.2f} ms"
        f"  max {steady['hb_max_ms']:7.2f} ms  (from the scheduled send time);"
        f" log append p50 {steady['log_p50_ms']:.2f} ms  p99 {steady['log_p99_ms']:.2f} ms"
    )
    print(
        f"  CPU         server {server_cpu:.1f} % of a core"
        f" ({10_000 * server_cpu * steady['seconds'] / requests:.0f} us a request); generator"
        f" {steady['generator_cpu_pct']:.1f} % (its loop lag p99 {steady['lag_p99_ms']:.1f} ms);"
        f" whole machine (both cores, other work included) {host:.0f} %;"
        f" CPU pressure {samples.pressure_pct('phase_start:fleet#1', 'phase_end:fleet#1'):.0f} %"
        " (time some task waited for a core)"
    )
    print(
        f"  server RSS  start {rss[0]:.1f} MiB, end {rss[-1]:.1f} MiB, max {max(rss):.1f} MiB"
        " (over the whole run, steps included)"
    )
    print(
        f"  step load   heartbeats raised step by step ({search['seconds']:g} s each,"
        f" {search['cooldown']:g} s at x1 between), {log_rate:,.0f} log requests/s beside them:"
    )
    for step in steps:
        mark = f"{step['label']}#1"
        edges = (f"phase_start:{mark}", f"phase_end:{mark}")
        print(_row(step, samples.cpu_pct(*edges), samples.pressure_pct(*edges)))
        for sample in step["error_samples"][:3]:
            print(f"      error: {sample}")
    held = found["held_mult"] * NODES / interval
    failed = found["failed_mult"]
    print(
        f"  largest load held (heartbeat p99 <= {P99_LIMIT_MS:g} ms, no error):"
        f" {held:,.0f} heartbeats/s (x{found['held_mult']:g}) + {log_rate:,.0f} log requests/s"
        + (
            f"; not held at {failed * NODES / interval:,.0f}/s (x{failed:g})"
            if failed is not None
            else f"; every step up to x{search['max_mult']} held"
        )
    )
    print(run.kept_line())
    if profile_to:
        print(summarize(Path(profile_to)))
    if steady["errors"] + steady["unanswered"] or not run.kept:
        raise SystemExit(1)


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)

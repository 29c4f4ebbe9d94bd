"""Load (issue 7.7): 500 nodes heartbeating every 2 s and 20 jobs streaming 200 lines/s
each, for 60 s, against one ``shelby serve``: no error, heartbeat latency, server RSS
and CPU, the server's memory flat over the run, and every log line stored exactly once.

The server runs as it would in production (SQLite with ``synchronous=FULL``, the
request log on, rate limiting on at a limit no agent reaches), with a 6 s lease so
that it tells its agents to heartbeat every 2 s. 500 nodes register, 20 jobs are
created and the first 20 nodes poll and ack one each; then the generator (its own
process, see ``_fleet``) sends 250 heartbeats/s spread evenly over the nodes (the 20
running nodes name their job, so the server checks it) and 200 log batches/s of 20
lines, each at the offset the server expects. Latencies run from the scheduled send
time. No baseline: the figures stand against the targets (no error, memory flat).

    python -m bench load            # or: python bench/bench_load.py [--quick]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _fleet import run_fleet
from shelby.settings import heartbeat_interval

NODES = 500
JOBS = 20
LEASE = 6.0  # the server then asks for a heartbeat every 2 s
LINES_PER_SECOND = 200
BATCH = 20  # lines a request: an agent ships what its script printed every 100 ms
RATE_LIMIT = "1000/second"  # per token; the 500 registrations come on one join token
FLAT_MIB = 5.0  # growth after warm-up that still counts as flat


def rss_report(
    rss: list[tuple[float, int]], warmup: float
) -> tuple[dict[str, float], list[tuple[float, float]]]:
    """Start, warm-up, end and max RSS in MiB, and the least-squares slope after warm-up."""
    mib = [(t, r / 2**20) for t, r in rss]
    after = [(t, r) for t, r in mib if t >= warmup] or mib[-1:]
    n = len(after)
    mean_t = sum(t for t, _ in after) / n
    mean_r = sum(r for _, r in after) / n
    var = sum((t - mean_t) ** 2 for t, _ in after)
    slope = 0.0 if var == 0 else sum((t - mean_t) * (r - mean_r) for t, r in after) / var
    return {
        "start": mib[0][1],
        "warm": after[0][1],
        "end": mib[-1][1],
        "max": max(r for _, r in mib),
        "slope_per_min": 60 * slope,
    }, mib


def main(quick: bool = False) -> None:
    # BENCH_SECONDS: a longer run, to see where the memory levels off.
    seconds = float(os.environ.get("BENCH_SECONDS", 10.0 if quick else 60.0))
    warmup = 3.0 if quick else 10.0
    interval = heartbeat_interval(LEASE)
    batches_per_second = LINES_PER_SECOND / BATCH
    run = run_fleet(
        nodes=NODES,
        jobs=JOBS,
        lease=LEASE,
        rate_limit=RATE_LIMIT,
        log_batch_lines=BATCH,
        log_batches_per_second=batches_per_second,
        phases=[{"label": "load", "mult": 1, "seconds": seconds}],
    )
    phase = run.event("phase")
    rss, timeline = rss_report(run.samples.rss, warmup)
    server_cpu = run.samples.cpu_pct("phase_start:load#1", "phase_end:load#1")
    host = run.samples.host_cpu[1:]
    requests = phase["scheduled_heartbeats"] + phase["scheduled_log_batches"]
    errors = phase["errors"] + phase["unanswered"]
    growth = rss["end"] - rss["warm"]
    flat = growth <= FLAT_MIB

    print(
        f"load: {NODES} nodes heartbeating every {interval:g} s"
        f" ({NODES / interval:,.0f}/s) + {JOBS} jobs x {LINES_PER_SECOND} lines/s"
        f" ({BATCH}-line batches every {1000 / batches_per_second:.0f} ms), {seconds:.0f} s,"
        f" one shelby serve (SQLite, lease {LEASE:g} s, rate limit {RATE_LIMIT} a token);"
        f" set up in {run.setup.seconds:.1f} s"
    )
    print(
        f"  requests    {phase['scheduled_heartbeats']:,} heartbeats +"
        f" {phase['scheduled_log_batches']:,} log batches in {phase['seconds']:.1f} s"
        f" ({requests / phase['seconds']:,.0f}/s); errors {errors}"
    )
    for sample in phase["error_samples"]:
        print(f"    error: {sample}")
    print(
        f"  heartbeat   p50 {phase['hb_p50_ms']:6.2f} ms  p99 {phase['hb_p99_ms']:6.2f} ms"
        f"  max {phase['hb_max_ms']:7.2f} ms  (from the scheduled send time)"
    )
    print(f"  log append  p50 {phase['log_p50_ms']:6.2f} ms  p99 {phase['log_p99_ms']:6.2f} ms")
    print(
        f"  CPU         server {server_cpu:.0f} % of a core"
        f" ({10_000 * server_cpu * phase['seconds'] / requests:.0f} us a request); generator"
        f" {phase['generator_cpu_pct']:.0f} % (its loop lag p99 {phase['lag_p99_ms']:.1f} ms);"
        f" whole machine (both cores, other work included) {sum(host) / max(len(host), 1):.0f} %;"
        f" CPU pressure {run.samples.pressure_pct('phase_start:load#1', 'phase_end:load#1'):.0f} %"
        " (time some task waited for a core)"
    )
    print(
        f"  server RSS  start {rss['start']:.1f} MiB, after {warmup:.0f} s {rss['warm']:.1f} MiB,"
        f" end {rss['end']:.1f} MiB, max {rss['max']:.1f} MiB;"
        f" slope after warm-up {rss['slope_per_min']:+.2f} MiB/min;"
        f" flat (at most {FLAT_MIB:g} MiB growth after warm-up, {growth:+.1f}):"
        f" {'met' if flat else 'NOT met'}"
    )
    print("  RSS (MiB) every 10 s: " + " ".join(f"{r:.1f}" for _, r in timeline[::10]))
    print(run.kept_line())
    if errors or not flat or not run.kept:
        raise SystemExit(1)


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)

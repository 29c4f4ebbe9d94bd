"""What the Merkle tree costs and what it buys.

1. Appends per second through the SQLite store as it is (the tree's perfect subtrees
   written in every append's transaction) against the same store with the tree turned
   off by a subclass defined here (``_insert`` without ``Frontier.extend`` and without
   the ``merkle_batches`` insert). The store has no such switch: the second figure is a
   bench-only variant, not a mode Shelby runs in. Same machine, same run, alternating.
2. Proofs at a million events: a log of valid rows (real canonical bytes and chain
   hashes, made with ``events.codec``) is bulk-inserted without tree nodes; opening the
   store extends the tree over it (``_load_tree``), and that time is reported too. Then
   roots, inclusion and consistency proofs through ``audit.proofs`` (what the HTTP
   endpoints call), against the baseline of a store without stored subtrees: reading
   every event hash and folding them (what a root would cost without the tree).

    python -m bench merkle          # or: python bench/bench_merkle.py [--quick]
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from shelby.audit import proofs
from shelby.audit.verification import leaf_hash, verify_consistency, verify_inclusion
from shelby.events.codec import GENESIS_HASH, chain_hash, encode_data, envelope_bytes
from shelby.events.merkle import Frontier
from shelby.events.sqlite import INSERT_EVENT, SQLiteEventStore, run_statements
from shelby.events.store import Projection, Recorded
from shelby.events.types import NodeHeartbeat, node_stream
from shelby.projections import all_projections


class StoreWithoutTree(SQLiteEventStore):
    """Bench only: the same store with the Merkle tree's maintenance removed."""

    def _insert(self, conn: sqlite3.Connection, recs: list[Recorded], tree: Frontier) -> None:
        conn.executemany(
            INSERT_EVENT,
            [
                (r.seq, r.stream, r.version, r.type, r.timestamp, r.data, r.prev_hash, r.hash)
                for r in recs
            ],
        )
        run_statements(conn, self._project(recs))


# --- 1. appends -------------------------------------------------------------------------


async def _appends(
    cls: type[SQLiteEventStore], path: Path, projections: Sequence[Projection], n: int
) -> float:
    """Events per second: ``writers`` concurrent callers, one heartbeat per append, each
    on its own node's stream, as heartbeats arrive in production."""
    writers = 64
    store = cls(path, list(projections))
    await store.open()
    try:

        async def writer(w: int) -> None:
            stream = node_stream(f"n{w}")
            event = NodeHeartbeat(node_id=f"n{w}", specs={"cpuUsage": 12.5, "ramUsage": 40.0})
            for version in range(n // writers):
                await store.append(stream, [event], expected_version=version, timestamp=1e9)

        started = time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(writers)))
        elapsed = time.perf_counter() - started
    finally:
        await store.close()
    return (n // writers) * writers / elapsed


def bench_appends(quick: bool) -> None:
    n = 4_096 if quick else 32_768
    rounds = 2 if quick else 3
    print(f"appends: {n} single-event appends from 64 concurrent writers, best of {rounds}")
    for label, projections in (("log only", ()), ("log + all projections", all_projections())):
        best = {"with tree": 0.0, "without tree": 0.0}
        for r in range(rounds):
            # Alternate the order so neither variant always runs on a warmer disk.
            order = [StoreWithoutTree, SQLiteEventStore]
            for cls in order if r % 2 else order[::-1]:
                with tempfile.TemporaryDirectory() as d:
                    rate = asyncio.run(_appends(cls, Path(d) / "b.db", projections, n))
                key = "with tree" if cls is SQLiteEventStore else "without tree"
                best[key] = max(best[key], rate)
        ratio = best["with tree"] / best["without tree"]
        print(
            f"  {label:24} store as is (tree maintained): {best['with tree']:9,.0f} events/s"
            f" | bench subclass, tree off (baseline): {best['without tree']:9,.0f} events/s"
            f" | ratio {ratio:.2f} ({(ratio - 1) * 100:+.1f}% events/s with the tree)"
        )


# --- 2. proofs at a million events ------------------------------------------------------


def _bulk_log(path: Path, n: int) -> None:
    """``n`` valid events (canonical bytes, chained hashes) inserted in one transaction,
    with no Merkle nodes: the store will extend the tree when it opens."""
    asyncio.run(_create_schema(path))
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    prev = GENESIS_HASH
    nodes = 1000
    versions = [0] * nodes
    batch: list[tuple[object, ...]] = []
    conn.execute("BEGIN")
    for seq in range(1, n + 1):
        w = seq % nodes
        versions[w] += 1
        stream = node_stream(f"n{w}")
        data = encode_data(NodeHeartbeat(node_id=f"n{w}", specs={"cpuUsage": seq % 100 + 0.5}))
        ts = 1_700_000_000.0 + seq / 1000
        canonical = envelope_bytes(
            seq=seq,
            stream=stream,
            version=versions[w],
            type="NodeHeartbeat",
            timestamp=ts,
            data=data,
        )
        h = chain_hash(prev, canonical)
        batch.append((seq, stream, versions[w], "NodeHeartbeat", ts, data, prev, h))
        prev = h
        if len(batch) == 50_000:
            conn.executemany(INSERT_EVENT, batch)
            batch.clear()
    conn.executemany(INSERT_EVENT, batch)
    conn.execute("COMMIT")
    conn.close()


async def _create_schema(path: Path) -> None:
    store = SQLiteEventStore(path, [])
    await store.open()
    await store.close()


def _summary(samples: list[float]) -> str:
    samples = sorted(samples)
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    mean = statistics.fmean(samples)
    return f"mean {mean * 1e3:.3f} ms, p50 {p50 * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms"


async def _proofs(path: Path, n: int, count: int) -> None:
    started = time.perf_counter()
    store = SQLiteEventStore(path, [])
    await store.open()  # extends the tree over the bulk-inserted log
    print(
        f"  opening the store extended the tree over {n:,} events in "
        f"{time.perf_counter() - started:.1f} s"
    )
    try:
        rng = random.Random(7)
        head = await proofs.tree_head(store)
        assert head.size == n

        roots = []
        for _ in range(count // 10):
            t = time.perf_counter()
            await proofs.tree_head(store, rng.randint(1, n))
            roots.append(time.perf_counter() - t)

        inclusions, verified = [], 0
        for _ in range(count):
            seq = rng.randint(1, n)
            t = time.perf_counter()
            p = await proofs.inclusion(store, seq, n)
            inclusions.append(time.perf_counter() - t)
            verified += verify_inclusion(seq - 1, n, leaf_hash(p.leaf), p.path, head.root)

        consistencies = []
        for _ in range(count):
            first = rng.randint(1, n)
            t = time.perf_counter()
            c = await proofs.consistency(store, first, n)
            consistencies.append(time.perf_counter() - t)
            verified += verify_consistency(first, n, c.first_root, c.second_root, c.path)
        assert verified == 2 * count, "a proof did not verify"

        # Baseline: a root without stored subtrees, from every event hash.
        t = time.perf_counter()
        frontier = Frontier()
        async for rows in store.iter_raw(0):
            for row in rows:
                frontier.append(bytes.fromhex(row[7]))
        baseline = time.perf_counter() - t
        assert frontier.root() == head.root
    finally:
        await store.close()

    root_mean = statistics.fmean(roots)
    print(f"  root of a random size (stored subtrees): {_summary(roots)}")
    print(
        f"  inclusion proof at size {n:,}: {_summary(inclusions)}"
        f" ({1 / statistics.fmean(inclusions):,.0f} proofs/s, each verified)"
    )
    print(
        f"  consistency proof to size {n:,}: {_summary(consistencies)}"
        f" ({1 / statistics.fmean(consistencies):,.0f} proofs/s, each verified)"
    )
    print(
        f"  baseline, root without stored subtrees (read and fold all {n:,} hashes):"
        f" {baseline:.2f} s | ratio {baseline / root_mean:,.0f}x slower than stored subtrees"
    )


def bench_proofs(quick: bool) -> None:
    n = 100_000 if quick else 1_000_000
    count = 200 if quick else 1_000
    print(f"proofs: a log of {n:,} events, {count} random proofs of each kind")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as d:
        path = Path(d) / "big.db"
        t = time.perf_counter()
        _bulk_log(path, n)
        print(f"  bulk-inserted {n:,} valid events in {time.perf_counter() - t:.1f} s")
        size_before = path.stat().st_size
        asyncio.run(_proofs(path, n, count))
        size_after = path.stat().st_size
        print(
            f"  database file: {size_before / 2**20:,.0f} MiB before the tree,"
            f" {size_after / 2**20:,.0f} MiB after ({(size_after - size_before) / n:.0f} bytes"
            f" an event)"
        )


def main(quick: bool = False) -> None:
    bench_appends(quick)
    bench_proofs(quick)


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)

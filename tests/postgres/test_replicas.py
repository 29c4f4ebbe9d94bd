"""Several stores on one PostgreSQL database, as several replicas see it: order,
chain, subscribers, conflicts, and losing connections."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import asyncpg
import pytest

from shelby.events.merkle import Frontier, keys_for_root, root
from shelby.events.postgres import CHANNEL, PostgresEventStore
from shelby.events.store import ConcurrencyError, Recorded
from shelby.events.types import JobCreated, NodeHeartbeat, job_stream, node_stream
from shelby.events.verify import verify_store

from .conftest import StoreFactory

WRITER = Path(__file__).with_name("_writer.py")


def spawn_writer(url: str, name: str, streams: int, appends: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), url, name, str(streams), str(appends)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def written_by(proc_events: int, streams: int, appends: int) -> int:
    """Events one writer appends: alternately one and two per append."""
    return streams * sum(1 + i % 2 for i in range(appends)) * proc_events


async def finish(procs: Sequence[subprocess.Popen[str]]) -> None:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        out, _ = await asyncio.to_thread(proc.communicate, timeout=120)
        assert proc.returncode == 0 and out.strip() == "done"


def heartbeat(node: str) -> list[NodeHeartbeat]:
    return [NodeHeartbeat(node_id=node)]


async def wait_for(condition: Callable[[], bool], within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_reader_following_seq_never_sees_a_gap(pg_url: str, stores: StoreFactory) -> None:
    """Two writer processes commit at once; a reader following ``seq`` always finds the
    next seq first (nothing commits below what it has already seen), their commits
    interleave, and the chain is whole at the end."""
    streams, appends = 6, 60
    total = 2 * written_by(1, streams, appends)
    reader = await stores()
    procs = [spawn_writer(pg_url, name, streams, appends) for name in ("a", "b")]
    writing = asyncio.create_task(finish(procs))
    last, owners = 0, []
    while last < total:
        page = await reader.read_all(after=last, limit=500)
        for rec in page:
            assert rec.seq == last + 1, f"read seq {rec.seq} right after {last}"
            last = rec.seq
            owners.append(rec.stream.split("-")[1])
        if not page:
            assert not writing.done() or writing.exception() is None
            await asyncio.sleep(0.005)
    await writing
    switches = sum(1 for x, y in itertools.pairwise(owners) if x != y)
    assert switches > 10, "the two writers never committed in between each other"
    verdict = await verify_store(reader)
    assert verdict.ok and verdict.count == total
    for name in ("a", "b"):
        for k in range(streams):
            versions = [r.version for r in await reader.read_stream(node_stream(f"{name}-{k}"))]
            assert versions == list(range(1, len(versions) + 1))


async def test_subscribers_on_every_replica_hear_every_commit_in_order(
    pg_url: str, stores: StoreFactory
) -> None:
    """Listeners on two replicas each receive every event, once and in seq order,
    whichever replica (or other process) appended it."""
    one, two = await stores(), await stores()
    heard: dict[str, list[int]] = {"one": [], "two": []}
    one.subscribe(lambda recs: heard["one"].extend(r.seq for r in recs))
    two.subscribe(lambda recs: heard["two"].extend(r.seq for r in recs))
    proc = spawn_writer(pg_url, "c", 4, 30)
    from_proc = written_by(1, 4, 30)

    async def append_from(store: PostgresEventStore, name: str) -> None:
        for v in range(50):
            await store.append(node_stream(name), heartbeat(name), expected_version=v, timestamp=1)

    await asyncio.gather(append_from(one, "one"), append_from(two, "two"), finish([proc]))
    total = 100 + from_proc
    await wait_for(lambda: len(heard["one"]) >= total and len(heard["two"]) >= total)
    assert heard["one"] == list(range(1, total + 1))
    assert heard["two"] == list(range(1, total + 1))


async def test_appends_racing_across_replicas_have_one_winner(stores: StoreFactory) -> None:
    """Two replicas appending to one stream at the same version: exactly one commits
    each round, the other gets ConcurrencyError."""
    one, two = await stores(), await stores()
    stream = node_stream("n")
    for version in range(30):
        results = await asyncio.gather(
            one.append(stream, heartbeat("n"), expected_version=version, timestamp=1.0),
            two.append(stream, heartbeat("n"), expected_version=version, timestamp=1.0),
            return_exceptions=True,
        )
        assert sum(isinstance(r, list) for r in results) == 1
        assert sum(isinstance(r, ConcurrencyError) for r in results) == 1
    assert len(await one.read_stream(stream)) == 30


async def test_a_replica_reads_what_another_just_wrote(stores: StoreFactory) -> None:
    """Once one replica's append returns, another replica's projections show it."""
    one, two = await stores(), await stores()
    for i in range(20):
        job = f"j{i}"
        await one.append(job_stream(job), [JobCreated(job_id=job)], expected_version=0, timestamp=1)
        assert await two.fetchone("SELECT status FROM jobs WHERE job_id = ?", (job,)) == (
            "pending",
        )
    assert await two.fetchone("SELECT n FROM job_counts WHERE status = 'pending'") == (20,)


async def test_replicas_starting_together_make_one_schema(stores: StoreFactory) -> None:
    """Four replicas opening an empty database at once all start, on one schema."""
    replicas = await asyncio.gather(*(stores() for _ in range(4)))
    for i, store in enumerate(replicas):
        await store.append(node_stream(f"n{i}"), heartbeat("n"), expected_version=0, timestamp=1)
    assert (await replicas[0].head()).seq == 4
    positions = await replicas[3].fetchall("SELECT DISTINCT seq FROM projection_positions")
    assert positions == [(4,)]


async def test_a_lost_writer_connection_is_replaced(
    stores: StoreFactory, admin: asyncpg.Connection
) -> None:
    """When the server drops the writer's connection, the next append reconnects and
    commits; the chain stays whole."""
    store = await stores()
    await store.append(node_stream("n"), heartbeat("n"), expected_version=0, timestamp=1.0)
    pid = store._wconn.get_server_pid()  # type: ignore[union-attr]
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    await wait_for(lambda: store._wconn is None or store._wconn.is_closed())
    recs = await store.append(node_stream("n"), heartbeat("n"), expected_version=1, timestamp=2)
    assert recs[0].seq == 2
    assert (await verify_store(store)).ok


async def test_a_subscriber_catches_up_after_its_listen_connection_drops(
    stores: StoreFactory, admin: asyncpg.Connection
) -> None:
    """Events committed elsewhere while a replica's LISTEN connection was down still
    reach its listeners, in order, once it is back."""
    one, two = await stores(), await stores()
    heard: list[int] = []
    one.subscribe(lambda recs: heard.extend(r.seq for r in recs))
    pid = one._lconn.get_server_pid()  # type: ignore[union-attr]
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    for v in range(10):
        await two.append(node_stream("n"), heartbeat("n"), expected_version=v, timestamp=1.0)
    await wait_for(lambda: len(heard) >= 10)
    assert heard == list(range(1, 11))
    await two.append(node_stream("n"), heartbeat("n"), expected_version=10, timestamp=1.0)
    await wait_for(lambda: heard[-1] == 11)


async def test_rebuild_on_one_replica_while_another_appends(stores: StoreFactory) -> None:
    """A rebuild holds appends elsewhere until it commits, so the views it leaves are
    exactly the log's, appends made meanwhile included."""
    one, two = await stores(), await stores()
    for i in range(200):
        await one.append(
            job_stream(f"j{i}"), [JobCreated(job_id=f"j{i}")], expected_version=0, timestamp=1.0
        )

    async def keep_appending() -> list[Recorded]:
        done: list[Recorded] = []
        for i in range(200, 260):
            job = f"j{i}"
            done += await two.append(
                job_stream(job), [JobCreated(job_id=job)], expected_version=0, timestamp=2.0
            )
        return done

    rebuilt, appended = await asyncio.gather(one.rebuild(), keep_appending())
    assert rebuilt >= 200 and len(appended) == 60
    assert await one.fetchall("SELECT count(*) FROM jobs") == [(260,)]
    assert await two.fetchone("SELECT n FROM job_counts WHERE status = 'pending'") == (260,)
    assert (await verify_store(one)).ok


@pytest.mark.parametrize("batch", [1, 40])
async def test_the_merkle_tree_is_shared_by_replicas(stores: StoreFactory, batch: int) -> None:
    """Replicas appending in turn extend one Merkle tree: every leaf is stored once."""
    one, two = await stores(), await stores()
    for round_ in range(5):
        for store, name in ((one, "one"), (two, "two")):
            await asyncio.gather(
                *(
                    store.append(
                        node_stream(f"{name}-{round_}-{k}"),
                        heartbeat("n"),
                        expected_version=0,
                        timestamp=1.0,
                    )
                    for k in range(batch)
                )
            )
    n = 10 * batch
    assert await one.fetchall("SELECT count(*) FROM merkle_nodes WHERE level = 0") == [(n,)]
    tree = Frontier()
    for rec in await one.read_all(limit=n):
        tree.append(bytes.fromhex(rec.hash))
    nodes = await two.tree_nodes(keys_for_root(n))
    assert root(n, lambda level, index: nodes[level, index]) == tree.root()


async def test_concurrent_appends_share_a_few_transactions(
    pg_url: str, stores: StoreFactory
) -> None:
    """Group commit: two hundred concurrent appends commit in a handful of
    transactions, each announcing its last seq once to every replica."""
    store = await stores()
    heard: list[int] = []
    listener = await asyncpg.connect(pg_url)
    try:
        await listener.add_listener(CHANNEL, lambda *args: heard.append(int(args[3])))
        await asyncio.gather(
            *(
                store.append(node_stream(f"n{i}"), heartbeat("n"), expected_version=0, timestamp=1)
                for i in range(200)
            )
        )
        await wait_for(lambda: bool(heard) and heard[-1] == 200)
    finally:
        await listener.close()
    assert heard == sorted(set(heard))
    assert len(heard) <= 20, f"{len(heard)} transactions for 200 appends"

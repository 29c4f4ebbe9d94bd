"""Proofs served from a real SQLite store's Merkle nodes equal RFC 9162's definitions over
the events' hashes, and every event's hash is what the README's byte layout gives."""

from __future__ import annotations

import pytest

from shelby.audit import proofs
from shelby.audit.verification import event_hash
from shelby.events.store import EventStore
from shelby.events.types import NodeHeartbeat, node_stream

from . import rfc9162 as rfc
from .conftest import as_audit, run_job

N = 37


async def _fill(store: EventStore, n: int) -> list[bytes]:
    """``n`` events in batches of varying size, across three streams; their hashes."""
    versions: dict[str, int] = {}
    written = 0
    batch = 1
    while written < n:
        stream = node_stream(f"n{written % 3}")
        size = min(batch, n - written)
        events = [
            NodeHeartbeat(node_id=f"n{written % 3}", specs={"cpuUsage": 0.5 + i})
            for i in range(size)
        ]
        recs = await store.append(
            stream, events, expected_version=versions.get(stream, 0), timestamp=1.0 + written
        )
        versions[stream] = recs[-1].version
        written += size
        batch = batch % 4 + 1
    return [bytes.fromhex(r.hash) for r in await store.read_all(0, n + 1)]


async def test_roots_and_proofs_match_the_rfc_for_every_size(store: EventStore) -> None:
    """Each tree size's root is MTH, each event's path is PATH, each pair's proof is PROOF."""
    leaves = await _fill(store, N)
    for size in range(0, N + 1):
        head = await proofs.tree_head(store, size)
        assert head.root == rfc.mth(leaves[:size])
    for size in range(1, N + 1):
        for seq in range(1, size + 1):
            p = await proofs.inclusion(store, seq, size)
            assert p.leaf == leaves[seq - 1]
            assert p.path == rfc.path(seq - 1, leaves[:size])
            assert rfc.verify_inclusion(seq - 1, size, p.leaf, p.path, p.root)
        for first in range(0, size + 1):
            c = await proofs.consistency(store, first, size)
            assert c.path == (rfc.proof(first, leaves[:size]) if first else [])
            assert rfc.verify_consistency(first, size, c.first_root, c.second_root, c.path)


async def test_defaults_cover_the_whole_log(store: EventStore) -> None:
    """Without a tree size, proofs are against the log as it stands."""
    leaves = await _fill(store, 10)
    assert (await proofs.tree_head(store)).size == 10
    p = await proofs.inclusion(store, 3)
    assert (p.tree_size, p.root) == (10, rfc.mth(leaves))
    c = await proofs.consistency(store, 4)
    assert (c.second, c.path) == (10, rfc.proof(4, leaves))


async def test_sizes_beyond_the_log_are_refused(store: EventStore) -> None:
    """A tree bigger than the log, or an event outside the tree, is OutOfRange."""
    await _fill(store, 5)
    with pytest.raises(proofs.OutOfRange):
        await proofs.tree_head(store, 6)
    with pytest.raises(proofs.OutOfRange):
        await proofs.inclusion(store, 6)
    with pytest.raises(proofs.OutOfRange):
        await proofs.inclusion(store, 4, 3)
    with pytest.raises(proofs.OutOfRange):
        await proofs.consistency(store, 3, 6)
    with pytest.raises(proofs.OutOfRange):
        await proofs.consistency(store, 5, 4)


async def test_event_hashes_follow_the_readme_layout(store: EventStore) -> None:
    """The auditor's hash of each event (json + hashlib only) is the store's chain hash,
    floats, unicode and control characters included."""
    events = await run_job(store)
    assert events and all(event_hash(e) == e.hash for e in events)
    raw = [as_audit(r) for r in await store.read_all(0, 100)]
    assert [e.hash for e in raw if e.stream == "job-job-1"] == [e.hash for e in events]

"""Roots and proofs from the store: each one query for the O(log n) stored subtrees it
needs (``events.merkle`` says which), then a pure fold over them.

The tree always covers the whole log, and a perfect subtree once written never changes,
so any size up to the head read first can be served from nodes read afterwards.
"""

from __future__ import annotations

import msgspec

from shelby.events.merkle import (
    NodeKey,
    consistency_proof,
    inclusion_proof,
    keys_for_consistency,
    keys_for_inclusion,
    keys_for_root,
    root,
)
from shelby.events.store import ArchiveUnavailable, EventStore

__all__ = [
    "ConsistencyProof",
    "InclusionProof",
    "OutOfRange",
    "TreeHead",
    "consistency",
    "inclusion",
    "tree_head",
]


class OutOfRange(ValueError):
    """A size or position the log does not have (yet)."""


class TreeHead(msgspec.Struct, frozen=True):
    size: int
    root: bytes


class InclusionProof(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    tree_size: int
    root: bytes
    leaf: bytes  # the event's hash: the leaf's input
    path: list[bytes]

    @property
    def leaf_index(self) -> int:
        return self.seq - 1


class ConsistencyProof(msgspec.Struct, frozen=True, kw_only=True):
    first: int
    second: int
    first_root: bytes
    second_root: bytes
    path: list[bytes]


async def _lookup(store: EventStore, keys: list[NodeKey]) -> dict[NodeKey, bytes]:
    nodes = await store.tree_nodes(keys)
    missing = set(keys) - nodes.keys()
    if missing:
        # Only a store whose tree lags its log could get here; say so rather than 500.
        raise OutOfRange(f"the Merkle tree lacks {len(missing)} of the nodes it needs")
    return nodes


async def _size(store: EventStore, size: int | None) -> int:
    head = (await store.head()).seq
    if size is None:
        return head
    if size > head:
        raise OutOfRange(f"the log has {head} events, fewer than the tree size {size}")
    return size


async def tree_head(store: EventStore, size: int | None = None) -> TreeHead:
    n = await _size(store, size)
    nodes = await _lookup(store, keys_for_root(n))
    return TreeHead(n, root(n, lambda level, index: nodes[level, index]))


async def inclusion(store: EventStore, seq: int, tree_size: int | None = None) -> InclusionProof:
    """Event ``seq`` (leaf ``seq - 1``) in the tree of ``tree_size`` events (default:
    the whole log)."""
    n = await _size(store, tree_size)
    if not 1 <= seq <= n:
        raise OutOfRange(f"event {seq} is not in a tree of {n} events")
    nodes = await _lookup(store, keys_for_inclusion(seq - 1, n))

    def get(level: int, index: int) -> bytes:
        return nodes[level, index]

    return InclusionProof(
        seq=seq,
        tree_size=n,
        root=root(n, get),
        leaf=await _event_hash(store, seq),
        path=inclusion_proof(seq - 1, n, get),
    )


async def _event_hash(store: EventStore, seq: int) -> bytes:
    """From the log, or from the segment the event was archived to."""
    try:
        rows = await store.read_raw(seq - 1, 1)
    except ArchiveUnavailable as exc:
        raise OutOfRange(f"event {seq} was archived and cannot be read: {exc}") from None
    if not rows or rows[0][0] != seq:
        raise OutOfRange(f"there is no event {seq}")
    return bytes.fromhex(rows[0][7])


async def consistency(store: EventStore, first: int, second: int | None = None) -> ConsistencyProof:
    """That the tree of ``first`` events is a prefix of the tree of ``second``."""
    n = await _size(store, second)
    if not 0 <= first <= n:
        raise OutOfRange(f"no consistency proof from {first} to {n} events")
    nodes = await _lookup(store, keys_for_consistency(first, n) + keys_for_root(first))

    def get(level: int, index: int) -> bytes:
        return nodes[level, index]

    return ConsistencyProof(
        first=first,
        second=n,
        first_root=root(first, get),
        second_root=root(n, get),
        path=consistency_proof(first, n, get),
    )

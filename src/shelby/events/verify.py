"""Checking the log: every row's place, link and hash, from the first event on."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from shelby.events import merkle
from shelby.events.codec import GENESIS_HASH, chain_hash, envelope_bytes
from shelby.events.merkle import Frontier
from shelby.events.store import ArchiveUnavailable, EventStore

__all__ = ["ChainVerifier", "Problem", "Verdict", "row_problem", "verify_store"]


class Problem(msgspec.Struct, frozen=True):
    seq: int
    reason: str


class Verdict(msgspec.Struct, frozen=True):
    count: int
    head_hash: str
    problem: Problem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def row_problem(row: tuple[Any, ...]) -> str | None:
    """What is wrong with one raw row on its own: its hash must recompute from its
    ``prev_hash`` and canonical bytes."""
    seq, stream, version, type_, timestamp, data, prev_hash, hash_ = row
    try:
        canonical = envelope_bytes(
            seq=seq, stream=stream, version=version, type=type_, timestamp=timestamp, data=data
        )
    except UnicodeEncodeError:
        return "a text column is not valid UTF-8"
    try:
        computed = chain_hash(prev_hash, canonical)
    except ValueError:
        return "prev_hash is not hex"
    if computed != hash_:
        return "hash does not match the event's contents"
    return None


class ChainVerifier:
    """Feeds on raw rows ``(seq, stream, version, type, timestamp, data, prev_hash,
    hash)`` in log order and stops at the first that does not hold."""

    def __init__(self, after_seq: int = 0, after_hash: str = GENESIS_HASH) -> None:
        self.seq = after_seq
        self.hash = after_hash
        self.problem: Problem | None = None
        # The Merkle tree the rows imply, to hold against the one the store kept.
        self.tree = Frontier() if after_seq == 0 else None

    def feed(self, rows: Iterable[tuple[Any, ...]]) -> bool:
        """False once a problem is found (see ``problem``)."""
        if self.problem is not None:
            return False
        for row in rows:
            seq, prev_hash, hash_ = row[0], row[6], row[7]
            expected = self.seq + 1
            if seq != expected:
                return self._fail(expected, f"event {expected} is missing (found {seq} next)")
            if prev_hash != self.hash:
                return self._fail(seq, "prev_hash is not the hash of the event before it")
            reason = row_problem(row)
            if reason is not None:
                return self._fail(seq, reason)
            self.seq, self.hash = seq, hash_
            if self.tree is not None:
                self.tree.append(bytes.fromhex(hash_))
        return True

    def _fail(self, seq: int, reason: str) -> bool:
        self.problem = Problem(seq, reason)
        return False

    def verdict(self) -> Verdict:
        return Verdict(self.seq, self.hash, self.problem)


async def verify_store(store: EventStore, progress: Callable[[int], None] | None = None) -> Verdict:
    """The chain from the first event on (archived events read from their segments),
    then the store's Merkle tree against it.

    The chain alone cannot tell a log cut short at its end from a shorter log; the
    Merkle tree, written in the same transactions, still has the leaves of the cut
    events, and its root must be the root of exactly the events that are there.
    """
    verifier = ChainVerifier()
    # Archived rows are read from their segments; one that is gone or changed is named
    # first, rather than left to show as a break in the chain.
    problems = await store.check_archive()
    if problems:
        verifier.problem = Problem(*problems[0])
        return verifier.verdict()
    try:
        async for rows in store.iter_raw(0):
            if not verifier.feed(rows):
                break
            if progress is not None:
                progress(verifier.seq)
    except ArchiveUnavailable as exc:
        verifier.problem = Problem(verifier.seq + 1, str(exc))
    if verifier.problem is None:
        verifier.problem = await _check_tree(store, verifier)
    return verifier.verdict()


async def _check_tree(store: EventStore, verifier: ChainVerifier) -> Problem | None:
    count = verifier.seq
    assert verifier.tree is not None
    nodes = await store.tree_nodes([*merkle.keys_for_root(count), (0, count)])
    if (0, count) in nodes:
        return Problem(count + 1, f"event {count + 1} is missing: the Merkle tree has its leaf")
    try:
        stored_root = merkle.root(count, lambda level, index: nodes[(level, index)])
    except KeyError:
        return Problem(count, "the Merkle tree lacks nodes for the log's events")
    if stored_root != verifier.tree.root():
        return Problem(count, "the Merkle tree's root is not the root of the log's events")
    return None

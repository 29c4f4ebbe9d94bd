"""Checking the log: every row's place, link and hash, from the first event on."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from shelby.events.codec import GENESIS_HASH, chain_hash, envelope_bytes
from shelby.events.store import EventStore

__all__ = ["ChainVerifier", "Problem", "Verdict", "verify_store"]


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


class ChainVerifier:
    """Feeds on raw rows ``(seq, stream, version, type, timestamp, data, prev_hash,
    hash)`` in log order and stops at the first that does not hold."""

    def __init__(self, after_seq: int = 0, after_hash: str = GENESIS_HASH) -> None:
        self.seq = after_seq
        self.hash = after_hash
        self.problem: Problem | None = None

    def feed(self, rows: Iterable[tuple[Any, ...]]) -> bool:
        """False once a problem is found (see ``problem``)."""
        if self.problem is not None:
            return False
        for seq, stream, version, type_, timestamp, data, prev_hash, hash_ in rows:
            expected = self.seq + 1
            if seq != expected:
                return self._fail(expected, f"event {expected} is missing (found {seq} next)")
            if prev_hash != self.hash:
                return self._fail(seq, "prev_hash is not the hash of the event before it")
            canonical = envelope_bytes(
                seq=seq, stream=stream, version=version, type=type_, timestamp=timestamp, data=data
            )
            if chain_hash(prev_hash, canonical) != hash_:
                return self._fail(seq, "hash does not match the event's contents")
            self.seq, self.hash = seq, hash_
        return True

    def _fail(self, seq: int, reason: str) -> bool:
        self.problem = Problem(seq, reason)
        return False

    def verdict(self) -> Verdict:
        return Verdict(self.seq, self.hash, self.problem)


async def verify_store(store: EventStore, progress: Callable[[int], None] | None = None) -> Verdict:
    verifier = ChainVerifier()
    async for rows in store.iter_raw(0):
        if not verifier.feed(rows):
            break
        if progress is not None:
            progress(verifier.seq)
    return verifier.verdict()

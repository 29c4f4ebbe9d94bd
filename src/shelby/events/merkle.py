"""A Merkle tree over the log, as RFC 9162 (Certificate Transparency 2.0) defines it.

Leaf ``i`` (0-based) is event ``seq = i + 1``: its input is the 32 bytes of the event's
chain ``hash``, so anyone holding the events' hashes can check a proof without knowing
Shelby's byte layout::

    leaf hash  = SHA-256(0x00 || event hash bytes)
    node hash  = SHA-256(0x01 || left || right)

The store keeps every *perfect* subtree (``2**level`` leaves starting at
``index * 2**level``), keyed ``(level, index)``, written in the transaction that
appends its last leaf (a row each in PostgreSQL, packed a batch to a row in SQLite:
``_sqlite_tree.py``). Appending a leaf adds two subtrees on average and never revisits
old ones. Any tree size's root, and any proof, is then a fold over O(log n) of those
subtrees: ``keys_for_*`` say which a computation needs, so a caller fetches just those
and the rest is pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator

__all__ = [
    "Frontier",
    "NodeKey",
    "consistency_proof",
    "inclusion_proof",
    "keys_for_consistency",
    "keys_for_inclusion",
    "keys_for_root",
    "leaf_hash",
    "node_hash",
    "root",
]

NodeKey = tuple[int, int]  # (level, index) of a perfect subtree
Lookup = Callable[[int, int], bytes]
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class Frontier:
    """The perfect subtrees that make up the tree so far, largest first: enough to
    append the next leaf and to compute the current root, in O(log n) memory."""

    __slots__ = ("_stack", "size")

    def __init__(self, size: int = 0, stack: list[tuple[int, bytes]] | None = None) -> None:
        self.size = size
        self._stack: list[tuple[int, bytes]] = stack or []

    @classmethod
    def load(cls, size: int, lookup: Lookup) -> Frontier:
        return cls(size, [(level, lookup(level, index)) for level, index in _decompose(0, size)])

    def copy(self) -> Frontier:
        return Frontier(self.size, list(self._stack))

    def adopt(self, other: Frontier) -> None:
        """Take on ``other``'s state: a trial copy that turned out to commit."""
        self.size, self._stack = other.size, list(other._stack)

    def append(self, entry: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf; returns the perfect subtrees it completed, ``(level, index,
        hash)``, the leaf itself first."""
        index = self.size
        (leaf,), parents = self.extend([entry])
        return [(0, index, leaf)] + [
            (level, index >> level, h) for level, h in enumerate(parents, start=1)
        ]

    def extend(self, entries: Iterable[bytes]) -> tuple[list[bytes], list[bytes]]:
        """Add a leaf for each entry; returns the leaves' hashes, and the hashes of the
        subtrees above them that they completed, in the order completed (each leaf's
        lowest first). Leaf ``n`` completes one subtree for each trailing 1 bit of
        ``n``: the subtrees on top of the stack it merges with."""
        stack, size = self._stack, self.size
        leaves: list[bytes] = []
        parents: list[bytes] = []
        sha256 = hashlib.sha256
        for entry in entries:
            h = sha256(b"\x00" + entry).digest()  # leaf_hash, inlined: the append path
            leaves.append(h)
            n, level = size, 0
            while n & 1:
                h = sha256(b"\x01" + stack.pop()[1] + h).digest()  # node_hash
                parents.append(h)
                n >>= 1
                level += 1
            stack.append((level, h))
            size += 1
        self.size = size
        return leaves, parents

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        acc = self._stack[-1][1]
        for _, h in reversed(self._stack[:-1]):
            acc = node_hash(h, acc)
        return acc


def _decompose(start: int, end: int) -> Iterator[NodeKey]:
    """The perfect subtrees covering ``[start, end)`` in RFC 9162's recursion, left to
    right; ``start`` is aligned as that recursion guarantees."""
    while start < end:
        n = end - start
        k = n if n & (n - 1) == 0 else _split(n)
        level = k.bit_length() - 1
        yield (level, start >> level)
        start += k


def _subtree(start: int, end: int, lookup: Lookup) -> bytes:
    """MTH of leaves ``[start, end)``: perfect subtrees folded right to left."""
    parts = [lookup(level, index) for level, index in _decompose(start, end)]
    acc = parts[-1]
    for h in reversed(parts[:-1]):
        acc = node_hash(h, acc)
    return acc


def root(size: int, lookup: Lookup) -> bytes:
    return EMPTY_ROOT if size == 0 else _subtree(0, size, lookup)


def keys_for_root(size: int) -> list[NodeKey]:
    return list(_decompose(0, size))


def _inclusion_ranges(m: int, start: int, end: int) -> list[tuple[int, int]]:
    """RFC 9162 2.1.3.1 PATH(m, D[start:end]) as the ranges whose roots it lists,
    from the leaf upward."""
    n = end - start
    if n <= 1:
        return []
    k = _split(n)
    if m < k:
        return [*_inclusion_ranges(m, start, start + k), (start + k, end)]
    return [*_inclusion_ranges(m - k, start + k, end), (start, start + k)]


def _consistency_ranges(m: int, start: int, end: int, whole: bool) -> list[tuple[int, int]]:
    """RFC 9162 2.1.4.1 SUBPROOF(m, D[start:end], b) as ranges."""
    n = end - start
    if m == n:
        return [] if whole else [(start, end)]
    k = _split(n)
    if m <= k:
        return [*_consistency_ranges(m, start, start + k, whole), (start + k, end)]
    return [*_consistency_ranges(m - k, start + k, end, False), (start, start + k)]


def _keys(ranges: list[tuple[int, int]]) -> list[NodeKey]:
    return [key for start, end in ranges for key in _decompose(start, end)]


def keys_for_inclusion(index: int, size: int) -> list[NodeKey]:
    return _keys(_inclusion_ranges(index, 0, size)) + keys_for_root(size)


def keys_for_consistency(old: int, new: int) -> list[NodeKey]:
    ranges = _consistency_ranges(old, 0, new, True) if 0 < old < new else []
    return _keys(ranges) + keys_for_root(new)


def inclusion_proof(index: int, size: int, lookup: Lookup) -> list[bytes]:
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    return [_subtree(s, e, lookup) for s, e in _inclusion_ranges(index, 0, size)]


def consistency_proof(old: int, new: int, lookup: Lookup) -> list[bytes]:
    if not 0 <= old <= new:
        raise ValueError(f"no consistency proof from size {old} to {new}")
    if old in (0, new):
        return []
    return [_subtree(s, e, lookup) for s, e in _consistency_ranges(old, 0, new, True)]

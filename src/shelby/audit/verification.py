"""The auditor's checks, written from the specifications and not from Shelby's own code:
an event's hash from its fields (README, "Byte layout of the hash chain"), and RFC 9162's
algorithms for verifying inclusion (2.1.3.2) and consistency (2.1.4.2) proofs.

Nothing here reads a database or trusts the server: each function takes what the
server said and answers whether it holds up. ``hashlib`` and ``json`` are all it uses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import msgspec

__all__ = [
    "AuditEvent",
    "event_hash",
    "leaf_hash",
    "root_from_inclusion",
    "verify_consistency",
    "verify_inclusion",
]


class AuditEvent(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One event as ``/api/audit/log`` and ``/api/audit/jobs/{id}`` show it."""

    seq: int
    stream: str
    version: int
    type: str
    timestamp: float
    data: dict[str, Any]
    prev_hash: str
    hash: str


def event_hash(e: AuditEvent) -> str:
    """SHA-256 over the previous hash's bytes and the event's canonical JSON."""
    canonical = json.dumps(
        {
            "data": e.data,
            "seq": e.seq,
            "stream": e.stream,
            "timestamp": e.timestamp,
            "type": e.type,
            "version": e.version,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")
    return hashlib.sha256(bytes.fromhex(e.prev_hash) + canonical).hexdigest()


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion(
    leaf_index: int, tree_size: int, leaf: bytes, path: Sequence[bytes]
) -> bytes | None:
    """RFC 9162 2.1.3.2 up to its last comparison: the root that ``path`` leads to from
    the leaf hash ``leaf``, or ``None`` when the path cannot be a proof for that index
    and size."""
    if leaf_index >= tree_size or leaf_index < 0:
        return None
    fn, sn = leaf_index, tree_size - 1
    r = leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = _node(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_inclusion(
    leaf_index: int, tree_size: int, leaf: bytes, path: Sequence[bytes], root: bytes
) -> bool:
    return root_from_inclusion(leaf_index, tree_size, leaf, path) == root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2, with the two cases it leaves to the caller: equal sizes (an
    empty proof, equal roots) and an empty first tree (consistent with anything)."""
    if first < 0 or second < first:
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = _node(c, fr)
            sr = _node(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _node(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0

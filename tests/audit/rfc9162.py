"""RFC 9162 (Certificate Transparency 2.0), section 2.1, transcribed for the tests: the
Merkle Tree Hash, audit paths and consistency proofs by their recursive definitions,
and the two verification algorithms step by step. Deliberately naive and written
from the RFC's text alone; nothing here imports Shelby."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves: Sequence[bytes]) -> bytes:
    """2.1.1: MTH({}) = HASH(); MTH({d0}) = HASH(0x00 || d0);
    MTH(D[n]) = HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n]))."""
    return _mth(tuple(leaves))


@lru_cache(maxsize=100_000)
def _mth(leaves: tuple[bytes, ...]) -> bytes:
    n = len(leaves)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + leaves[0])
    k = _k(n)
    return _h(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:]))


def path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """2.1.3.1 PATH(m, D[n])."""
    n = len(leaves)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def proof(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """2.1.4.1 PROOF(m, D[n]) = SUBPROOF(m, D[n], true)."""
    return _subproof(m, leaves, True)


def _subproof(m: int, leaves: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if b else [mth(leaves)]
    k = _k(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], b), mth(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), mth(leaves[:k])]


def _lsb(x: int) -> bool:
    return x & 1 == 1


def verify_inclusion(
    leaf_index: int,
    tree_size: int,
    leaf_entry: bytes,
    inclusion_path: Sequence[bytes],
    root_hash: bytes,
) -> bool:
    """2.1.3.2, steps 1 to 5, with ``hash`` the leaf hash of ``leaf_entry``."""
    if leaf_index >= tree_size:  # 1
        return False
    fn, sn = leaf_index, tree_size - 1  # 2
    r = _h(b"\x00" + leaf_entry)  # 3
    for p in inclusion_path:  # 4
        if sn == 0:  # 4a
            return False
        if _lsb(fn) or fn == sn:  # 4b
            r = _h(b"\x01" + p + r)
            if not _lsb(fn):
                while not (_lsb(fn) or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = _h(b"\x01" + r + p)
        fn >>= 1  # 4c
        sn >>= 1
    return sn == 0 and r == root_hash  # 5


def verify_consistency(
    first: int,
    second: int,
    first_hash: bytes,
    second_hash: bytes,
    consistency_path: Sequence[bytes],
) -> bool:
    """2.1.4.2, steps 1 to 7. The RFC's algorithm is for 0 < first < second; the other
    cases follow from 2.1.4.1 (PROOF(n, D[n]) is empty) and are checked first."""
    if first == second:
        return not consistency_path and first_hash == second_hash
    if first == 0:
        return not consistency_path
    if first > second:
        return False
    c_path = list(consistency_path)
    if not c_path:  # 1
        return False
    if first & (first - 1) == 0:  # 2: first is an exact power of 2
        c_path = [first_hash, *c_path]
    fn, sn = first - 1, second - 1  # 3
    while _lsb(fn):  # 4
        fn >>= 1
        sn >>= 1
    fr = sr = c_path[0]  # 5
    for c in c_path[1:]:  # 6
        if sn == 0:
            return False
        if _lsb(fn) or fn == sn:
            fr = _h(b"\x01" + c + fr)
            sr = _h(b"\x01" + c + sr)
            if not _lsb(fn):
                while not (_lsb(fn) or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _h(b"\x01" + sr + c)
        fn >>= 1
        sn >>= 1
    return fr == first_hash and sr == second_hash and sn == 0  # 7

"""Proofs against RFC 9162 as the tests transcribe it (rfc9162.py): the lead's
incremental tree (events.merkle) must produce exactly the RFC's roots and paths, and the
auditor's verifier (audit.verification) must accept them and refuse any change."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from shelby.audit import verification as auditor
from shelby.events import merkle

from . import rfc9162 as rfc


def _leaves(n: int, salt: int = 0) -> list[bytes]:
    return [hashlib.sha256(f"{salt}:{i}".encode()).digest() for i in range(n)]


def _stored(leaves: list[bytes]) -> dict[tuple[int, int], bytes]:
    """Every perfect subtree the incremental Frontier writes, as the store keeps them."""
    frontier = merkle.Frontier()
    return {(lvl, idx): h for leaf in leaves for lvl, idx, h in frontier.append(leaf)}


@st.composite
def tree_and_leaf(draw: st.DrawFn) -> tuple[list[bytes], int]:
    n = draw(st.integers(1, 70))
    return _leaves(n, draw(st.integers(0, 3))), draw(st.integers(0, n - 1))


@st.composite
def tree_and_prefix(draw: st.DrawFn) -> tuple[list[bytes], int]:
    n = draw(st.integers(1, 70))
    return _leaves(n, draw(st.integers(0, 3))), draw(st.integers(1, n))


def _flip(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[bit // 8 % len(b)] ^= 1 << (bit % 8)
    return bytes(b)


@settings(max_examples=200)
@given(tree_and_leaf())
def test_incremental_tree_gives_the_rfc_root_and_audit_path(case: tuple[list[bytes], int]) -> None:
    """For every size and leaf, merkle.py's root and inclusion path equal MTH and PATH."""
    leaves, index = case
    nodes = _stored(leaves)

    def lookup(level: int, idx: int) -> bytes:
        return nodes[level, idx]

    n = len(leaves)
    assert merkle.root(n, lookup) == rfc.mth(leaves)
    assert merkle.inclusion_proof(index, n, lookup) == rfc.path(index, leaves)
    assert set(merkle.keys_for_inclusion(index, n)) <= nodes.keys()


@settings(max_examples=200)
@given(tree_and_prefix())
def test_incremental_tree_gives_the_rfc_consistency_proof(case: tuple[list[bytes], int]) -> None:
    """For every pair of sizes, merkle.py's consistency proof equals PROOF(m, D[n])."""
    leaves, m = case
    nodes = _stored(leaves)

    def lookup(level: int, idx: int) -> bytes:
        return nodes[level, idx]

    n = len(leaves)
    got = merkle.consistency_proof(m, n, lookup)
    assert got == rfc.proof(m, leaves)
    assert rfc.verify_consistency(m, n, rfc.mth(leaves[:m]), rfc.mth(leaves), got)


@settings(max_examples=300)
@given(tree_and_leaf(), st.integers(0, 1 << 20))
def test_inclusion_verifies_and_any_change_fails(case: tuple[list[bytes], int], bit: int) -> None:
    """The RFC's path verifies with both verifiers; a changed leaf, path node, root,
    index or size does not."""
    leaves, index = case
    n = len(leaves)
    root, leaf, p = rfc.mth(leaves), leaves[index], rfc.path(index, leaves)
    lh = auditor.leaf_hash(leaf)
    assert rfc.verify_inclusion(index, n, leaf, p, root)
    assert auditor.verify_inclusion(index, n, lh, p, root)

    bad_leaf = _flip(leaf, bit)
    assert not rfc.verify_inclusion(index, n, bad_leaf, p, root)
    assert not auditor.verify_inclusion(index, n, auditor.leaf_hash(bad_leaf), p, root)
    assert not auditor.verify_inclusion(index, n, lh, p, _flip(root, bit))
    if p:
        which = bit % len(p)
        bad_path = [*p[:which], _flip(p[which], bit), *p[which + 1 :]]
        assert not rfc.verify_inclusion(index, n, leaf, bad_path, root)
        assert not auditor.verify_inclusion(index, n, lh, bad_path, root)
        assert not auditor.verify_inclusion(index, n, lh, p[:-1], root)
    assert not auditor.verify_inclusion(index, n, lh, [*p, root], root)
    for other in {index - 1, index + 1} - {index}:
        if 0 <= other < n and leaves[other] != leaf:
            assert not auditor.verify_inclusion(other, n, lh, p, root)
    assert not auditor.verify_inclusion(n, n, lh, p, root)


@settings(max_examples=300)
@given(tree_and_prefix(), st.integers(0, 1 << 20))
def test_consistency_verifies_and_any_change_fails(case: tuple[list[bytes], int], bit: int) -> None:
    """The RFC's consistency proof verifies with both verifiers; a changed proof node or
    either root does not, nor does a proof from a tree that is not a prefix."""
    leaves, m = case
    n = len(leaves)
    old, new, p = rfc.mth(leaves[:m]), rfc.mth(leaves), rfc.proof(m, leaves)
    assert rfc.verify_consistency(m, n, old, new, p)
    assert auditor.verify_consistency(m, n, old, new, p)
    assert not auditor.verify_consistency(m, n, _flip(old, bit), new, p)
    assert not auditor.verify_consistency(m, n, old, _flip(new, bit), p)
    if p:
        which = bit % len(p)
        bad = [*p[:which], _flip(p[which], bit), *p[which + 1 :]]
        assert not rfc.verify_consistency(m, n, old, new, bad)
        assert not auditor.verify_consistency(m, n, old, new, bad)
    # A log that rewrote one of its first m leaves has a different old root.
    forked = [*leaves]
    forked[bit % m] = _flip(forked[bit % m], bit)
    assert not auditor.verify_consistency(m, n, rfc.mth(forked[:m]), new, p)
    if m < n:
        assert not auditor.verify_consistency(n, m, new, old, p)


def test_the_empty_tree_and_equal_sizes_follow_the_rfc() -> None:
    """MTH of no leaves is SHA-256 of nothing; a tree is consistent with itself by an
    empty proof, and any tree with the empty one."""
    assert merkle.root(0, lambda level, idx: b"") == hashlib.sha256(b"").digest()
    leaves = _leaves(5)
    r = rfc.mth(leaves)
    assert auditor.verify_consistency(5, 5, r, r, [])
    assert not auditor.verify_consistency(5, 5, r, rfc.mth(leaves[:4]), [])
    assert auditor.verify_consistency(0, 5, rfc.mth([]), r, [])
    assert not auditor.verify_consistency(0, 5, rfc.mth([]), r, [r])


@settings(max_examples=300)
@given(tree_and_leaf(), st.integers(1, 70))
def test_a_path_of_the_wrong_length_for_the_claimed_size_fails(
    case: tuple[list[bytes], int], other_size: int
) -> None:
    """A path and root claimed for a tree size whose audit path for that leaf has another
    length (or that lacks the leaf) fail. Sizes of the same shape cannot be told apart
    by a path: the signed checkpoint is what binds the size."""
    leaves, index = case
    root, p = rfc.mth(leaves), rfc.path(index, leaves)
    if index < other_size and len(rfc.path(index, [b""] * other_size)) == len(p):
        return
    lh = auditor.leaf_hash(leaves[index])
    assert not rfc.verify_inclusion(index, other_size, leaves[index], p, root)
    assert not auditor.verify_inclusion(index, other_size, lh, p, root)

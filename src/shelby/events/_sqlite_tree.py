"""The SQLite store's copy of the Merkle tree (events/merkle.py): one row per written
batch of leaves, not one per node.

A row holds what appending its leaves to the tree made, in two blobs: ``leaves``, the
32-byte leaf hashes in log order (leaf ``i`` is ``sha256(b"\\x00" + hash)`` of the
event at seq ``i + 1``), and ``parents``, the perfect subtrees above level 0 that those
leaves completed, in the order completed (each leaf's, lowest level first). Its key
``first`` is the index of its first leaf, so rows are only ever added at the end of the
table.

Why not a row per node, as the PostgreSQL store keeps: a batch of 64 events made about
127 rows there, and the tails of the tree's levels sat on as many different pages,
each written again by every commit; a row per batch is one insert at the end of one
B-tree. Where a node is inside its row follows from its key: the subtree ``(level,
idx)`` is completed by leaf ``p = ((idx + 1) << level) - 1``; leaf ``j`` completes
``ctz(j + 1)`` parents, so the leaves ``first .. p - 1`` of a row completed
``V(p) - V(first)`` of them, with ``V(n) = n - popcount(n)`` (Legendre's formula for
the twos in ``n!``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from shelby.events.merkle import Frontier, NodeKey, keys_for_root
from shelby.events.store import StoreError

__all__ = [
    "ROWS_OF",
    "TREE_DDL",
    "append_leaves",
    "leaves_between",
    "load_frontier",
    "migrate_node_rows",
    "nodes_in",
    "old_tree_size",
    "stored_tree",
    "tree_nodes",
    "wanted_rows",
]

TREE_DDL = """CREATE TABLE IF NOT EXISTS merkle_batches (
    first INTEGER PRIMARY KEY,
    leaves BLOB NOT NULL,
    parents BLOB NOT NULL
)"""

INSERT_BATCH = "INSERT INTO merkle_batches (first, leaves, parents) VALUES (?, ?, ?)"

# A batch as big as this is written as several rows, so that no row is large: a log
# extended at open, or migrated, would otherwise make one blob of the whole log, and
# reading a node reads its row's blobs (16 KB at most).
ROW_LEAVES = 256

# For each leaf in the JSON array ``?``, the row holding it (whatever the rows' sizes):
# every subtree a proof or a root needs, in one query.
ROWS_OF = """SELECT w.value, b.first, b.leaves, b.parents
FROM json_each(?) AS w
JOIN merkle_batches AS b
  ON b.first = (SELECT max(first) FROM merkle_batches WHERE first <= w.value)"""


def append_leaves(conn: sqlite3.Connection, tree: Frontier, entries: Iterable[bytes]) -> None:
    """Add a leaf for each entry (an event's hash) to ``tree`` and write what it made."""
    it = iter(entries)
    while chunk := list(itertools.islice(it, ROW_LEAVES)):
        first = tree.size
        leaves, parents = tree.extend(chunk)
        conn.execute(INSERT_BATCH, (first, b"".join(leaves), b"".join(parents)))


def _ceil_shift(n: int, level: int) -> int:
    return -(-n >> level)


def _twos(n: int) -> int:
    """The exponent of 2 in ``n!``: how many parents leaves ``0 .. n - 1`` completed."""
    return n - n.bit_count()


def wanted_rows(keys: Iterable[NodeKey]) -> tuple[dict[NodeKey, int], str]:
    """The leaf completing each subtree ``(level, index)`` (which its row holds), and the
    ``ROWS_OF`` parameter asking for those rows; keys no tree has are left out."""
    leaf_of: dict[NodeKey, int] = {}
    for level, index in keys:
        p = ((index + 1) << level) - 1
        if level >= 0 and index >= 0 and p < 1 << 62:
            leaf_of[(level, index)] = p
    return leaf_of, json.dumps(sorted(set(leaf_of.values())))


def nodes_in(leaf_of: dict[NodeKey, int], rows: Iterable[Sequence[Any]]) -> dict[NodeKey, bytes]:
    """The subtrees of ``leaf_of`` that the rows ``ROWS_OF`` found hold."""
    by_leaf = {p: (first, leaves, parents) for p, first, leaves, parents in rows}
    found: dict[NodeKey, bytes] = {}
    for (level, index), p in leaf_of.items():
        row = by_leaf.get(p)
        if row is None:
            continue
        first, leaves, parents = row
        if level == 0:
            at, blob = (p - first) * 32, leaves
        else:
            at, blob = (_twos(p) - _twos(first) + level - 1) * 32, parents
        node = bytes(blob[at : at + 32])
        if len(node) == 32:
            found[(level, index)] = node
    return found


def tree_nodes(conn: sqlite3.Connection, keys: Iterable[NodeKey]) -> dict[NodeKey, bytes]:
    """The stored subtrees among ``keys``; a key the tree does not hold is left out."""
    leaf_of, wanted = wanted_rows(keys)
    with stored_tree():
        rows = conn.execute(ROWS_OF, (wanted,)).fetchall()
    return nodes_in(leaf_of, rows)


def load_frontier(conn: sqlite3.Connection) -> Frontier:
    """The frontier of the stored tree: its size and the subtrees that make it up."""
    row = conn.execute(
        "SELECT first + length(leaves) / 32 FROM merkle_batches ORDER BY first DESC LIMIT 1"
    ).fetchone()
    size = 0 if row is None else int(row[0])

    nodes = tree_nodes(conn, keys_for_root(size))

    def lookup(level: int, index: int) -> bytes:
        node = nodes.get((level, index))
        if node is None:
            raise StoreError(f"the stored Merkle tree lacks its node {(level, index)}")
        return node

    return Frontier.load(size, lookup)


@contextlib.contextmanager
def stored_tree() -> Iterator[None]:
    """Around a read of ``merkle_batches``: a log that has not been opened with write
    access since the layout changed (a read-only copy) has none yet, and says so."""
    try:
        yield
    except (sqlite3.OperationalError, StoreError) as exc:  # the store's readers wrap it
        if "no such table: merkle_batches" not in str(exc):
            raise
        raise StoreError(
            "this log keeps its Merkle tree as Shelby did before merkle_batches; open it"
            " once with write access (shelby serve, or shelby verify of a writable copy)"
            " to move it"
        ) from exc


def leaves_between(conn: sqlite3.Connection, low: int, high: int) -> dict[int, bytes]:
    """The stored leaves of the events ``low <= seq <= high``, by seq."""
    out: dict[int, bytes] = {}
    with stored_tree():
        start = conn.execute(
            "SELECT max(first) FROM merkle_batches WHERE first <= ?", (low - 1,)
        ).fetchone()[0]
        rows = conn.execute(
            "SELECT first, leaves FROM merkle_batches WHERE first >= ? AND first <= ?"
            " ORDER BY first",
            (start if start is not None else 0, high - 1),
        ).fetchall()
    for first, leaves in rows:
        for i in range(len(leaves) // 32):
            seq = first + i + 1
            if low <= seq <= high:
                out[seq] = bytes(leaves[i * 32 : i * 32 + 32])
    return out


def old_tree_size(conn: sqlite3.Connection) -> int | None:
    """How many leaves a tree kept in the earlier layout (``merkle_nodes``, a row per
    node keyed by ``(level, idx)``) holds; None when there is no such table."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'merkle_nodes'"
    ).fetchone()
    if exists is None:
        return None
    row = conn.execute("SELECT max(idx) FROM merkle_nodes WHERE level = 0").fetchone()
    return 0 if row[0] is None else int(row[0]) + 1


def migrate_node_rows(conn: sqlite3.Connection, size: int) -> None:
    """Move the ``size`` leaves of a tree in the earlier layout, and the subtrees they
    completed, into ``merkle_batches``, byte for byte, and drop ``merkle_nodes``. The
    stored tree is the copy ``verify`` holds the log against, so it is moved, not
    computed again from the events, and a tree with a node missing is refused rather
    than moved with every later node in its row shifted. Runs in the caller's
    transaction, which a refusal leaves to roll back."""
    if conn.execute("SELECT 1 FROM merkle_batches LIMIT 1").fetchone() is not None:
        raise StoreError(
            "this log holds a Merkle tree in merkle_batches and another in merkle_nodes:"
            " an older Shelby wrote to it after a newer one had moved its tree. The older"
            " one's (merkle_nodes) was made again from the events; drop it to go on, and"
            " the tree in merkle_batches is extended over the events it lacks"
        )
    for a in range(0, size, ROW_LEAVES):
        b = min(a + ROW_LEAVES, size)
        leaves, parents = _old_rows(conn, a, b)
        if len(leaves) != 32 * (b - a) or len(parents) != 32 * (_twos(b) - _twos(a)):
            raise StoreError(
                f"the Merkle tree in merkle_nodes lacks nodes of its leaves {a} to {b - 1}"
                " (or holds hashes that are not 32 bytes); nothing was moved"
            )
        conn.execute(INSERT_BATCH, (a, leaves, parents))
    conn.execute("DROP TABLE merkle_nodes")


def _old_rows(conn: sqlite3.Connection, a: int, b: int) -> tuple[bytes, bytes]:
    """The leaves ``a .. b - 1`` and the parents they completed, from ``merkle_nodes``."""
    leaves = [
        bytes(h)
        for (h,) in conn.execute(
            "SELECT hash FROM merkle_nodes WHERE level = 0 AND idx >= ? AND idx < ? ORDER BY idx",
            (a, b),
        )
    ]
    made: dict[tuple[int, int], bytes] = {}  # (completing leaf, level) -> hash
    level = 1
    while (1 << level) <= b:
        # Leaf p completes (level, idx) when idx + 1 == (p + 1) >> level, exactly.
        low, high = _ceil_shift(a + 1, level) - 1, _ceil_shift(b + 1, level) - 1
        for idx, h in conn.execute(
            "SELECT idx, hash FROM merkle_nodes WHERE level = ? AND idx >= ? AND idx < ?",
            (level, low, high),
        ):
            made[(((idx + 1) << level) - 1, level)] = bytes(h)
        level += 1
    parents = [made[key] for key in sorted(made)]
    return b"".join(leaves), b"".join(parents)

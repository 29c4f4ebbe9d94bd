"""The SQLite store's Merkle rows (``events/_sqlite_tree.py``): whatever the batches
the leaves came in, every subtree the tree completed is found at its key and nothing
else is; a tree kept in the earlier row-per-node layout is moved over byte for byte."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelby.events._sqlite_tree import (
    ROW_LEAVES,
    TREE_DDL,
    append_leaves,
    leaves_between,
    load_frontier,
    old_tree_size,
    tree_nodes,
)
from shelby.events.merkle import Frontier
from shelby.events.store import StoreError
from shelby.events.verify import verify_store

from ._helpers import append_sample_log, opened, raw_rows

Node = tuple[int, int, bytes]


def entry(i: int) -> bytes:
    return hashlib.sha256(i.to_bytes(8, "big")).digest()


def stored(conn: sqlite3.Connection, level: int, index: int) -> bytes | None:
    return tree_nodes(conn, [(level, index)]).get((level, index))


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(st.integers(min_value=1, max_value=70), min_size=1, max_size=12))
def test_every_completed_subtree_is_found_at_its_key_whatever_the_batches(
    batches: list[int],
) -> None:
    """Leaves written in batches of any sizes: each subtree is where its key says, none
    the tree has not completed is found, and the frontier and leaves read back agree
    with a tree built one leaf at a time."""
    conn = sqlite3.connect(":memory:")
    conn.execute(TREE_DDL)
    tree, reference = Frontier(), Frontier()
    expected: dict[tuple[int, int], bytes] = {}
    n = 0
    for size in batches:
        entries = [entry(n + i) for i in range(size)]
        append_leaves(conn, tree, entries)
        for e in entries:
            expected.update({(level, idx): h for level, idx, h in reference.append(e)})
        n += size
    for (level, idx), h in expected.items():
        assert stored(conn, level, idx) == h
    assert tree_nodes(conn, [*expected, (0, n), (3, n)]) == expected  # all in one query
    # Keys the tree has not completed (yet) are not found.
    for level in range(8):
        assert stored(conn, level, n >> level) is None
    assert load_frontier(conn).root() == reference.root()
    assert leaves_between(conn, 1, n) == {i + 1: expected[(0, i)] for i in range(n)}


def test_large_extensions_are_split_into_rows() -> None:
    """Extending the tree over many events at once (a log written before the tree
    existed) writes rows of ``ROW_LEAVES`` leaves, each found the same way."""
    conn = sqlite3.connect(":memory:")
    conn.execute(TREE_DDL)
    tree, reference = Frontier(), Frontier()
    entries = [entry(i) for i in range(2 * ROW_LEAVES + 10)]
    append_leaves(conn, tree, entries)
    made = {(lv, i): h for e in entries for lv, i, h in reference.append(e)}
    firsts = [r[0] for r in conn.execute("SELECT first FROM merkle_batches")]
    assert firsts == [0, ROW_LEAVES, 2 * ROW_LEAVES]
    last = len(entries) - 1
    for key in [(0, 0), (0, ROW_LEAVES - 1), (0, ROW_LEAVES), (9, 0), (1, 255), (0, last)]:
        assert stored(conn, *key) == made[key]


OLD_TABLE = (
    "CREATE TABLE merkle_nodes (level INTEGER NOT NULL, idx BIGINT NOT NULL,"
    " hash BLOB NOT NULL, PRIMARY KEY (level, idx)) WITHOUT ROWID"
)


async def old_layout_log(
    path: Path, change: Callable[[list[Node]], list[Node]] = list
) -> list[Node]:
    """A log as an earlier Shelby left it: its tree a row per node in ``merkle_nodes``
    (passed through ``change`` first), and no ``merkle_batches``. Its nodes, unchanged."""
    async with opened(path) as store:
        await append_sample_log(store, jobs=6)
    old = Frontier()
    nodes = [n for row in raw_rows(path) for n in old.append(bytes.fromhex(row[7]))]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TABLE merkle_batches")
    conn.execute(OLD_TABLE)
    conn.executemany("INSERT INTO merkle_nodes (level, idx, hash) VALUES (?, ?, ?)", change(nodes))
    conn.close()
    return nodes


async def test_a_tree_in_the_old_layout_is_moved_byte_for_byte(tmp_path: Path) -> None:
    """A log from before ``merkle_batches``: its ``merkle_nodes`` rows are moved, not
    computed again, so a subtree that was changed there is still caught by verify."""
    path = tmp_path / "old.db"
    nodes = await old_layout_log(path)

    async with opened(path) as store:
        assert (await verify_store(store)).ok
        keys = [(level, idx) for level, idx, _ in nodes]
        assert await store.tree_nodes(keys) == {(lv, i): h for lv, i, h in nodes}
    conn = sqlite3.connect(path)
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_schema")}
    assert "merkle_nodes" not in tables
    assert old_tree_size(conn) is None  # nothing left to move
    conn.close()

    # The same move of a tree whose first 32 leaves' subtree was changed: verify, which
    # folds the stored subtrees into the root, still says so.
    changed = tmp_path / "changed.db"
    await old_layout_log(
        changed, lambda ns: [(lv, i, bytes(32) if (lv, i) == (5, 0) else h) for lv, i, h in ns]
    )
    async with opened(changed) as store:
        verdict = await verify_store(store)
    assert verdict.problem is not None
    assert "root" in verdict.problem.reason


async def test_an_old_tree_with_a_node_missing_is_not_moved(tmp_path: Path) -> None:
    """Every later node in its row would shift: the store refuses to open, names the
    leaves, and leaves the old table as it was."""
    path = tmp_path / "gap.db"
    nodes = await old_layout_log(path, lambda ns: [n for n in ns if n[:2] != (1, 0)])
    kept = [n for n in nodes if n[:2] != (1, 0)]
    with pytest.raises(StoreError, match="lacks nodes of its leaves 0 to 49"):
        async with opened(path):
            pass
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT level, idx, hash FROM merkle_nodes ORDER BY level, idx")
    assert rows.fetchall() == sorted(kept)
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_schema")}
    if "merkle_batches" in tables:  # its creation may stand; nothing was moved into it
        assert conn.execute("SELECT count(*) FROM merkle_batches").fetchone()[0] == 0
    conn.close()


async def test_a_tree_kept_in_both_layouts_is_refused_with_what_to_do(tmp_path: Path) -> None:
    """An older Shelby that wrote to a log after a newer one made ``merkle_nodes`` again
    from the events: the store does not guess which tree to keep."""
    path = tmp_path / "both.db"
    nodes = await old_layout_log(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(TREE_DDL)
    conn.execute(
        "INSERT INTO merkle_batches (first, leaves, parents) VALUES (0, ?, x'')", (nodes[0][2],)
    )
    conn.close()
    with pytest.raises(StoreError, match="drop it to go on"):
        async with opened(path):
            pass


async def test_reading_an_unmoved_old_tree_says_how_to_move_it(tmp_path: Path) -> None:
    """A read-only copy can't be moved; reading its leaves (verify of a segment against
    it) says so instead of failing on a missing table."""
    path = tmp_path / "unmoved.db"
    await old_layout_log(path)
    conn = sqlite3.connect(path)
    with pytest.raises(StoreError, match="open it once with write access"):
        leaves_between(conn, 1, 5)
    conn.close()

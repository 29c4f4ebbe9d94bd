"""The SQLite store's Merkle rows (``events/_sqlite_tree.py``): whatever the batches
the leaves came in, every subtree the tree completed is found at its key and nothing
else is; a tree kept in the earlier row-per-node layout is moved over byte for byte."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from shelby.events._sqlite_tree import (
    ROW_OF,
    TREE_DDL,
    append_leaves,
    leaves_between,
    load_frontier,
    migrate_node_rows,
    node_in,
    row_of,
)
from shelby.events.merkle import Frontier
from shelby.events.verify import verify_store

from ._helpers import append_sample_log, opened, raw_rows


def entry(i: int) -> bytes:
    return hashlib.sha256(i.to_bytes(8, "big")).digest()


def stored(conn: sqlite3.Connection, level: int, index: int) -> bytes | None:
    p = row_of(level, index)
    row = None if p is None else conn.execute(ROW_OF, (p,)).fetchone()
    return None if row is None else node_in(row, level, index)


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(st.integers(min_value=1, max_value=70), min_size=1, max_size=12))
def test_every_completed_subtree_is_found_at_its_key_whatever_the_batches(
    batches: list[int],
) -> None:
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
    entries = [entry(i) for i in range(9000)]
    append_leaves(conn, tree, entries)
    made = {(lv, i): h for e in entries for lv, i, h in reference.append(e)}
    assert [r[0] for r in conn.execute("SELECT first FROM merkle_batches")] == [0, 4096, 8192]
    for key in [(0, 0), (0, 4095), (0, 4096), (12, 0), (1, 4095), (3, 1023), (0, 8999)]:
        assert stored(conn, *key) == made[key]


async def test_a_tree_in_the_old_layout_is_moved_byte_for_byte(tmp_path: Path) -> None:
    """A log from before ``merkle_batches``: its ``merkle_nodes`` rows are moved, not
    computed again, so a subtree that was changed there is still caught by verify."""
    path = tmp_path / "old.db"
    async with opened(path) as store:
        await append_sample_log(store, jobs=6)
    hashes = [bytes.fromhex(r[7]) for r in raw_rows(path)]
    old = Frontier()
    nodes = [n for h in hashes for n in old.append(h)]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TABLE merkle_batches")
    conn.execute(
        "CREATE TABLE merkle_nodes (level INTEGER NOT NULL, idx BIGINT NOT NULL,"
        " hash BLOB NOT NULL, PRIMARY KEY (level, idx)) WITHOUT ROWID"
    )
    conn.executemany("INSERT INTO merkle_nodes (level, idx, hash) VALUES (?, ?, ?)", nodes)
    conn.close()

    async with opened(path) as store:
        assert (await verify_store(store)).ok
        keys = [(level, idx) for level, idx, _ in nodes]
        assert await store.tree_nodes(keys) == {(lv, i): h for lv, i, h in nodes}
    conn = sqlite3.connect(path)
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_schema")}
    assert "merkle_nodes" not in tables
    assert not migrate_node_rows(conn)  # nothing left to move
    conn.close()

    # The same move of a tree whose first 32 leaves' subtree was changed: verify, which
    # folds the stored subtrees into the root, still says so.
    changed = tmp_path / "changed.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("VACUUM INTO ?", (str(changed),))
    conn.close()
    conn = sqlite3.connect(changed, isolation_level=None)
    conn.execute("DROP TABLE merkle_batches")
    conn.execute(
        "CREATE TABLE merkle_nodes (level INTEGER NOT NULL, idx BIGINT NOT NULL,"
        " hash BLOB NOT NULL, PRIMARY KEY (level, idx)) WITHOUT ROWID"
    )
    tampered = [(lv, i, bytes(32) if (lv, i) == (5, 0) else h) for lv, i, h in nodes]
    conn.executemany("INSERT INTO merkle_nodes (level, idx, hash) VALUES (?, ?, ?)", tampered)
    conn.close()
    async with opened(changed) as store:
        verdict = await verify_store(store)
    assert verdict.problem is not None
    assert "root" in verdict.problem.reason

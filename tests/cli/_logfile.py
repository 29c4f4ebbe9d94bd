"""Shared by tests of the commands over a log file: running ``shelby rebuild`` and
``shelby verify`` on it, and reading every projection table out of it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from shelby.projections import all_projections

__all__ = ["dump", "on_log", "rebuild", "shelby_cli", "verify"]


def shelby_cli() -> list[str]:
    script = Path(sys.executable).parent / "shelby"
    return [str(script)] if script.exists() else [sys.executable, "-m", "shelby"]


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every projection table and the positions, each sorted by its primary key."""
    conn = sqlite3.connect(path)
    try:
        out: dict[str, list[tuple[Any, ...]]] = {}
        tables = [t for p in all_projections() for t in p.tables]
        for table in [*tables, "projection_positions"]:
            info = conn.execute(f"PRAGMA table_info({table})").fetchall()
            key = [row[1] for row in sorted(info, key=lambda r: r[5]) if row[5] > 0]
            out[table] = conn.execute(
                f"SELECT * FROM {table} ORDER BY {', '.join(key) or 'rowid'}"
            ).fetchall()
        return out
    finally:
        conn.close()


def on_log(command: str, path: Path) -> subprocess.CompletedProcess[str]:
    """``shelby COMMAND --db PATH``, as a person would run it."""
    return subprocess.run(
        [*shelby_cli(), command, "--db", str(path)], capture_output=True, text=True, timeout=120
    )


def rebuild(path: Path) -> subprocess.CompletedProcess[str]:
    return on_log("rebuild", path)


def verify(path: Path) -> subprocess.CompletedProcess[str]:
    return on_log("verify", path)

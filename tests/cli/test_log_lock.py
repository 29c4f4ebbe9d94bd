"""One writer per SQLite log: a running server keeps ``rebuild`` and a second server off it."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any


def _shelby(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELBY_")}
    env.update(SHELBY_ADMIN_TOKEN="a-token", SHELBY_JOIN_TOKEN="j-token")
    return subprocess.run(
        [sys.executable, "-m", "shelby", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_rebuild_and_a_second_server_wait_for_the_running_one(server_factory: Any) -> None:
    """While ``shelby serve`` runs on a SQLite log, ``rebuild`` and another ``serve`` on
    the same file refuse, naming the holder; once it stops, ``rebuild`` runs."""
    server = server_factory("locked")
    refused = _shelby("rebuild", "--db", str(server.db))
    assert refused.returncode != 0
    assert "in use (shelby serve, pid" in refused.stderr
    second = _shelby("serve", "--db", str(server.db), "--port", "1")
    assert second.returncode != 0
    assert "in use (shelby serve, pid" in second.stderr
    server.stop()
    done = _shelby("rebuild", "--db", str(server.db))
    assert done.returncode == 0, done.stderr

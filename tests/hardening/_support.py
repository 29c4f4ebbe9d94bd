"""What the hardening tests share: one real server for a whole module, and the checks
that a refused request changed nothing (the log's head) and broke nothing (the hash
chain verifies, no request ended in a 500)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from cli._logfile import verify as verify_log
from conftest import ServerProcess


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One ``shelby serve`` for every test of a module: fresh ids keep the tests apart."""
    # A lease no run outlasts: nothing moves a job but the test's own calls.
    server = ServerProcess(tmp_path_factory.mktemp("server"), lease_seconds=3600)
    server.start()
    yield server
    server.stop()


@dataclass(frozen=True)
class Head:
    """Where the log stands: a refused request must leave it exactly there."""

    last_seq: int
    head_hash: str


def head(server: ServerProcess) -> Head:
    with server.client("") as c:
        log = c.get("/api/frontend/system/health").json()["eventLog"]
    return Head(log["lastSeq"], log["headHash"])


def verify(server: ServerProcess) -> str:
    """``shelby verify`` on the server's database, beside the running server."""
    done = verify_log(server.db)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def server_errors(server: ServerProcess) -> list[str]:
    """The exceptions the server logged while answering (each one was a 500)."""
    errors = []
    for line in server.log_text().split("\n"):  # not splitlines: ids may hold U+0085
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if record.get("level") == "error" and "exception" in record:
            errors.append(f"{record.get('route')}: {record['exception'].splitlines()[-1]}")
    return errors

"""Faults of the store under a running server: the disk full, the database read-only.

While the fault lasts, writes answer 503 with a ``detail`` that names it, health
answers 503 ``unhealthy`` (``database: unwritable``), and reads (the job list, a job,
the dashboard) still answer. Nothing half-written remains: the write that failed is
not there and ``shelby verify`` passes. Once the fault clears, health turns healthy
and writes go through again, without a restart.

The faults are real, made by the kernel, not by SQLite settings:

- Disk full: the database lives on a small tmpfs of its own (mounted by the test; it
  runs as root), and a file fills the rest of it; removing the file clears the fault.
- Read-only: the database file is made immutable (``chattr +i``), the one read-only
  bit that binds root too, and the server is started on it; ``chattr -i`` clears it.
  The server must start: Linux keeps a file opened for writing writable whatever
  happens to its mode later, so a server meets a read-only database when it opens
  it (a restart, a restored backup, a volume mounted read-only), not in the middle
  of a run.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api._flow import register
from cli._logfile import verify
from conftest import ServerFactory, ServerProcess

HEALTH = "/api/frontend/system/health"
BIG_META = {"notes": "x" * 400_000}  # more than the WAL has room for on a full disk


@contextlib.contextmanager
def small_disk(path: Path, size: str = "16m") -> Iterator[Path]:
    path.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.fail(f"this test mounts a tmpfs (as root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> None:
    """Write zeros into ``path`` until the disk says it is full."""
    with open(path, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * (1 << 16))
            f.flush()


def chattr(flag: str, *paths: Path) -> None:
    done = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, text=True)
    assert done.returncode == 0, f"chattr {flag}: {done.stderr}"


def wait_health(http: httpx.Client, status: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = http.get(HEALTH)
        body: dict[str, Any] = r.json()
        if body["status"] == status:
            assert r.status_code == (200 if status == "healthy" else 503), r.text
            return body
        assert time.monotonic() < deadline, f"health is not {status}: {r.text}"
        time.sleep(0.1)


def seed_jobs(server: ServerProcess) -> None:
    """A job that ran and one that waits: something for reads to show."""
    node = register(server, "fault-node")
    with server.client() as http:
        for job_id in ("ran", "waits"):
            assert http.post("/api/jobs/create", json={"jobId": job_id}).status_code == 200
            r = http.post("/api/jobs/upload-script", json={"jobId": job_id, "script": "print(1)"})
            assert r.status_code == 200, r.text
    assert node.poll().json()["job"]["jobId"] == "ran"
    assert node.ack("ran", 1).status_code == 200
    assert node.stream("ran", 0, ["hello"], 1).status_code == 200
    node.close()


def check_reads(http: httpx.Client) -> None:
    jobs = http.get("/api/frontend/jobs")
    assert jobs.status_code == 200, jobs.text
    assert sorted(j["jobId"] for j in jobs.json()["jobs"]) == ["ran", "waits"]
    ran = http.get("/api/frontend/jobs/ran")
    assert ran.status_code == 200 and ran.json()["status"] == "running", ran.text
    logs = http.get("/api/frontend/logs/ran")
    assert [ln["line"] for ln in logs.json()["logs"]] == ["hello"], logs.text
    dashboard = http.get("/api/frontend/dashboard")
    assert dashboard.status_code == 200, dashboard.text
    assert dashboard.json()["jobStats"]["total"] == 2


def check_refused(http: httpx.Client, words: str) -> None:
    r = http.post("/api/jobs/create", json={"jobId": "refused", "meta": BIG_META})
    assert r.status_code == 503, r.text
    detail = r.json()["detail"]
    assert set(r.json()) == {"detail"} and words in detail, detail
    assert http.get("/api/frontend/jobs/refused").status_code == 404


def check_resumed(server: ServerProcess, http: httpx.Client) -> None:
    # The refused job's id was never taken: it is created now, once.
    r = http.post("/api/jobs/create", json={"jobId": "refused", "meta": BIG_META})
    assert r.status_code == 200, r.text
    assert http.post("/api/jobs/create", json={"jobId": "after"}).status_code == 200
    events = http.get("/api/audit/jobs/refused").json()["events"]
    assert [e["type"] for e in events] == ["JobCreated"]
    verified = verify(server.db)
    assert verified.returncode == 0, verified.stderr


def test_a_full_disk_refuses_writes_serves_reads_and_recovers(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        server = server_factory("full", lease_seconds=30, db=disk / "shelby.db")
        seed_jobs(server)
        with server.client() as http:
            assert wait_health(http, "healthy")["database"] == "healthy"
            fill(disk / "filler")
            check_refused(http, "database or disk is full")
            health = wait_health(http, "unhealthy")
            assert health["database"] == "unwritable" and "full" in health["detail"], health
            assert health["jobQueue"]["running"] == 1  # health still reads what it can
            check_reads(http)
            # Nothing of the refused write is on disk: the log verifies as it is.
            verified = verify(server.db)
            assert verified.returncode == 0, verified.stderr
            (disk / "filler").unlink()
            assert wait_health(http, "healthy")["detail"] is None
            check_resumed(server, http)
        server.stop()


def test_a_read_only_database_serves_reads_and_recovers(
    server_factory: ServerFactory,
) -> None:
    server = server_factory("readonly", lease_seconds=30)
    seed_jobs(server)
    server.stop()
    assert not server.db.with_name("shelby.db-wal").exists()  # all in the one file
    chattr("+i", server.db)
    try:
        server.start()
        with server.client() as http:
            health = wait_health(http, "unhealthy")
            assert health["database"] == "unwritable", health
            assert "readonly" in health["detail"], health
            check_reads(http)
            check_refused(http, "readonly database")
            chattr("-i", server.db)
            assert wait_health(http, "healthy")["database"] == "healthy"
            check_resumed(server, http)
            check_reads_after = http.get("/api/frontend/jobs").json()["jobs"]
            assert {j["jobId"] for j in check_reads_after} == {"ran", "waits", "refused", "after"}
    finally:
        chattr("-i", server.db)

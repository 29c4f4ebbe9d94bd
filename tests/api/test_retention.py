"""A real ``shelby serve`` with retention on archives while it serves: a log with twelve
days of history, and heartbeats arriving live, lose their old rows to segments, and the
audit endpoints, the logs page, the nodes view, ``shelby audit``, verify and rebuild
all still see the whole log."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli._logfile import dump, rebuild, verify
from conftest import ServerFactory, ServerProcess, wait_for
from events._history import DAY, build_history
from shelby.audit.verification import leaf_hash, verify_inclusion
from shelby.settings import Settings

from ._flow import register

# Seconds, in days: heartbeats that arrive while the test runs grow old enough too.
RETENTION_DAYS = 2 / DAY


def _whole_log(client: httpx.Client) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while True:
        r = client.get("/api/audit/log", params={"after": len(events), "limit": 50})
        assert r.status_code == 200, r.text
        page = r.json()["events"]
        if not page:
            return events
        events.extend(page)


def _check_chain(events: list[dict[str, Any]]) -> None:
    """README, "Byte layout of the hash chain": nothing but json and hashlib."""
    prev = "0" * 64
    for n, e in enumerate(events, start=1):
        assert e["seq"] == n and e["prevHash"] == prev, f"chain broken at {n}"
        canonical = json.dumps(
            {k: e[k] for k in ("data", "seq", "stream", "timestamp", "type", "version")},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
        prev = hashlib.sha256(bytes.fromhex(prev) + canonical).hexdigest()
        assert prev == e["hash"], f"hash mismatch at {n}"


def _archived_seqs(server: ServerProcess) -> set[int]:
    seqs: set[int] = set()
    for segment in (server.data_dir / "archive").glob("segment-*.db"):
        conn = sqlite3.connect(segment)
        seqs.update(seq for (seq,) in conn.execute("SELECT seq FROM events"))
        conn.close()
    return seqs


def test_a_server_with_retention_archives_while_serving_and_the_log_stays_whole(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    data = tmp_path / "server"
    data.mkdir()
    asyncio.run(build_history(data / "shelby.db", start=time.time() - 12 * DAY))
    server = server_factory(
        "server", args=("--retention-days", str(RETENTION_DAYS), "--archive-interval", "0.3")
    )
    node = register(server, "live")
    try:
        for k in range(5):
            assert node.heartbeat(cpuUsage=float(k)).status_code == 200
            time.sleep(0.4)
        with server.client() as admin:
            # The live node's early heartbeats went too, while it kept beating.
            live = wait_for(
                lambda: [
                    e
                    for e in _whole_log(admin)
                    if e["type"] == "HistoryArchived" and e["data"]["firstSeq"] > 100
                ],
                15,
                "a segment of heartbeats sent while serving",
            )
            assert live
            events = _whole_log(admin)
            _check_chain(events)
            archived = _archived_seqs(server)
            rows = sqlite3.connect(server.db).execute("SELECT count(*) FROM events").fetchone()
            assert archived and rows[0] + len(archived) >= len(events)
            kinds = {events[s - 1]["type"] for s in archived}
            assert kinds == {"NodeHeartbeat", "LogLinesAppended"}

            job = admin.get("/api/audit/jobs/old-a").json()["events"]
            assert [e["version"] for e in job] == list(range(1, len(job) + 1))
            assert any(e["seq"] in archived for e in job)

            logs = admin.get("/api/frontend/logs/old-a", params={"attempt": 1}).json()
            assert [a["segment"] for a in logs["archived"]] and logs["archived"][0][
                "firstOffset"
            ] == 0
            assert [ln["offset"] for ln in logs["logs"]] == [15, 16, 17]

            n1 = next(
                n for n in admin.get("/api/frontend/nodes").json()["nodes"] if n["nodeId"] == "n1"
            )
            n1_beats = [
                e for e in events if e["stream"] == "node-n1" and e["type"] == "NodeHeartbeat"
            ]
            assert n1["lastSeen"] == n1_beats[-1]["timestamp"]

            seq = min(archived)
            cp = admin.get("/api/audit/checkpoint", headers={"Accept": "application/json"}).json()
            proof = admin.get(
                "/api/audit/proof/inclusion", params={"seq": seq, "treeSize": cp["treeSize"]}
            ).json()
            assert proof["eventHash"] == events[seq - 1]["hash"]
            assert verify_inclusion(
                seq - 1,
                cp["treeSize"],
                leaf_hash(bytes.fromhex(proof["eventHash"])),
                [bytes.fromhex(h) for h in proof["auditPath"]],
                bytes.fromhex(cp["rootHash"]),
            )
        audited = server.cli("audit", "old-a", timeout=120)
        assert audited.returncode == 0, audited.stderr
        assert f"ok: job old-a: {len(job)} events" in audited.stdout
        printed = server.cli("logs", "old-a", timeout=120)
        assert printed.returncode == 0, printed.stderr
        segment = logs["archived"][0]["segment"]
        assert f"lines 0..14 of attempt 1 were archived to {segment}" in printed.stderr
        assert "old-a step 5.2" in printed.stdout and "old-a step 4.2" not in printed.stdout
    finally:
        node.close()
        server.stop()
    live_views = dump(server.db)
    for done in (verify(server.db), rebuild(server.db)):
        assert done.returncode == 0, done.stderr
    assert dump(server.db) == live_views


def test_retention_is_refused_with_postgresql() -> None:
    """A PostgreSQL log keeps all its history: asking it to archive stops the start."""
    env = {"SHELBY_DB": "postgresql://127.0.0.1/test", "SHELBY_RETENTION_DAYS": "7"}
    with pytest.raises(ValueError, match="retention is SQLite-only"):
        Settings.from_env(env)
    assert Settings.from_env({**env, "SHELBY_RETENTION_DAYS": "0"}).retention_days == 0
    assert Settings.from_env({"SHELBY_RETENTION_DAYS": "7"}).retention_days == 7

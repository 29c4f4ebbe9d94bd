"""The auditor's road end to end: a real `shelby serve`, a job run through the agent
endpoints, the transparency endpoints checked against RFC 9162 as transcribed in the
tests, and the real `shelby audit` CLI, before and after the job is deleted."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from conftest import JOIN_TOKEN, ServerProcess

from . import rfc9162 as rfc

MODEL = "sha256:" + "5e" * 32


def run_job(server: ServerProcess, job_id: str) -> None:
    """Create a job, upload its script, and take it through an agent's calls to a finish."""
    with server.client() as admin:
        r = admin.post(
            "/api/jobs/create",
            json={
                "jobId": job_id,
                "datasetName": "digits",
                "datasetUrl": "https://example.com/digits.npz",
                "datasetHash": "sha256:" + "da" * 32,
                "runtimeMinutesEstimate": 1,
            },
        )
        assert r.status_code == 200, r.text
        r = admin.post(
            "/api/jobs/upload-script",
            json={"jobId": job_id, "script": "print('train')\n", "requirements": "numpy\n"},
        )
        assert r.status_code == 200, r.text
    with server.client(JOIN_TOKEN) as joiner:
        r = joiner.post("/api/nodes/register", json={"nodeId": "gpu-1", "name": "gpu-1"})
        assert r.status_code == 200, r.text
        node_token = r.json()["token"]
    with server.client(node_token) as node:
        r = node.get("/api/jobs/poll", params={"nodeId": "gpu-1"})
        job = r.json()["job"]
        assert job is not None and job["jobId"] == job_id, r.text
        attempt = job["attempt"]
        base = {"jobId": job_id, "nodeId": "gpu-1", "attempt": attempt}
        assert node.post("/api/jobs/ack", json=base).status_code == 200
        lines = [{"line": "epoch 1 loss=0.25", "timestamp": 1_700_000_000.5}]
        r = node.post("/api/jobs/stream-log", json={**base, "offset": 0, "lines": lines})
        assert r.status_code == 200, r.text
        r = node.post(
            "/api/jobs/finish",
            json={**base, "status": "finished", "modelHash": MODEL, "exitCode": 0},
        )
        assert r.status_code == 200, r.text


def shelby(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shelby", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def _get(client: httpx.Client, path: str, **params: Any) -> Any:
    r = client.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_endpoints_serve_rfc_proofs_under_a_signed_checkpoint(shelby_server: ServerProcess) -> None:
    """The checkpoint's root is MTH over every event hash of /api/audit/log; its
    signature verifies; every served path and proof passes the RFC's verification."""
    run_job(shelby_server, "j1")
    with shelby_server.client() as c:
        events = _get(c, "/api/audit/log", limit=10_000)["events"]
        leaves = [bytes.fromhex(e["hash"]) for e in events]
        key = _get(c, "/api/audit/public-key")
        cp = c.get("/api/audit/checkpoint", headers={"Accept": "application/json"}).json()
        assert cp["treeSize"] == len(leaves)
        assert cp["rootHash"] == rfc.mth(leaves).hex()
        note = c.get("/api/audit/checkpoint").text
        text, sig_line = note.split("\n\n")
        lines = text.split("\n")
        assert lines[0] == key["keyName"] == cp["origin"]
        assert int(lines[1]) == len(leaves)
        blob = base64.b64decode(sig_line.strip().rsplit(" ", 1)[1])
        raw = base64.b64decode(key["publicKey"])
        Ed25519PublicKey.from_public_bytes(raw).verify(blob[4:], (text + "\n").encode())
        n = len(leaves)
        for seq in range(1, n + 1):
            p = _get(c, "/api/audit/proof/inclusion", seq=seq, treeSize=n)
            assert p["leafIndex"] == seq - 1 and p["treeSize"] == n
            path = [bytes.fromhex(h) for h in p["auditPath"]]
            assert rfc.verify_inclusion(seq - 1, n, leaves[seq - 1], path, rfc.mth(leaves))
        for first in range(1, n + 1):
            p = _get(c, "/api/audit/proof/consistency", **{"from": first, "to": n})
            path = [bytes.fromhex(h) for h in p["proof"]]
            assert path == rfc.proof(first, leaves)
            assert rfc.verify_consistency(first, n, rfc.mth(leaves[:first]), rfc.mth(leaves), path)


def test_bad_parameters_and_sizes_answer_in_the_contracts_format(
    shelby_server: ServerProcess,
) -> None:
    """422 for bad or inconsistent parameters, 404 beyond the log, 401 without a token,
    always {"detail": …}."""
    run_job(shelby_server, "j1")
    with shelby_server.client() as c:
        n = c.get("/api/audit/checkpoint", headers={"Accept": "application/json"}).json()
        size = n["treeSize"]
        for path, params, status in [
            ("/api/audit/proof/inclusion", {"seq": "x"}, 422),
            ("/api/audit/proof/inclusion", {}, 422),
            ("/api/audit/proof/inclusion", {"seq": 0}, 422),
            ("/api/audit/proof/inclusion", {"seq": 3, "treeSize": 2}, 422),
            ("/api/audit/proof/inclusion", {"seq": size + 1}, 404),
            ("/api/audit/proof/inclusion", {"seq": 1, "treeSize": size + 1}, 404),
            ("/api/audit/proof/consistency", {"from": -1}, 422),
            ("/api/audit/proof/consistency", {"from": 3, "to": 2}, 422),
            ("/api/audit/proof/consistency", {"from": 1, "to": size + 1}, 404),
            ("/api/audit/jobs/nope/attestation", {}, 404),
            ("/api/audit/jobs/nope/prov", {}, 404),
        ]:
            r = c.get(path, params=params)
            assert r.status_code == status, (path, params, r.text)
            assert set(r.json()) == {"detail"}
    with shelby_server.client("") as anonymous:
        r = anonymous.get("/api/audit/checkpoint")
        assert r.status_code == 401 and "detail" in r.json()


def test_cli_audits_a_job_after_its_deletion_and_proves_the_log_only_grew(
    shelby_server: ServerProcess, tmp_path: Path
) -> None:
    """`shelby audit` verifies the job, saves a checkpoint, and after the job is deleted
    and the log grew it still verifies, proves consistency with the saved checkpoint,
    and exports an attestation whose signature `cryptography` alone verifies."""
    run_job(shelby_server, "j1")
    env = {"SHELBY_ADMIN_TOKEN": shelby_server.admin_token}
    saved = tmp_path / "checkpoint.txt"
    first = shelby(
        "audit", "j1", "--server", shelby_server.url, "--save-checkpoint", str(saved), env=env
    )
    assert first.returncode == 0, first.stderr
    assert "ok: job j1" in first.stdout
    assert "pin it" in first.stderr
    verifier_key = first.stderr.strip().splitlines()[-1].strip()
    pinned = tmp_path / "server.vkey"
    pinned.write_text(verifier_key + "\n")

    run_job(shelby_server, "j2")
    with shelby_server.client() as c:
        assert c.delete("/api/frontend/jobs/j1").status_code == 200
        assert c.get("/api/frontend/jobs/j1").status_code == 404

    out = tmp_path / "j1.dsse.json"
    second = shelby(
        "audit",
        "j1",
        "--server",
        shelby_server.url,
        "--public-key",
        str(pinned),
        "--checkpoint",
        str(saved),
        "--export",
        str(out),
        env=env,
    )
    assert second.returncode == 0, second.stderr
    assert "only grew since the saved checkpoint" in second.stdout
    assert "pin it" not in second.stderr

    envelope = json.loads(out.read_text())
    body = base64.b64decode(envelope["payload"])
    pae = b"DSSEv1 %d %b %d %b" % (
        len(b"application/vnd.in-toto+json"),
        b"application/vnd.in-toto+json",
        len(body),
        body,
    )
    raw = base64.b64decode(verifier_key.split("+", 2)[2])[1:]
    Ed25519PublicKey.from_public_bytes(raw).verify(
        base64.b64decode(envelope["signatures"][0]["sig"]), pae
    )
    stmt = json.loads(body)
    assert stmt["subject"][0]["digest"] == {"sha256": MODEL[7:]}
    log = next(b for b in stmt["predicate"]["runDetails"]["byproducts"] if b["name"] == "event-log")
    assert log["annotations"]["deleted"] is True
    with shelby_server.client() as c:
        prov = _get(c, "/api/audit/jobs/j1/prov")
        assert f"shelby:model/{MODEL[7:]}" in prov["entity"]


def test_cli_names_the_event_that_fails_and_refuses_a_foreign_key(
    shelby_server: ServerProcess, tmp_path: Path
) -> None:
    """A key that is not the server's fails the checkpoint; an edited event (even with
    its hash recomputed) fails naming its seq; a rewritten log fails consistency."""
    run_job(shelby_server, "j1")
    env = {"SHELBY_ADMIN_TOKEN": shelby_server.admin_token}
    saved = tmp_path / "cp.txt"
    ok = shelby(
        "audit", "j1", "--server", shelby_server.url, "--save-checkpoint", str(saved), env=env
    )
    assert ok.returncode == 0, ok.stderr

    foreign = tmp_path / "foreign.pem"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(foreign)], check=True
    )
    pub = tmp_path / "foreign.pub.pem"
    subprocess.run(
        ["openssl", "pkey", "-in", str(foreign), "-pubout", "-out", str(pub)], check=True
    )
    bad_key = shelby(
        "audit", "j1", "--server", shelby_server.url, "--public-key", str(pub), env=env
    )
    assert bad_key.returncode == 1
    assert "checkpoint does not verify" in bad_key.stderr

    # A copy of the log in which the script was swapped after the fact.
    copy = tmp_path / "copy" / "shelby.db"
    copy.parent.mkdir()
    src = sqlite3.connect(shelby_server.db)
    dst = sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    (seq, data, prev) = dst.execute(
        "SELECT seq, data, prev_hash FROM events WHERE type = 'ScriptUploaded'"
    ).fetchone()
    dst.execute("DROP TRIGGER events_no_update")
    forged = data.replace("print('train')", "print('evil!')")
    dst.execute("UPDATE events SET data = ? WHERE seq = ?", (forged, seq))
    dst.commit()
    edited = shelby("audit", "j1", "--db", str(copy))
    assert edited.returncode == 1
    assert f"event seq {seq} (ScriptUploaded)" in edited.stderr

    # Rewrite the event's hash too, as an attacker with the file would.
    row = dst.execute(
        "SELECT seq, stream, version, type, timestamp, data FROM events WHERE seq = ?", (seq,)
    ).fetchone()
    d = json.loads(row[5])
    d["scriptHash"] = "sha256:" + hashlib.sha256(b"print('evil!')\n").hexdigest()
    data2 = json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    canonical = json.dumps(
        {
            "data": d,
            "seq": row[0],
            "stream": row[1],
            "timestamp": row[4],
            "type": row[3],
            "version": row[2],
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    new_hash = hashlib.sha256(bytes.fromhex(prev) + canonical).hexdigest()
    dst.execute("DROP TRIGGER IF EXISTS events_no_update")  # the audit's open made it again
    dst.execute("UPDATE events SET data = ?, hash = ? WHERE seq = ?", (data2, new_hash, seq))
    dst.commit()
    dst.close()
    rehashed = shelby("audit", "j1", "--db", str(copy))
    assert rehashed.returncode == 1
    assert f"event seq {seq} (ScriptUploaded): its inclusion proof" in rehashed.stderr


def test_server_makes_an_owner_only_key_or_uses_the_operators(
    server_factory: Any, tmp_path: Path
) -> None:
    """At first start the key is made beside the database with mode 0600; with
    SHELBY_SIGNING_KEY the operator's OpenSSL key is the one published."""
    made = server_factory("made")
    key_file = made.data_dir / "signing-key.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600
    op_key = tmp_path / "operator.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(op_key)], check=True)
    der = subprocess.run(
        ["openssl", "pkey", "-in", str(op_key), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    given = server_factory("given", env={"SHELBY_SIGNING_KEY": str(op_key)})
    with given.client() as c:
        published = base64.b64decode(_get(c, "/api/audit/public-key")["publicKey"])
    assert published == der[-32:]  # an Ed25519 SPKI ends with the raw key
    assert not (given.data_dir / "signing-key.pem").exists()


def test_db_mode_verifies_and_exports_with_the_data_directorys_key(
    shelby_server: ServerProcess, tmp_path: Path
) -> None:
    """`shelby audit --db` proves the job from the local file, accepts a checkpoint the
    server signed, and exports the same statement the server attests."""
    run_job(shelby_server, "j1")
    env = {"SHELBY_ADMIN_TOKEN": shelby_server.admin_token}
    saved = tmp_path / "cp.txt"
    served = tmp_path / "served.json"
    r = shelby(
        "audit",
        "j1",
        "--server",
        shelby_server.url,
        "--save-checkpoint",
        str(saved),
        "--export",
        str(served),
        env=env,
    )
    assert r.returncode == 0, r.stderr
    local = tmp_path / "local.json"
    r = shelby(
        "audit",
        "j1",
        "--db",
        str(shelby_server.db),
        "--checkpoint",
        str(saved),
        "--export",
        str(local),
    )
    assert r.returncode == 0, r.stderr
    assert "checkpoint signed by" in r.stdout and "only grew" in r.stdout
    a, b = json.loads(served.read_text()), json.loads(local.read_text())
    assert base64.b64decode(a["payload"]) == base64.b64decode(b["payload"])

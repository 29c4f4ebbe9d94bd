"""``shelby audit``'s procedure: prove one job's whole provenance from its own events,
a signed checkpoint and one inclusion proof per event, without the rest of the log.

It runs against a ``Source``: the HTTP API of a server (``HttpSource``, trusting none
of its answers) or a local database (``StoreSource``). Every check that fails raises
``AuditFailure`` naming the event (its ``seq``) where there is one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from typing import Any, Protocol

import httpx
import msgspec

from shelby.audit import proofs
from shelby.audit.attestation import statement
from shelby.audit.checkpoint import Checkpoint, NoteError, open_checkpoint, sign_checkpoint
from shelby.audit.dsse import EnvelopeError, open_envelope
from shelby.audit.history import read_history
from shelby.audit.keys import PublicKey, SigningKey, parse_public_key
from shelby.audit.verification import (
    AuditEvent,
    event_hash,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from shelby.events.store import ArchiveUnavailable, EventStore
from shelby.events.types import job_stream

__all__ = [
    "AuditFailure",
    "HttpSource",
    "Report",
    "Source",
    "SourceError",
    "StoreSource",
    "audit_job",
    "check_attestation",
]

PROOF_CONCURRENCY = 8
MAX_RATE_LIMIT_RETRIES = 60


class AuditFailure(Exception):
    """Something did not verify: the audit's verdict, not an error of the tool."""

    def __init__(self, reason: str, seq: int | None = None, event_type: str | None = None):
        where = f"event seq {seq}" + (f" ({event_type})" if event_type else "") if seq else ""
        super().__init__(f"{where}: {reason}" if where else reason)
        self.seq = seq
        self.reason = reason


class SourceError(Exception):
    """The source could not be asked (unreachable, refused the token, no such job)."""


class Source(Protocol):
    async def public_key(self) -> PublicKey | None:
        """The key the source says signs its checkpoints; ``None`` if it has none."""
        ...

    async def signed_checkpoint(self) -> str | None:
        """A fresh signed note; ``None`` from a source that cannot sign."""
        ...

    async def tree_head(self) -> tuple[int, bytes]: ...

    async def job_events(self, job_id: str) -> list[AuditEvent]: ...

    async def inclusion(self, seq: int, tree_size: int) -> list[bytes]: ...

    async def consistency(self, first: int, second: int) -> list[bytes]: ...


class Report(msgspec.Struct, kw_only=True):
    job_id: str
    events: list[AuditEvent]
    checkpoint: Checkpoint
    note: str | None  # the signed checkpoint the proofs were checked against
    key: PublicKey | None
    consistent_from: int | None = None  # the saved checkpoint's size, when one was given


def _check_events(job_id: str, events: Sequence[AuditEvent]) -> None:
    """The job's stream, whole from version 1, each hash recomputed from its fields."""
    stream = job_stream(job_id)
    if not events:
        raise AuditFailure(f"the source has no events for job {job_id}")
    previous_seq = 0
    for version, e in enumerate(events, start=1):
        if e.stream != stream:
            raise AuditFailure(f"belongs to stream {e.stream!r}, not {stream!r}", e.seq, e.type)
        if e.version != version:
            raise AuditFailure(
                f"is version {e.version} where version {version} belongs: the job's"
                " history has a gap",
                e.seq,
                e.type,
            )
        if e.seq <= previous_seq:
            raise AuditFailure("is out of log order", e.seq, e.type)
        previous_seq = e.seq
        if event_hash(e) != e.hash:
            raise AuditFailure("its hash does not match its fields", e.seq, e.type)
        if e.type == "ScriptUploaded":
            script = e.data.get("script")
            digest = "sha256:" + hashlib.sha256(str(script).encode()).hexdigest()
            if e.data.get("scriptHash") != digest:
                raise AuditFailure("scriptHash is not the SHA-256 of the script", e.seq, e.type)
    if events[0].type != "JobCreated":
        raise AuditFailure("the job's history does not start with JobCreated", events[0].seq)


async def _prove_inclusion(source: Source, events: Sequence[AuditEvent], cp: Checkpoint) -> None:
    gate = asyncio.Semaphore(PROOF_CONCURRENCY)

    async def one(e: AuditEvent) -> None:
        if e.seq > cp.size:
            raise AuditFailure(f"is beyond the checkpoint's {cp.size} events", e.seq, e.type)
        async with gate:
            path = await source.inclusion(e.seq, cp.size)
        leaf = leaf_hash(bytes.fromhex(e.hash))
        if not verify_inclusion(e.seq - 1, cp.size, leaf, path, cp.root):
            raise AuditFailure(
                "its inclusion proof does not lead to the checkpoint's root", e.seq, e.type
            )

    results = await asyncio.gather(*(one(e) for e in events), return_exceptions=True)
    for result in results:  # the first failure in log order, whatever finished first
        if isinstance(result, BaseException):
            raise result


async def audit_job(
    source: Source,
    job_id: str,
    *,
    pinned: PublicKey | None = None,
    saved_checkpoint: str | None = None,
) -> Report:
    key = pinned or await source.public_key()
    events = await source.job_events(job_id)
    # The checkpoint is taken after the events, so it covers every one of them.
    note = await source.signed_checkpoint()
    if note is not None:
        if key is None:
            raise AuditFailure("no public key to check the checkpoint's signature with")
        try:
            cp = open_checkpoint(note, key)
        except NoteError as exc:
            raise AuditFailure(f"the checkpoint does not verify: {exc}") from None
    else:
        size, root = await source.tree_head()
        cp = Checkpoint(origin="local", size=size, root=root)
    _check_events(job_id, events)
    await _prove_inclusion(source, events, cp)
    report = Report(job_id=job_id, events=events, checkpoint=cp, note=note, key=key)
    if saved_checkpoint is not None:
        report.consistent_from = await _prove_growth(source, saved_checkpoint, cp, key)
    return report


async def _prove_growth(source: Source, saved: str, cp: Checkpoint, key: PublicKey | None) -> int:
    """That the log the saved checkpoint saw is a prefix of today's."""
    if key is None:
        raise AuditFailure("no public key to check the saved checkpoint's signature with")
    try:
        old = open_checkpoint(saved, key)
    except NoteError as exc:
        raise AuditFailure(f"the saved checkpoint does not verify: {exc}") from None
    if cp.origin != "local" and old.origin != cp.origin:
        raise AuditFailure(f"the saved checkpoint is of the log {old.origin!r}, not {cp.origin!r}")
    if old.size > cp.size:
        raise AuditFailure(
            f"the log shrank: the saved checkpoint has {old.size} events, now {cp.size}"
        )
    path = await source.consistency(old.size, cp.size)
    if not verify_consistency(old.size, cp.size, old.root, cp.root, path):
        raise AuditFailure(
            f"the log of {cp.size} events does not extend the saved one of {old.size}:"
            " history was rewritten"
        )
    return old.size


def check_attestation(envelope: dict[str, Any], report: Report) -> dict[str, Any]:
    """The server's attestation, once its signature verifies with the pinned key and its
    statement is the one the verified events give; returns the statement."""
    if report.key is None:
        raise AuditFailure("no public key to check the attestation's signature with")
    try:
        body = open_envelope(envelope, report.key)
    except EnvelopeError as exc:
        raise AuditFailure(f"the attestation does not verify: {exc}") from None
    got = json.loads(body)
    expected = statement(read_history(report.job_id, report.events))
    if got != expected:
        raise AuditFailure("the attestation does not match the verified events")
    return expected


# --- sources ----------------------------------------------------------------------------


def _hexes(values: Any) -> list[bytes]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise AuditFailure("the server's proof is not a list of hex strings")
    try:
        return [bytes.fromhex(v) for v in values]
    except ValueError:
        raise AuditFailure("the server's proof is not a list of hex strings") from None


class HttpSource:
    """A server's audit endpoints, with the admin token. Nothing it says is trusted:
    the auditor checks every answer."""

    def __init__(self, server: str, token: str | None, *, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.server = server.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.server, headers=headers, timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _get(self, path: str, **kwargs: Any) -> httpx.Response:
        for _ in range(MAX_RATE_LIMIT_RETRIES):
            try:
                r = await self._http.get(path, **kwargs)
            except httpx.TransportError as exc:
                raise SourceError(f"cannot reach {self.server}: {exc}") from exc
            if r.status_code != 429:
                break
            # The server rate-limits per token; an audit asks for a proof per event.
            await asyncio.sleep(min(float(r.headers.get("Retry-After", "1") or 1), 5.0))
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            hint = " (set SHELBY_ADMIN_TOKEN or --token)" if r.status_code == 401 else ""
            raise SourceError(f"GET {path}: {r.status_code} {detail}{hint}")
        return r

    async def _json(self, path: str, **kwargs: Any) -> Any:
        r = await self._get(path, **kwargs)
        try:
            return r.json()
        except ValueError:
            raise SourceError(f"GET {path}: the answer is not JSON") from None

    async def public_key(self) -> PublicKey:
        body = await self._json("/api/audit/public-key")
        return parse_public_key(str(body.get("verifierKey", "")))

    async def signed_checkpoint(self) -> str:
        r = await self._get("/api/audit/checkpoint", headers={"Accept": "text/plain"})
        return r.text

    async def tree_head(self) -> tuple[int, bytes]:
        raise SourceError("a server's tree head comes only as a signed checkpoint")

    async def job_events(self, job_id: str) -> list[AuditEvent]:
        body = await self._json(f"/api/audit/jobs/{job_id}")
        try:
            return msgspec.convert(body.get("events"), list[AuditEvent])
        except msgspec.ValidationError as exc:
            raise AuditFailure(f"the server's events are malformed: {exc}") from None

    async def inclusion(self, seq: int, tree_size: int) -> list[bytes]:
        body = await self._json(
            "/api/audit/proof/inclusion", params={"seq": seq, "treeSize": tree_size}
        )
        return _hexes(body.get("auditPath"))

    async def consistency(self, first: int, second: int) -> list[bytes]:
        body = await self._json(
            "/api/audit/proof/consistency", params={"from": first, "to": second}
        )
        return _hexes(body.get("proof"))

    async def attestation(self, job_id: str) -> dict[str, Any]:
        body = await self._json(f"/api/audit/jobs/{job_id}/attestation")
        if not isinstance(body, dict):
            raise AuditFailure("the server's attestation is not a DSSE envelope")
        return body


class StoreSource:
    """A local database (``--db``): proofs come from its stored tree; checkpoints are
    signed with the server's key file when it is readable here."""

    def __init__(self, store: EventStore, key: SigningKey | None, now: float) -> None:
        self.store = store
        self.key = key
        self.now = now

    async def public_key(self) -> PublicKey | None:
        return None if self.key is None else self.key.public

    async def signed_checkpoint(self) -> str | None:
        if self.key is None:
            return None
        head = await proofs.tree_head(self.store)
        cp = Checkpoint(
            origin=self.key.name, size=head.size, root=head.root, timestamp=int(self.now)
        )
        return sign_checkpoint(cp, self.key)

    async def tree_head(self) -> tuple[int, bytes]:
        head = await proofs.tree_head(self.store)
        return head.size, head.root

    async def job_events(self, job_id: str) -> list[AuditEvent]:
        try:
            rows = await self.store.read_raw_stream(job_stream(job_id))
        except ArchiveUnavailable as exc:
            raise AuditFailure(f"the job's archived events cannot be read: {exc}") from None
        return [
            AuditEvent(
                seq=seq,
                stream=stream,
                version=version,
                type=type_,
                timestamp=timestamp,
                data=json.loads(data),
                prev_hash=prev_hash,
                hash=hash_,
            )
            for seq, stream, version, type_, timestamp, data, prev_hash, hash_ in rows
        ]

    async def inclusion(self, seq: int, tree_size: int) -> list[bytes]:
        return (await proofs.inclusion(self.store, seq, tree_size)).path

    async def consistency(self, first: int, second: int) -> list[bytes]:
        try:
            return (await proofs.consistency(self.store, first, second)).path
        except proofs.OutOfRange as exc:
            raise AuditFailure(str(exc)) from None

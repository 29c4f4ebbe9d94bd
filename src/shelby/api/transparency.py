"""The transparency endpoints: the server's public key, signed checkpoints of the log's
Merkle tree, inclusion and consistency proofs, and each job's attestation (in-toto /
SLSA in DSSE) and PROV-JSON view. docs/provenance.md shows an auditor using them.

Like the raw-log endpoints these read the log itself, never a projection, so a deleted
job's attestation is still served from the history its tombstone left in place.
"""

from __future__ import annotations

import base64
import weakref
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta
from starlette.routing import Route

from shelby.api.audit import job_rows
from shelby.api.auth import Access
from shelby.api.endpoint import Call, Endpoint, Raw, endpoint_route
from shelby.api.errors import ApiError
from shelby.api.schemas import MAX_INT64
from shelby.audit import proofs
from shelby.audit.attestation import NoModel, attest
from shelby.audit.checkpoint import Checkpoint, sign_checkpoint
from shelby.audit.dsse import Envelope
from shelby.audit.history import JobHistory, read_history
from shelby.audit.keys import KEY_FILE_NAME, SigningKey, load_or_create
from shelby.audit.prov import prov_document
from shelby.audit.verification import AuditEvent
from shelby.service import Service
from shelby.settings import data_dir_of

__all__ = ["ENDPOINTS", "routes", "signing_key", "signing_key_path"]

Size = Annotated[int, Meta(ge=0, le=MAX_INT64)]
Position = Annotated[int, Meta(ge=1, le=MAX_INT64)]


class _Wire(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    pass


class PublicKeyView(_Wire, frozen=True):
    algorithm: str
    key_name: str  # the signed-note key name, also the checkpoints' origin
    key_hash: str  # hex of the 4-byte signed-note key hash
    key_id: str  # the DSSE keyid: hex SHA-256 of the raw key
    public_key: str  # base64 of the 32 raw bytes
    verifier_key: str  # name+hash+base64(0x01 ‖ key), the signed-note verifier key
    pem: str


class CheckpointView(_Wire, frozen=True):
    origin: str
    tree_size: int
    root_hash: str  # hex
    timestamp: int
    note: str  # the signed note, exactly as served as text/plain


class InclusionQuery(_Wire, frozen=True):
    seq: Position
    tree_size: Position | None = None  # default: the whole log


class InclusionView(_Wire, frozen=True):
    seq: int
    leaf_index: int
    tree_size: int
    root_hash: str
    event_hash: str  # the leaf's input: the event's chain hash
    audit_path: list[str]


class ConsistencyQuery(msgspec.Struct, frozen=True, kw_only=True):
    first: Size = msgspec.field(name="from")
    second: Size | None = msgspec.field(default=None, name="to")  # default: the whole log


class ConsistencyView(msgspec.Struct, frozen=True, kw_only=True):
    first: int = msgspec.field(name="from")
    second: int = msgspec.field(name="to")
    proof: list[str]


# --- the key ----------------------------------------------------------------------------

_keys: weakref.WeakKeyDictionary[Service, SigningKey] = weakref.WeakKeyDictionary()


def signing_key_path(service: Service) -> tuple[Path, bool]:
    """Where the key is, and whether the server may create it there: an operator's
    key file (``--signing-key`` / ``SHELBY_SIGNING_KEY``) must exist already."""
    if service.settings.signing_key:
        return Path(service.settings.signing_key), False
    return data_dir_of(service.settings.db) / KEY_FILE_NAME, True


def signing_key(service: Service) -> SigningKey:
    """The server's key, loaded (or made, at first start) once per service."""
    key = _keys.get(service)
    if key is None:
        path, create = signing_key_path(service)
        try:
            key = load_or_create(path, create=create)
        except FileNotFoundError:
            raise ApiError(500, f"the signing key file {path} does not exist") from None
        _keys[service] = key
    return key


# --- endpoints --------------------------------------------------------------------------


async def public_key(call: Call) -> PublicKeyView:
    pub = signing_key(call.service).public
    return PublicKeyView(
        algorithm="Ed25519",
        key_name=pub.name,
        key_hash=pub.hash.hex(),
        key_id=pub.key_id,
        public_key=base64.b64encode(pub.raw).decode(),
        verifier_key=pub.verifier_key,
        pem=pub.pem,
    )


def _wants_json(call: Call) -> bool:
    for name, value in call.scope["headers"]:
        if name == b"accept":
            return b"application/json" in value
    return False


async def checkpoint(call: Call) -> CheckpointView | Raw:
    key = signing_key(call.service)
    head = await proofs.tree_head(call.service.store)
    cp = Checkpoint(
        origin=key.name, size=head.size, root=head.root, timestamp=int(call.service.now())
    )
    note = sign_checkpoint(cp, key)
    if not _wants_json(call):
        return Raw(note.encode(), "text/plain; charset=utf-8")
    return CheckpointView(
        origin=cp.origin,
        tree_size=cp.size,
        root_hash=cp.root.hex(),
        timestamp=cp.timestamp or 0,
        note=note,
    )


def _out_of_range(exc: proofs.OutOfRange) -> ApiError:
    return ApiError(404, str(exc))


async def inclusion_proof(call: Call) -> InclusionView:
    q: InclusionQuery = call.query
    if q.tree_size is not None and q.seq > q.tree_size:
        raise ApiError(422, f"seq: event {q.seq} is not in a tree of {q.tree_size} events")
    try:
        p = await proofs.inclusion(call.service.store, q.seq, q.tree_size)
    except proofs.OutOfRange as exc:
        raise _out_of_range(exc) from None
    return InclusionView(
        seq=p.seq,
        leaf_index=p.leaf_index,
        tree_size=p.tree_size,
        root_hash=p.root.hex(),
        event_hash=p.leaf.hex(),
        audit_path=[h.hex() for h in p.path],
    )


async def consistency_proof(call: Call) -> ConsistencyView:
    q: ConsistencyQuery = call.query
    if q.second is not None and q.first > q.second:
        raise ApiError(422, f"from: {q.first} is beyond to ({q.second})")
    try:
        p = await proofs.consistency(call.service.store, q.first, q.second)
    except proofs.OutOfRange as exc:
        raise _out_of_range(exc) from None
    return ConsistencyView(first=p.first, second=p.second, proof=[h.hex() for h in p.path])


async def _history(call: Call) -> JobHistory:
    job_id = call.params["job_id"]
    rows = await job_rows(call.service.store, job_id)
    events = [
        AuditEvent(
            seq=seq,
            stream=stream,
            version=version,
            type=type_,
            timestamp=timestamp,
            data=msgspec.json.decode(data),
            prev_hash=prev_hash,
            hash=hash_,
        )
        for seq, stream, version, type_, timestamp, data, prev_hash, hash_ in rows
    ]
    return read_history(job_id, events)


async def attestation(call: Call) -> Envelope:
    history = await _history(call)
    try:
        return attest(history, signing_key(call.service))
    except NoModel as exc:
        raise ApiError(409, str(exc)) from None


async def prov(call: Call) -> dict[str, Any]:
    return prov_document(await _history(call))


ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/audit/public-key",
        Access.ADMIN,
        "The Ed25519 key that signs checkpoints and attestations; pin it",
        public_key,
        PublicKeyView,
        tag="audit",
    ),
    Endpoint(
        "GET",
        "/api/audit/checkpoint",
        Access.ADMIN,
        "A signed checkpoint of the log's Merkle tree (C2SP signed note as text/plain;"
        " this JSON with `Accept: application/json`)",
        checkpoint,
        CheckpointView,
        tag="audit",
        media_types=("text/plain", "application/json"),
    ),
    Endpoint(
        "GET",
        "/api/audit/proof/inclusion",
        Access.ADMIN,
        "RFC 9162 inclusion proof of event `seq` (leaf seq - 1) in the tree of `treeSize`",
        inclusion_proof,
        InclusionView,
        query=InclusionQuery,
        errors=(404, 422),
        tag="audit",
    ),
    Endpoint(
        "GET",
        "/api/audit/proof/consistency",
        Access.ADMIN,
        "RFC 9162 consistency proof between the trees of `from` and `to` events",
        consistency_proof,
        ConsistencyView,
        query=ConsistencyQuery,
        errors=(404, 422),
        tag="audit",
    ),
    Endpoint(
        "GET",
        "/api/audit/jobs/{job_id}/attestation",
        Access.ADMIN,
        "The job's model provenance: in-toto Statement v1 / SLSA Provenance v1 in a DSSE"
        " envelope signed by the server's key (409 until the job finished with a model)",
        attestation,
        Envelope,
        errors=(404, 409),
        tag="audit",
    ),
    Endpoint(
        "GET",
        "/api/audit/jobs/{job_id}/prov",
        Access.ADMIN,
        "The job's provenance chain as a W3C PROV-JSON document",
        prov,
        dict[str, Any],
        errors=(404,),
        tag="audit",
    ),
]


def routes() -> list[Route]:
    return [endpoint_route(ep) for ep in ENDPOINTS]

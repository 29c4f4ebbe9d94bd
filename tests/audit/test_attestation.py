"""Attestations: an in-toto Statement v1 with a SLSA Provenance v1 predicate, built from
a real job's events, in a DSSE envelope whose signature the `cryptography` library
alone verifies; and the PROV-JSON view of the same chain."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from shelby.audit import dsse
from shelby.audit.attestation import NoModel, attest, statement
from shelby.audit.history import read_history
from shelby.audit.keys import SigningKey
from shelby.audit.prov import prov_document
from shelby.events.store import EventStore

from .conftest import DATASET, MODEL, run_job

KEY = SigningKey.generate()


def _pae(payload_type: bytes, body: bytes) -> bytes:
    """DSSE v1's pre-authentication encoding, from the spec's text."""
    return b" ".join(
        [b"DSSEv1", str(len(payload_type)).encode(), payload_type, str(len(body)).encode(), body]
    )


def _verify_with_cryptography_alone(envelope: dict[str, object], raw_public: bytes) -> bytes:
    body = base64.b64decode(str(envelope["payload"]))
    payload_type = str(envelope["payloadType"]).encode()
    (sig,) = envelope["signatures"]  # type: ignore[misc]
    Ed25519PublicKey.from_public_bytes(raw_public).verify(
        base64.b64decode(sig["sig"]), _pae(payload_type, body)
    )
    return body


async def test_statement_names_model_inputs_builder_and_run(store: EventStore) -> None:
    """Subject is the model's sha256; dependencies are dataset, script and requirements
    with their digests; the builder is the node; run details carry every attempt."""
    events = await run_job(store)
    s = statement(read_history("job-1", events))
    assert s["_type"] == "https://in-toto.io/Statement/v1"
    assert s["predicateType"] == "https://slsa.dev/provenance/v1"
    assert s["subject"] == [{"name": "job-1/model", "digest": {"sha256": MODEL[7:]}}]
    build = s["predicate"]["buildDefinition"]
    deps = {d["name"]: d for d in build["resolvedDependencies"]}
    assert deps["dataset"]["uri"] == "https://example.com/mnist.tar"
    assert deps["dataset"]["digest"] == {"sha256": DATASET[7:]}
    assert deps["train.py"]["digest"] == {"sha256": hashlib.sha256(b"print('hi')\n").hexdigest()}
    assert deps["requirements.txt"]["digest"] == {
        "sha256": hashlib.sha256(b"numpy>=1.26\n").hexdigest()
    }
    run = s["predicate"]["runDetails"]
    assert run["builder"] == {"id": "urn:shelby:node:node-b"}
    assert run["metadata"]["invocationId"] == "job-1/attempt-2"
    assert run["metadata"]["startedOn"].endswith("Z")
    attempts = [b["annotations"] for b in run["byproducts"] if b["name"].startswith("attempt-")]
    assert [(a["attempt"], a["nodeId"], a["outcome"]) for a in attempts] == [
        (1, "node-a", "lease-expired"),
        (2, "node-b", "finished"),
    ]
    assert attempts[1]["exitCode"] == 0
    log = next(b for b in run["byproducts"] if b["name"] == "event-log")
    assert [e["hash"] for e in log["annotations"]["events"]] == [e.hash for e in events]
    assert log["digest"] == {"sha256": events[-1].hash}


async def test_envelope_verifies_with_the_cryptography_library_alone(
    store: EventStore,
) -> None:
    """The DSSE signature is Ed25519 over PAE(payloadType, payload), nothing else."""
    events = await run_job(store)
    envelope = json.loads(json.dumps(dsse_dict(attest(read_history("job-1", events), KEY))))
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    body = _verify_with_cryptography_alone(envelope, KEY.public.raw)
    assert json.loads(body) == statement(read_history("job-1", events))


def dsse_dict(env: dsse.Envelope) -> dict[str, object]:
    import msgspec

    return msgspec.to_builtins(env)  # type: ignore[no-any-return]


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_any_changed_byte_of_the_payload_or_signature_fails(data: st.DataObject) -> None:
    """Flipping a bit of the payload, its type or the signature breaks the signature."""
    body = b'{"_type":"https://in-toto.io/Statement/v1"}'
    env = dsse_dict(dsse.sign(body, KEY))
    which = data.draw(st.sampled_from(["payload", "payloadType", "sig"]))
    if which == "sig":
        raw = bytearray(base64.b64decode(env["signatures"][0]["sig"]))  # type: ignore[index]
        i = data.draw(st.integers(0, len(raw) * 8 - 1))
        raw[i // 8] ^= 1 << (i % 8)
        env["signatures"] = [{"sig": base64.b64encode(bytes(raw)).decode(), "keyid": ""}]
    elif which == "payload":
        raw = bytearray(body)
        i = data.draw(st.integers(0, len(raw) * 8 - 1))
        raw[i // 8] ^= 1 << (i % 8)
        env["payload"] = base64.b64encode(bytes(raw)).decode()
    else:
        env["payloadType"] = "application/vnd.in-toto+jsoN"
    with pytest.raises(InvalidSignature):
        _verify_with_cryptography_alone(env, KEY.public.raw)
    with pytest.raises(dsse.EnvelopeError):
        dsse.open_envelope(env, KEY.public)


async def test_a_job_without_a_model_has_no_attestation(store: EventStore) -> None:
    """Nothing is attested until an attempt finished with a model hash."""
    events = await run_job(store)
    unfinished = [e for e in events if e.type != "JobFinished"]
    with pytest.raises(NoModel):
        statement(read_history("job-1", unfinished))


async def test_prov_document_links_model_attempts_nodes_and_events(
    store: EventStore,
) -> None:
    """PROV-JSON: the model was generated by attempt 2, associated with node-b, which
    used the dataset and script; each event entity carries its chain hash."""
    events = await run_job(store)
    doc = prov_document(read_history("job-1", events))
    model = f"shelby:model/{MODEL[7:]}"
    assert doc["entity"][model]["shelby:hash"] == MODEL
    gen = list(doc["wasGeneratedBy"].values())
    assert gen == [{"prov:entity": model, "prov:activity": "shelby:job/job-1/attempt/2"}]
    assoc = {(a["prov:activity"], a["prov:agent"]) for a in doc["wasAssociatedWith"].values()}
    assert ("shelby:job/job-1/attempt/2", "shelby:node/node-b") in assoc
    used = {(u["prov:activity"], u["prov:entity"]) for u in doc["used"].values()}
    assert ("shelby:job/job-1/attempt/2", "shelby:job/job-1/dataset") in used
    assert ("shelby:job/job-1/attempt/2", "shelby:job/job-1/script") in used
    for e in events:
        assert doc["entity"][f"shelby:event/{e.seq}"]["shelby:hash"] == e.hash
    assert json.loads(json.dumps(doc)) == doc

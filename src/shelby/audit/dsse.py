"""DSSE envelopes (github.com/secure-systems-lab/dsse, protocol v1): a payload, its
type, and signatures over the pre-authentication encoding of the two::

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

where ``LEN`` is the byte length in ASCII decimal. Signing PAE rather than the payload
binds the type, so a signature over one kind of document cannot be replayed as another.
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec

from shelby.audit.keys import PublicKey, SigningKey

__all__ = ["IN_TOTO", "Envelope", "EnvelopeError", "Signature", "open_envelope", "pae", "sign"]

IN_TOTO = "application/vnd.in-toto+json"


class EnvelopeError(ValueError):
    """Malformed, or not signed by the expected key."""


class Signature(msgspec.Struct, frozen=True):
    sig: str  # base64
    keyid: str = ""


class Envelope(msgspec.Struct, frozen=True, rename="camel"):
    payload: str  # base64 of the payload bytes
    payload_type: str
    signatures: list[Signature]


def pae(payload_type: str, body: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(body), body)


def sign(body: bytes, key: SigningKey, payload_type: str = IN_TOTO) -> Envelope:
    signature = key.sign(pae(payload_type, body))
    return Envelope(
        payload=base64.b64encode(body).decode(),
        payload_type=payload_type,
        signatures=[Signature(base64.b64encode(signature).decode(), key.public.key_id)],
    )


def open_envelope(envelope: Envelope | dict[str, Any], key: PublicKey) -> bytes:
    """The payload, once a signature by ``key`` over its PAE verifies."""
    try:
        env = envelope if isinstance(envelope, Envelope) else msgspec.convert(envelope, Envelope)
        body = base64.b64decode(env.payload, validate=True)
    except (msgspec.ValidationError, ValueError) as exc:
        raise EnvelopeError(f"not a DSSE envelope: {exc}") from exc
    message = pae(env.payload_type, body)
    for s in env.signatures:
        try:
            raw = base64.b64decode(s.sig, validate=True)
        except ValueError:
            continue
        if key.verify(raw, message):
            return body
    raise EnvelopeError("no signature in the envelope verifies with the pinned key")

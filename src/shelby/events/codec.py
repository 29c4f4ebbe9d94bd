"""Canonical bytes and the hash chain.

The layout is deliberately the one Python's standard library writes, so that an
auditor can recompute every hash with ``json`` and ``hashlib`` alone (README,
"The event log's byte layout")::

    canonical = json.dumps({"data": data, "seq": seq, "stream": stream,
                            "timestamp": timestamp, "type": type, "version": version},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    hash = sha256(bytes.fromhex(prev_hash) + canonical.encode("utf-8")).hexdigest()

msgspec writes floats differently from ``json`` (``1e-05`` vs ``0.00001``), so the
canonical text is made by ``json.dumps`` even though msgspec decodes it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Union

import msgspec

from shelby.events.types import EVENT_TYPES, Event

__all__ = [
    "GENESIS_HASH",
    "chain_hash",
    "decode_event",
    "encode_data",
    "envelope_bytes",
    "to_data",
]

GENESIS_HASH = "0" * 64

_dumps = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode
# A tagged union decodes straight into the right type, keyed by the "type" field.
_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(Union[tuple(EVENT_TYPES.values())])  # noqa: UP007


def to_data(event: Event) -> dict[str, Any]:
    """The event as plain JSON-able data, the ``data`` of the audit endpoints."""
    data: dict[str, Any] = msgspec.to_builtins(event)
    return data


def encode_data(event: Event) -> str:
    """The canonical text of an event's ``data`` column."""
    return _dumps(msgspec.to_builtins(event))


def decode_event(data: str | bytes) -> Event:
    event: Event = _decoder.decode(data)
    return event


def envelope_bytes(
    *, seq: int, stream: str, version: int, type: str, timestamp: float, data: str
) -> bytes:
    """The canonical bytes of one log row; ``data`` is already canonical text.

    Equal to ``json.dumps`` of the whole envelope (see the module docstring), built
    by concatenation so that verifying a log never re-parses its data.
    """
    return (
        f'{{"data":{data},"seq":{seq},"stream":{_dumps(stream)},'
        f'"timestamp":{float(timestamp)!r},"type":{_dumps(type)},"version":{version}}}'
    ).encode()


def chain_hash(prev_hash: str, canonical: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical).hexdigest()

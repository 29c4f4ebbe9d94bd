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
import json.encoder
from collections.abc import Callable, Iterable
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

_quote = json.encoder.encode_basestring  # what json.dumps does with a str, ensure_ascii=False

_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_dumps = _json.encode
# ``JSONEncoder.encode`` builds json's C encoder anew on every call, a third of the
# cost of encoding an event's data on the append path; this is that same encoder,
# with the same settings, built once. (No circular check: ``to_builtins`` output is a
# tree.) A string's JSON form is json's own ``encode_basestring``, as ``encode`` does.
_make_encoder: Callable[..., Callable[[Any, int], Iterable[str]]] | None = getattr(
    json.encoder, "c_make_encoder", None
)
_iterencode = (
    None
    if _make_encoder is None
    else _make_encoder(None, _json.default, _quote, None, ":", ",", True, False, False)
)
# A tagged union decodes straight into the right type, keyed by the "type" field.
_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(Union[tuple(EVENT_TYPES.values())])  # noqa: UP007


def to_data(event: Event) -> dict[str, Any]:
    """The event as plain JSON-able data, the ``data`` of the audit endpoints."""
    data: dict[str, Any] = msgspec.to_builtins(event)
    return data


def encode_data(event: Event) -> str:
    """The canonical text of an event's ``data`` column."""
    data = msgspec.to_builtins(event)
    if _iterencode is None:
        return _dumps(data)
    return "".join(_iterencode(data, 0))


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
        f'{{"data":{data},"seq":{seq},"stream":{_quote(stream)},'
        f'"timestamp":{float(timestamp)!r},"type":{_quote(type)},"version":{version}}}'
    ).encode()


def chain_hash(prev_hash: str, canonical: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical).hexdigest()

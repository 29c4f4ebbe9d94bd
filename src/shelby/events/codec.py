"""Canonical bytes and the hash chain.

The layout is deliberately the one Python's standard library writes, so that an
auditor can recompute every hash with ``json`` and ``hashlib`` alone (README,
"The event log's byte layout")::

    canonical = json.dumps({"data": data, "seq": seq, "stream": stream,
                            "timestamp": timestamp, "type": type, "version": version},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    hash = sha256(bytes.fromhex(prev_hash) + canonical.encode("utf-8")).hexdigest()

msgspec writes some floats differently from ``json`` (``0.00001`` for ``1e-05``,
``1e16`` for ``1e+16``) and NaN as ``null`` where ``json`` refuses it, so ``json.dumps``
defines the canonical text. msgspec writes it first, five times faster, and its text is
kept only where it cannot differ (``encode_data``).
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
    "chain_digest",
    "chain_hash",
    "decode_event",
    "encode_data",
    "envelope_around_seq",
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
# msgspec's text is json's but for floats in exponent form (``1e16``, ``1e-05``), floats
# below 1e-4, which json writes in exponent form and msgspec as ``0.0000…``, and NaN and
# infinities, which msgspec writes as ``null``: its digits are the shortest that read back
# (those of ``repr``), keys and sets sort alike (json's road sorts sets first, below) and
# strings escape alike (tests/events/test_encoding.py holds it against json.dumps). A
# text with none of these patterns (a string that merely contains one only costs the
# slower road) is json's text. Three substring searches, not one regular expression: a
# third of the time.
_fast = msgspec.json.Encoder(order="sorted")
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789E", b"000000000e")


def _may_differ(text: bytes) -> bool:
    return b"0e" in text.translate(_DIGITS_AS_ZERO) or b"0.0000" in text or b"null" in text


# A tagged union decodes straight into the right type, keyed by the "type" field.
_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(Union[tuple(EVENT_TYPES.values())])  # noqa: UP007


def to_data(event: Event) -> dict[str, Any]:
    """The event as plain JSON-able data, the ``data`` of the audit endpoints."""
    data: dict[str, Any] = msgspec.to_builtins(event)
    return data


def encode_data(event: Event) -> str:
    """The canonical text of an event's ``data`` column."""
    try:
        fast = _fast.encode(event)
    except (msgspec.EncodeError, UnicodeEncodeError, TypeError, OverflowError):
        pass  # json's road raises the error the caller expects, or writes it after all
    else:
        if not _may_differ(fast):
            return fast.decode()
    # Sorted as msgspec's road sorts them: dict keys (json sorts those again) and sets,
    # which would otherwise come out in an order that changes from process to process.
    data = msgspec.to_builtins(event, order="sorted")
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
    before, after = envelope_around_seq(
        stream=stream, version=version, type=type, timestamp=timestamp, data=data
    )
    return b"%b%d%b" % (before, seq, after)


def envelope_around_seq(
    *, stream: str, version: int, type: str, timestamp: float, data: str
) -> tuple[bytes, bytes]:
    """``envelope_bytes`` but for ``seq``: the bytes before it and after it. An append
    makes them on the caller's side; the writer, which alone knows ``seq``, joins them.
    Raises ``UnicodeEncodeError`` for text that is not valid Unicode (a lone surrogate)."""
    return (
        f'{{"data":{data},"seq":'.encode(),
        f',"stream":{_quote(stream)},"timestamp":{float(timestamp)!r},'
        f'"type":{_quote(type)},"version":{version}}}'.encode(),
    )


def chain_hash(prev_hash: str, canonical: bytes) -> str:
    return chain_digest(bytes.fromhex(prev_hash), canonical).hex()


def chain_digest(prev: bytes, canonical: bytes) -> bytes:
    """``chain_hash`` on the digests' bytes, for a writer chaining many events."""
    return hashlib.sha256(prev + canonical).digest()

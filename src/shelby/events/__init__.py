"""What happened: event types, their canonical bytes and hashes, and the stores."""

from shelby.events.codec import GENESIS_HASH, chain_hash, decode_event, encode_data, envelope_bytes
from shelby.events.store import (
    ArchiveUnavailable,
    ConcurrencyError,
    EventStore,
    Head,
    Projection,
    Recorded,
    Statement,
    StoreError,
    StoreUnavailable,
)
from shelby.events.types import *  # noqa: F403
from shelby.events.types import __all__ as _types_all

__all__ = [
    "GENESIS_HASH",
    "ArchiveUnavailable",
    "ConcurrencyError",
    "EventStore",
    "Head",
    "Projection",
    "Recorded",
    "Statement",
    "StoreError",
    "StoreUnavailable",
    "chain_hash",
    "decode_event",
    "encode_data",
    "envelope_bytes",
    *_types_all,
]

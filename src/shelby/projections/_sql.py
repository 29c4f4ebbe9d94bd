"""What every projection module shares: JSON columns and the statement type."""

from __future__ import annotations

from typing import Any

import msgspec

from shelby.events.store import Statement
from shelby.events.types import Event

__all__ = ["Statement", "event_names", "from_json", "to_json"]

# Sorted keys: live, an event's dicts keep the caller's key order, but replayed from the
# log they come back in the canonical (sorted) order; both must write the same rows.
_encoder = msgspec.json.Encoder(order="sorted")


def to_json(value: Any) -> str:
    return _encoder.encode(value).decode()


def from_json(text: str | None) -> Any:
    return None if text is None else msgspec.json.decode(text)


def event_names(*types: type[Event]) -> frozenset[str]:
    """A projection's ``handles``, named by the event classes themselves."""
    return frozenset(t.__name__ for t in types)

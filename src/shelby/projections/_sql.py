"""What every projection module shares: JSON columns and the statement type."""

from __future__ import annotations

from typing import Any

import msgspec

from shelby.events.store import Statement

__all__ = ["Statement", "from_json", "to_json"]

_encoder = msgspec.json.Encoder()


def to_json(value: Any) -> str:
    return _encoder.encode(value).decode()


def from_json(text: str | None) -> Any:
    return None if text is None else msgspec.json.decode(text)

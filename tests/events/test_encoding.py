"""``encode_data`` is ``json.dumps`` with the canonical settings, on both of its roads:
json's C encoder built once (the usual one), and ``JSONEncoder.encode`` (where the C
encoder is missing)."""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelby.events import codec
from shelby.events.types import JobCreated

from .test_codec import CANONICAL, json_values


def _reference(event: JobCreated) -> str:
    return json.dumps(msgspec.to_builtins(event), allow_nan=False, **CANONICAL)  # type: ignore[arg-type]


@pytest.mark.parametrize("c_encoder", [True, False], ids=["c-encoder", "fallback"])
@settings(max_examples=150, deadline=None)
@given(meta=st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_encode_data_is_the_canonical_json(c_encoder: bool, meta: dict[str, Any]) -> None:
    event = JobCreated(job_id="j", meta=meta)
    with pytest.MonkeyPatch.context() as patch:
        if not c_encoder:
            patch.setattr(codec, "_iterencode", None)
        assert codec.encode_data(event) == _reference(event)


@pytest.mark.parametrize("c_encoder", [True, False], ids=["c-encoder", "fallback"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_float_json_cannot_write_is_refused(
    c_encoder: bool, value: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not c_encoder:
        monkeypatch.setattr(codec, "_iterencode", None)
    with pytest.raises(ValueError, match="Out of range float"):
        codec.encode_data(JobCreated(job_id="j", meta={"x": [value]}))

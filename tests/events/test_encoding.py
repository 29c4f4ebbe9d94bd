"""``encode_data`` is ``json.dumps`` with the canonical settings, on each of its roads:
msgspec's encoder where its text cannot differ (the usual one), json's C encoder built
once, and ``JSONEncoder.encode`` (where the C encoder is missing)."""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelby.events import codec
from shelby.events.types import (
    Event,
    JobCreated,
    LogLine,
    LogLinesAppended,
    NodeHeartbeat,
    Resources,
)

from ._helpers import CANONICAL, json_values


def _reference(event: Event) -> str:
    data = msgspec.to_builtins(event, order="sorted")  # sets sorted: json has no order for them
    return json.dumps(data, allow_nan=False, **CANONICAL)  # type: ignore[arg-type]


ROADS = ["msgspec", "c-encoder", "fallback"]


def take(road: str, patch: pytest.MonkeyPatch) -> None:
    """Send ``encode_data`` down one road: json's roads by refusing msgspec's text."""
    if road != "msgspec":
        patch.setattr(codec, "_may_differ", lambda text: True)
    if road == "fallback":
        patch.setattr(codec, "_iterencode", None)


@pytest.mark.parametrize("road", ROADS)
@settings(max_examples=150, deadline=None)
@given(meta=st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_encode_data_is_the_canonical_json(road: str, meta: dict[str, Any]) -> None:
    """Any JSON in an event's open dict, on each road. (A heartbeat: an event with a
    field left at None, as JobCreated has, always takes json's road.)"""
    event = NodeHeartbeat(node_id="n", specs=meta)
    with pytest.MonkeyPatch.context() as patch:
        take(road, patch)
        assert codec.encode_data(event) == _reference(event)


@settings(max_examples=300, deadline=None)
@given(
    value=json_values,
    small=st.floats(min_value=-1e-4, max_value=1e-4, allow_nan=False),
    big=st.floats(min_value=1e15, max_value=1e300),
    line=st.text(max_size=20),
    stamp=st.floats(allow_nan=False, allow_infinity=False),
)
def test_msgspec_text_is_kept_only_where_it_is_jsons(
    value: Any, small: float, big: float, line: str, stamp: float
) -> None:
    """Whatever the values (floats of every size, any text, nested Structs), msgspec's
    text either equals json's or is one the guard sends down json's road."""
    events = [
        NodeHeartbeat(node_id=line, specs={"v": value, "s": small, "b": big}),
        NodeHeartbeat(node_id="n", specs={"set": {line, "a", "b"}}, running_jobs=[line]),
        # Every optional field set: a null sends the text down json's road unchecked.
        JobCreated(
            job_id="j",
            dataset_name=line,
            dataset_url="https://x",
            dataset_hash="sha256:0",
            runtime_minutes_estimate=big,
            resources=Resources(cpu_count=2, ram_gb=small, gpus=1),
        ),
        LogLinesAppended(
            job_id="j",
            node_id="n",
            attempt=1,
            offset=0,
            lines=[LogLine(line=line, timestamp=stamp)],
        ),
    ]
    for event in events:
        try:
            fast = codec._fast.encode(event)
        except UnicodeEncodeError:
            continue  # a lone surrogate: json's road writes it, and the append refuses it
        if not codec._may_differ(fast):
            assert fast.decode() == _reference(event)


def test_a_heartbeat_takes_msgspecs_road() -> None:
    """The property above holds for the texts msgspec's road keeps; a heartbeat is one."""
    beat = NodeHeartbeat(node_id="n", specs={"cpuUsage": 12.5, "gpuUsage": [87.0]})
    assert not codec._may_differ(codec._fast.encode(beat))


@pytest.mark.parametrize("road", ROADS)
def test_sets_are_written_sorted_on_every_road(road: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """msgspec's road sorts a set; json's sorts it first, so an event's text does not
    depend on which road it took, nor on the process's string hashing."""
    take(road, monkeypatch)
    beat = NodeHeartbeat(node_id="n", specs={"g": {"b", "c", "a"}})
    assert codec.encode_data(beat) == (
        '{"nodeId":"n","runningJobs":[],"specs":{"g":["a","b","c"]},"type":"NodeHeartbeat"}'
    )


@pytest.mark.parametrize("road", ROADS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_float_json_cannot_write_is_refused(
    road: str, value: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    take(road, monkeypatch)
    with pytest.raises(ValueError, match="Out of range float"):
        # msgspec writes these as null; a heartbeat has no other null to hide that.
        codec.encode_data(NodeHeartbeat(node_id="n", specs={"x": [value]}))

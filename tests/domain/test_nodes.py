"""The node decider, given/when/then: ``decide(command, fold(given)) == expected``."""

from __future__ import annotations

import pytest

from shelby.domain import NODES, NotFound
from shelby.domain.nodes import Heartbeat, NodeCommand, NodeState, RegisterNode, ReportNodeUsage
from shelby.events.types import Event, NodeHeartbeat, NodeRegistered, UsageReported

N = "n1"
REGISTERED = NodeRegistered(
    node_id=N,
    name="gpu-box-1",
    token_hash="sha256:first",
    specs={"cpuCount": 16, "gpus": [{"name": "A100", "memoryGB": 80}]},
    labels={"zone": "eu-1"},
    max_concurrent_jobs=2,
)


def state_of(given: list[Event]) -> NodeState:
    return NODES.fold(NODES.initial_state(), given)


def when(given: list[Event], command: NodeCommand) -> list[Event]:
    return NODES.decide(command, state_of(given))


def test_register_records_the_node() -> None:
    """Registering records NodeRegistered with the token's hash, specs and labels."""
    command = RegisterNode(
        node_id=N,
        name="gpu-box-1",
        token_hash="sha256:first",
        specs={"cpuCount": 16, "gpus": [{"name": "A100", "memoryGB": 80}]},
        labels={"zone": "eu-1"},
        max_concurrent_jobs=2,
    )
    assert when([], command) == [REGISTERED]
    assert state_of([REGISTERED]) == NodeState(node_id=N, token_hash="sha256:first")


def test_register_again_replaces_the_token() -> None:
    """Registering an existing node again records the new token hash, revoking the old."""
    command = RegisterNode(node_id=N, name="gpu-box-1", token_hash="sha256:second")
    (event,) = when([REGISTERED], command)
    assert event == NodeRegistered(node_id=N, name="gpu-box-1", token_hash="sha256:second")
    assert state_of([REGISTERED, event]).token_hash == "sha256:second"


def test_every_heartbeat_is_recorded_even_when_unchanged() -> None:
    """Two identical heartbeats are two events: heartbeats are never merged or dropped."""
    beat = Heartbeat(node_id=N, specs={"cpuUsage": 45.2}, running_jobs=["j1"])
    expected = [NodeHeartbeat(node_id=N, specs={"cpuUsage": 45.2}, running_jobs=["j1"])]
    first = when([REGISTERED], beat)
    assert first == expected
    assert when([REGISTERED, *first], beat) == expected


def test_node_usage_without_a_job_is_recorded() -> None:
    """Usage that names no job is recorded on the node's own stream."""
    assert when([REGISTERED], ReportNodeUsage(node_id=N, cpu_seconds=3.0, gpu_seconds=1.0)) == [
        UsageReported(node_id=N, cpu_seconds=3.0, gpu_seconds=1.0)
    ]


@pytest.mark.parametrize(
    "command",
    [Heartbeat(node_id=N), ReportNodeUsage(node_id=N, cpu_seconds=1.0)],
    ids=["heartbeat", "usage"],
)
def test_unregistered_node_is_not_found(command: NodeCommand) -> None:
    """A node that never registered cannot heartbeat or report usage (404)."""
    with pytest.raises(NotFound):
        when([], command)


def test_decide_refuses_what_is_not_a_node_command() -> None:
    """Anything but a node command is a programming error."""
    with pytest.raises(TypeError):
        NODES.decide(object(), state_of([REGISTERED]))  # type: ignore[arg-type]

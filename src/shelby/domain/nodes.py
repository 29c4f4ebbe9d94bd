"""What may happen to a node: register (again) and heartbeat."""

from __future__ import annotations

from typing import Any

import msgspec

from shelby.domain.errors import NotFound
from shelby.events.types import Event, NodeHeartbeat, NodeRegistered, UsageReported

__all__ = [
    "Heartbeat",
    "NodeCommand",
    "NodeState",
    "RegisterNode",
    "ReportNodeUsage",
    "decide",
    "evolve",
    "initial_state",
]


class NodeState(msgspec.Struct, frozen=True, kw_only=True):
    node_id: str | None = None  # None: never registered
    token_hash: str | None = None


def initial_state() -> NodeState:
    return NodeState()


class RegisterNode(msgspec.Struct, frozen=True, kw_only=True):
    node_id: str
    name: str
    token_hash: str  # the API makes the token; only its hash reaches the log
    specs: dict[str, Any] = {}
    labels: dict[str, str] = {}
    max_concurrent_jobs: int = 1


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    node_id: str
    specs: dict[str, Any] = {}
    running_jobs: list[str] = []


class ReportNodeUsage(msgspec.Struct, frozen=True, kw_only=True):
    """Usage that names no job, kept on the node's stream."""

    node_id: str
    cpu_seconds: float | None = None
    wall_seconds: float | None = None
    peak_ram_mb: float | None = None
    gpu_seconds: float | None = None


NodeCommand = RegisterNode | Heartbeat | ReportNodeUsage


def decide(command: NodeCommand, state: NodeState) -> list[Event]:
    match command:
        case RegisterNode():
            return [
                NodeRegistered(
                    node_id=command.node_id,
                    name=command.name,
                    token_hash=command.token_hash,
                    specs=command.specs,
                    labels=command.labels,
                    max_concurrent_jobs=command.max_concurrent_jobs,
                )
            ]
        case Heartbeat():
            if state.node_id is None:
                raise NotFound(f"node {command.node_id!r} is not registered")
            # Every heartbeat is recorded, even an unchanged one: the log is the record of
            # when each node was last heard from.
            return [
                NodeHeartbeat(
                    node_id=command.node_id,
                    specs=command.specs,
                    running_jobs=command.running_jobs,
                )
            ]
        case ReportNodeUsage():
            if state.node_id is None:
                raise NotFound(f"node {command.node_id!r} is not registered")
            return [
                UsageReported(
                    node_id=command.node_id,
                    cpu_seconds=command.cpu_seconds,
                    wall_seconds=command.wall_seconds,
                    peak_ram_mb=command.peak_ram_mb,
                    gpu_seconds=command.gpu_seconds,
                )
            ]
        case _:
            raise TypeError(f"not a node command: {command!r}")


def evolve(state: NodeState, event: Event) -> NodeState:
    match event:
        case NodeRegistered():
            return NodeState(node_id=event.node_id, token_hash=event.token_hash)
        case NodeHeartbeat() | UsageReported():
            return state
        case _:
            raise TypeError(f"not a node event: {event!r}")

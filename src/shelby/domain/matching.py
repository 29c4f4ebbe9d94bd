"""Whether a node can take a job: its specs and labels against the job's asks. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shelby.events.types import Resources

__all__ = ["gpu_count", "node_satisfies"]


def gpu_count(specs: Mapping[str, Any]) -> int:
    """Agents send ``gpus`` as a list of devices; a bare count is accepted too."""
    gpus = specs.get("gpus")
    if isinstance(gpus, list):
        return len(gpus)
    if isinstance(gpus, int | float) and not isinstance(gpus, bool):
        return int(gpus)
    return 0


def _number(specs: Mapping[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = specs.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def node_satisfies(
    resources: Resources | None,
    labels: Mapping[str, str],
    node_specs: Mapping[str, Any],
    node_labels: Mapping[str, str],
) -> bool:
    """True when every resource the job asks for is within the node's specs and every
    label the job names has the same value on the node. A node that does not state a
    spec does not satisfy an ask for it."""
    for key, wanted in labels.items():
        if node_labels.get(key) != wanted:
            return False
    if resources is None:
        return True
    if resources.cpu_count is not None:
        cpus = _number(node_specs, "cpuCount")
        if cpus is None or cpus < resources.cpu_count:
            return False
    if resources.ram_gb is not None:
        ram = _number(node_specs, "totalRAM_GB", "ramGB")
        if ram is None or ram < resources.ram_gb:
            return False
    return not (resources.gpus is not None and gpu_count(node_specs) < resources.gpus)

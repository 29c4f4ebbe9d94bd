"""Whether a node's specs and labels satisfy a job: pure functions."""

from __future__ import annotations

from shelby.domain.matching import gpu_count, node_satisfies
from shelby.events.types import Resources

SPECS = {"cpuCount": 16, "totalRAM_GB": 64.0, "gpus": [{"name": "A100"}, {"name": "A100"}]}


def test_no_asks_fit_any_node() -> None:
    """A job without resources or labels fits a node that states nothing."""
    assert node_satisfies(None, {}, {}, {})


def test_each_resource_is_compared() -> None:
    """cpuCount, ramGB and gpus must each be within the node's specs."""
    assert node_satisfies(Resources(cpu_count=16, ram_gb=64, gpus=2), {}, SPECS, {})
    assert not node_satisfies(Resources(cpu_count=17), {}, SPECS, {})
    assert not node_satisfies(Resources(ram_gb=64.5), {}, SPECS, {})
    assert not node_satisfies(Resources(gpus=3), {}, SPECS, {})


def test_unstated_specs_do_not_satisfy_an_ask() -> None:
    """A node that does not state its RAM cannot take a job that asks for RAM."""
    assert not node_satisfies(Resources(ram_gb=1), {}, {"cpuCount": 4}, {})
    assert node_satisfies(Resources(gpus=0), {}, {}, {})


def test_labels_must_all_match() -> None:
    """Every label of the job must have the same value on the node."""
    assert node_satisfies(None, {"zone": "eu"}, {}, {"zone": "eu", "x": "y"})
    assert not node_satisfies(None, {"zone": "eu"}, {}, {"zone": "us"})
    assert not node_satisfies(None, {"zone": "eu"}, {}, {})


def test_gpu_count_reads_a_list_or_a_number() -> None:
    """gpus may be the list of devices or a count."""
    assert gpu_count(SPECS) == 2
    assert gpu_count({"gpus": 4}) == 4
    assert gpu_count({"gpus": True}) == 0
    assert gpu_count({}) == 0

"""A node reports its real specs, and GPUs through nvidia-smi when it is there."""

from __future__ import annotations

import os
import platform
import stat
from pathlib import Path

import psutil
import pytest

from shelby.agent import specs


def test_registration_specs_are_this_machine() -> None:
    """CPU count, RAM, OS and Python are the machine's own; no GPU without nvidia-smi."""
    found = specs.node_specs()
    assert found["cpuCount"] == os.cpu_count()
    assert found["totalRAM_GB"] == round(psutil.virtual_memory().total / 2**30, 2)
    assert found["os"] == platform.system()
    assert found["python"] == platform.python_version()
    assert isinstance(found["platform"], str) and found["platform"]
    assert found["gpus"] == []


def test_live_usage_is_in_percent() -> None:
    """A heartbeat's CPU and RAM use are percentages."""
    specs.live_usage()
    usage = specs.live_usage()
    assert 0 <= usage["cpuUsage"] <= 100
    assert 0 < usage["ramUsage"] <= 100


def test_nvidia_smi_csv_is_parsed() -> None:
    """Names (commas included) and memory in MiB become GPU specs in GB."""
    csv = "NVIDIA A100-SXM4-80GB, 81920\nTesla T4, Rev, 2, 15360\n\n"
    assert specs.parse_gpus(csv) == [
        {"name": "NVIDIA A100-SXM4-80GB", "memoryGB": 80.0},
        {"name": "Tesla T4, Rev, 2", "memoryGB": 15.0},
    ]


def test_gpus_come_from_nvidia_smi_on_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an nvidia-smi executable on PATH, its answers become GPUs and GPU pids."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        '  --query-gpu=*) echo "NVIDIA H100 80GB HBM3, 81559";;\n'
        '  --query-compute-apps=*) printf "123\\n456\\n";;\n'
        "esac\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert specs.node_specs()["gpus"] == [{"name": "NVIDIA H100 80GB HBM3", "memoryGB": 79.6}]
    assert specs.gpu_processes() == {123, 456}


def test_no_nvidia_smi_means_no_gpu_accounting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the driver, GPU use is unknown (None), not zero."""
    monkeypatch.setenv("PATH", "/nonexistent")
    assert specs.gpu_processes() is None

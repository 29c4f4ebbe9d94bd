"""What a node is (at registration) and how busy it is (in every heartbeat)."""

from __future__ import annotations

import platform
import shutil
import subprocess
from typing import Any

import psutil

__all__ = ["gpu_processes", "live_usage", "node_specs", "parse_gpus"]

_NVIDIA_SMI_TIMEOUT = 10.0


def node_specs() -> dict[str, Any]:
    """The registration specs: CPUs, RAM, OS, platform, Python, GPUs."""
    return {
        "cpuCount": psutil.cpu_count(logical=True) or 1,
        "totalRAM_GB": round(psutil.virtual_memory().total / 2**30, 2),
        "os": platform.system(),
        "platform": _platform_name(),
        "python": platform.python_version(),
        "gpus": gpus(),
    }


def live_usage() -> dict[str, Any]:
    """CPU and RAM in use, in percent, for a heartbeat.

    ``cpu_percent(None)`` measures since its previous call, that is over one heartbeat
    interval, without blocking; its first call says 0.0.
    """
    return {
        "cpuUsage": psutil.cpu_percent(interval=None),
        "ramUsage": psutil.virtual_memory().percent,
    }


def _platform_name() -> str:
    if platform.system() == "Linux":
        try:
            release = platform.freedesktop_os_release()
        except OSError:
            release = {}
        if pretty := release.get("PRETTY_NAME"):
            return pretty
    return platform.platform(terse=True)


def _nvidia_smi(*args: str) -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, *args], capture_output=True, text=True, timeout=_NVIDIA_SMI_TIMEOUT, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def parse_gpus(csv: str) -> list[dict[str, Any]]:
    """``nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits`` → specs."""
    found: list[dict[str, Any]] = []
    for row in csv.splitlines():
        if not row.strip():
            continue
        name, _, memory = row.rpartition(",")
        try:
            memory_gb = round(float(memory.strip()) / 1024, 1)
        except ValueError:
            continue
        found.append({"name": name.strip(), "memoryGB": memory_gb})
    return found


def gpus() -> list[dict[str, Any]]:
    out = _nvidia_smi("--query-gpu=name,memory.total", "--format=csv,noheader,nounits")
    return [] if out is None else parse_gpus(out)


def gpu_processes() -> set[int] | None:
    """Pids using a GPU now, or ``None`` when this node has no NVIDIA driver."""
    out = _nvidia_smi("--query-compute-apps=pid", "--format=csv,noheader,nounits")
    if out is None:
        return None
    return {int(row) for row in (r.strip() for r in out.splitlines()) if row.isdigit()}

"""What the benchmarks that start servers share: a free loopback port, ``shelby serve``
started with the benchmarks' tokens, waiting for a server to answer its health check,
and stopping it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

__all__ = ["ADMIN", "JOIN", "free_port", "start_shelby", "stop", "wait_ready"]

ADMIN = "bench-admin-token"
JOIN = "bench-join-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_shelby(
    db: Path,
    port: int,
    *extra: str,
    lease_seconds: float = 60,
    rate_limit: str = "off",
    ready_timeout: float = 30,
) -> subprocess.Popen[bytes]:
    """``shelby serve`` on ``db`` with the benchmarks' tokens, once it answers health.
    Its log goes beside ``db``; ``SHELBY_*`` settings of the caller's environment are
    left out, so that only the arguments here decide what is measured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELBY_")}
    env.update(SHELBY_ADMIN_TOKEN=ADMIN, SHELBY_JOIN_TOKEN=JOIN)
    argv = [sys.executable, "-m", "shelby", "serve", "--db", str(db), "--port", str(port)]
    argv += ["--lease-seconds", str(lease_seconds), "--rate-limit", rate_limit, *extra]
    log = open(db.with_suffix(".server.log"), "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log)
    wait_ready(port, proc, timeout=ready_timeout)
    return proc


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/api/frontend/system/health"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

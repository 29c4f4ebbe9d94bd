"""Shared fixtures: a real ``shelby serve`` subprocess on a free loopback port, and
real ``shelby agent`` subprocesses.

``shelby_server`` gives a running server with fixed tokens and a short lease;
``server_factory`` starts more, with other flags (``--rate-limit``, ``--dev``, …).
Each server keeps its stderr (the JSON log lines) in ``server.log_path``. ``agents``
starts agents against a server, with a short poll wait, kill grace and backoff.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

ADMIN_TOKEN = "test-admin-token"
JOIN_TOKEN = "test-join-token"

T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """One ``shelby serve`` process; ``restart`` keeps its port and database."""

    def __init__(
        self,
        data_dir: Path,
        *,
        lease_seconds: float = 3,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        admin_token: str | None = ADMIN_TOKEN,
        join_token: str | None = JOIN_TOKEN,
        db: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.db = db or data_dir / "shelby.db"  # elsewhere: on a disk of its own
        self.port = free_port()
        self.host = "127.0.0.1"
        self.url = f"http://{self.host}:{self.port}"
        self.lease_seconds = lease_seconds
        self.args = args
        self.admin_token = admin_token or ""
        self.join_token = join_token or ""
        self.log_path = data_dir / "server.log"
        self._env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.stdout_path = data_dir / "server.out"
        self._started_once = False

    # --- life cycle ---------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Start (or start again, on the same port and database)."""
        for _ in range(5):
            log_size = self.log_path.stat().st_size if self.log_path.exists() else 0
            try:
                self._start(timeout)
                return
            except RuntimeError:
                # Another process took the port between free_port() and the bind: on a
                # first start, take another; a restart keeps its port and fails.
                taken = "address already in use" in self.log_text()[log_size:].lower()
                if not taken or self._started_once:
                    raise
                self.port = free_port()
                self.url = f"http://{self.host}:{self.port}"
        raise RuntimeError("no free port found")

    def _start(self, timeout: float) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHELBY_")}
        if self.admin_token:
            env["SHELBY_ADMIN_TOKEN"] = self.admin_token
        if self.join_token:
            env["SHELBY_JOIN_TOKEN"] = self.join_token
        env.setdefault("SHELBY_RATE_LIMIT", "off")
        env.update(self._env)
        argv = [
            sys.executable,
            "-m",
            "shelby",
            "serve",
            "--db",
            str(self.db),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--lease-seconds",
            str(self.lease_seconds),
            *self.args,
        ]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as err, open(self.stdout_path, "ab") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
        self.wait_ready(timeout, log_offset)
        self._started_once = True
        if not self.admin_token:
            # Generated at first start and kept beside the database.
            self.admin_token = (self.data_dir / "admin.token").read_text().strip()
        if not self.join_token:
            self.join_token = (self.data_dir / "join.token").read_text().strip()

    def wait_ready(self, timeout: float, log_offset: int = 0) -> None:
        """Until this process logged that it listens, and then answers health: a health
        answer alone could come from another server that holds the port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"shelby serve exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}"
                )
            if f":{self.port} " not in self.log_text()[log_offset:]:
                time.sleep(0.05)
                continue
            try:
                r = httpx.get(f"{self.url}/api/frontend/system/health", timeout=1.0)
                if r.status_code in (200, 503):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"shelby serve did not start in {timeout} s:\n{self.log_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then wait for a clean exit (SIGKILL after ``timeout``)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # --- talking to it ------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``shelby ARGS`` against this server with the admin token, as a user would run
        it; nothing else of the test's ``SHELBY_*`` environment reaches it."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHELBY_")}
        env.update(SHELBY_SERVER=self.url, SHELBY_ADMIN_TOKEN=self.admin_token, COLUMNS="200")
        return subprocess.run(
            [sys.executable, "-m", "shelby", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    @staticmethod
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    @property
    def admin_headers(self) -> dict[str, str]:
        return self.bearer(self.admin_token)

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        """A client with the admin token (or ``token``; ``""`` for none)."""
        token = self.admin_token if token is None else token
        headers = self.bearer(token) if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=40.0, **kwargs)

    def async_client(self, token: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        token = self.admin_token if token is None else token
        headers = self.bearer(token) if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=40.0, **kwargs)


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start servers with ``server_factory(lease_seconds=…, args=(…), env={…})``; all are
    stopped at the end of the test."""
    started: list[ServerProcess] = []

    def make(name: str | None = None, **kwargs: Any) -> ServerProcess:
        server = ServerProcess(tmp_path / (name or f"server{len(started)}"), **kwargs)
        started.append(server)
        server.start()
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def shelby_server(server_factory: ServerFactory) -> ServerProcess:
    """A running ``shelby serve`` with fixed tokens, a 3 s lease and no rate limit."""
    return server_factory("server")


AGENT_ARGS = ("--poll-wait", "1", "--kill-grace", "1", "--max-backoff", "1")


class AgentProcess:
    """One ``python -m shelby agent`` subprocess; its stderr (JSON log) goes to a file.
    ``python``, ``env`` and ``popen`` (keywords of Popen: ``user``, ``preexec_fn``…)
    change how it is started; without ``token_in_env`` the join token is for the test
    to give (``--join-token-file``)."""

    def __init__(
        self,
        server: Any,
        work_dir: Path,
        extra: tuple[str, ...],
        name: str,
        url: str | None = None,
        *,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
        popen: dict[str, Any] | None = None,
        token_in_env: bool = True,
    ) -> None:
        self.server = server
        self.url = url or server.url  # another address for the server (a proxy in front)
        self.work_dir = work_dir
        self.extra = extra
        self.name = name
        self.python = python
        self.env = env or {}
        self.popen = popen or {}
        self.token_in_env = token_in_env
        self.log_path = work_dir.parent / f"{work_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHELBY_")}
        if self.token_in_env:
            env["SHELBY_JOIN_TOKEN"] = self.server.join_token
        # An agent environment that holds the admin token too (as one started by hand
        # from an admin's shell might). No job may see either.
        env["SHELBY_ADMIN_TOKEN"] = self.server.admin_token
        env.update(self.env)
        argv = [self.python, "-m", "shelby", "agent", "--server", self.url]
        argv += ["--work-dir", str(self.work_dir), "--name", self.name, *AGENT_ARGS, *self.extra]
        with open(self.log_path, "ab") as err:
            self.proc = subprocess.Popen(
                argv, env=env, stdout=subprocess.DEVNULL, stderr=err, **self.popen
            )
        return self

    def node_id(self, timeout: float = 15) -> str:
        identity = self.work_dir / "node.json"

        def joined() -> str | None:
            if not identity.exists():
                return None
            known = json.loads(identity.read_text())
            # The id is kept before the first registration; the token once it is done.
            return str(known["nodeId"]) if known.get("token") else None

        return wait_for(joined, timeout, f"{self.name} to join:\n{self.log_text()[-2000:]}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def attempt_dir(self, job_id: str, attempt: int) -> Path:
        return self.work_dir / "jobs" / job_id / f"attempt-{attempt}"


AgentFactory = Callable[..., AgentProcess]


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[AgentFactory]:
    """``agents(server, *flags, name=…, url=…)`` starts an agent (talking to ``url``
    instead of the server's own address when given; other keywords go to
    ``AgentProcess``); all are killed at the end."""
    started: list[AgentProcess] = []

    def make(
        server: Any,
        *extra: str,
        name: str | None = None,
        work_dir: Path | None = None,
        url: str | None = None,
        **options: Any,
    ) -> AgentProcess:
        name = name or f"agent{len(started)}"
        agent = AgentProcess(server, work_dir or tmp_path / name, extra, name, url, **options)
        started.append(agent)
        return agent.start()

    yield make
    for agent in started:
        agent.kill()


def wait_for(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)

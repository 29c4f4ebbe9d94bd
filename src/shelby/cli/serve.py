"""``shelby serve``: the coordinator, optionally with one agent beside it."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from types import FrameType

import click
import structlog
import uvicorn

from shelby.cli._lock import hold_log
from shelby.settings import DEFAULT_DB, Settings, data_dir_of, ensure_tokens

__all__ = ["COMMANDS", "serve"]

log = structlog.get_logger("shelby.serve")

# How long an idle keep-alive connection stays open. uvicorn's default, 5 s, is shorter
# than the heartbeat interval (up to 10 s), so every heartbeat of an idle agent cost a
# new connection (accept, a protocol object, its teardown): at 1,000 nodes a fifth of the
# event loop's time. It must also outlast the agent's own idle expiry (``AgentClient``,
# 30 s), so that it is always the client that closes an idle connection: when both
# close at the same moment, a request sent on the closing connection is reset.
KEEP_ALIVE_SECONDS = 75


def _route_stdlib_logging() -> None:
    """uvicorn logs through the standard library: send it out as the same JSON lines."""
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.JSONRenderer(),
        ],
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def _die_with_parent() -> None:
    """In the agent child: be killed when the server dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _start_agent(settings: Settings, url: str) -> subprocess.Popen[bytes]:
    work_dir = data_dir_of(settings.db) / "agent"
    # The agent needs the join token, never the admin token.
    env = {k: v for k, v in os.environ.items() if k != "SHELBY_ADMIN_TOKEN"}
    env["SHELBY_JOIN_TOKEN"] = settings.join_token
    argv = [sys.executable, "-m", "shelby", "agent", "--server", url, "--work-dir", str(work_dir)]
    return subprocess.Popen(
        argv,
        env=env,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        # Its own process group: Ctrl-C reaches the server only, which stops the agent
        # first (see _Server), so the agent can hand its attempt back while the server
        # still answers.
        start_new_session=True,
    )


class _Server(uvicorn.Server):
    """uvicorn's server, which on a signal first stops the local agent, if any, then
    ends the long polls under way and stops."""

    agent: subprocess.Popen[bytes] | None = None
    on_exit: Callable[[], None] | None = None  # run just before uvicorn starts to stop
    _stopping_agent = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        agent = self.agent
        if agent is None or agent.poll() is not None or self._stopping_agent:
            self._exit(sig, frame)
            return
        self._stopping_agent = True

        def stop_agent_then_exit() -> None:
            _stop(agent)
            self._exit(sig, frame)

        threading.Thread(target=stop_agent_then_exit, name="stop-agent", daemon=True).start()

    def _exit(self, sig: int, frame: FrameType | None) -> None:
        # Not earlier: while the local agent stops (up to 10 s), polls still wait as
        # usual, so that remote nodes are not answered "no job" at once, again and again.
        if self.on_exit is not None:
            self.on_exit()
        super().handle_exit(sig, frame)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _announce(settings: Settings, admin_generated: bool) -> None:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    base = f"http://{host}:{settings.port}/"
    if settings.dev:
        click.echo(f"Shelby (dev mode, credentials off): {base}", err=True)
    elif admin_generated:
        # The one time the generated token is shown; afterwards it is in the file.
        click.echo(f"Shelby dashboard: {base}?token={settings.admin_token}", err=True)
    else:
        where = data_dir_of(settings.db) / "admin.token"
        source = "$SHELBY_ADMIN_TOKEN" if os.environ.get("SHELBY_ADMIN_TOKEN") else str(where)
        click.echo(f"Shelby dashboard: {base}?token=… (the admin token is in {source})", err=True)


@click.command()
@click.option(
    "--db", default=None, help=f"SQLite file or postgresql:// URL [$SHELBY_DB; {DEFAULT_DB}]"
)
@click.option("--host", default=None, help="Address to bind [$SHELBY_HOST; 127.0.0.1]")
@click.option("--port", type=int, default=None, help="Port [$SHELBY_PORT; 8000]")
@click.option(
    "--lease-seconds", type=float, default=None, help="Node lease [$SHELBY_LEASE_SECONDS; 60]"
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    help="An allowed CORS origin (repeatable) [$SHELBY_CORS_ORIGINS, comma-separated]",
)
@click.option(
    "--dev", is_flag=True, default=None, help="Credentials off, any CORS origin, loopback only"
)
@click.option(
    "--rate-limit", default=None, help="Per token, e.g. 50/second, or off [$SHELBY_RATE_LIMIT]"
)
@click.option(
    "--sweep-interval",
    type=float,
    default=None,
    help="Seconds between lease sweeps [$SHELBY_SWEEP_INTERVAL; a quarter lease, at most 5]",
)
@click.option(
    "--timeout-grace-seconds",
    type=float,
    default=None,
    help="How long after a job's timeout the server ends it [$SHELBY_TIMEOUT_GRACE_SECONDS; 30]",
)
@click.option("--signing-key", default=None, help="Ed25519 PEM key file [$SHELBY_SIGNING_KEY]")
@click.option(
    "--retention-days",
    type=float,
    default=None,
    help="Archive heartbeats and log lines older than this [$SHELBY_RETENTION_DAYS; 0: never]",
)
@click.option(
    "--archive-interval",
    type=float,
    default=None,
    help="Seconds between archive runs [$SHELBY_ARCHIVE_INTERVAL; 3600]",
)
@click.option("--with-agent", is_flag=True, help="Also run one agent on this machine")
def serve(
    db: str | None,
    host: str | None,
    port: int | None,
    lease_seconds: float | None,
    cors_origins: tuple[str, ...],
    dev: bool | None,
    rate_limit: str | None,
    sweep_interval: float | None,
    timeout_grace_seconds: float | None,
    signing_key: str | None,
    retention_days: float | None,
    archive_interval: float | None,
    with_agent: bool,
) -> None:
    """Run the coordinator."""
    if with_agent:
        from shelby.agent.sandbox import make_undumpable

        # The local agent's jobs run as this user: they may not read the tokens in
        # this process's memory or /proc/PID/environ (SECURITY.md).
        make_undumpable()
    try:
        settings = Settings.from_env(
            db=db,
            host=host,
            port=port,
            lease_seconds=lease_seconds,
            cors_origins=cors_origins,
            dev=dev or None,
            rate_limit=rate_limit,
            sweep_interval=sweep_interval,
            timeout_grace_seconds=timeout_grace_seconds,
            signing_key=signing_key,
            retention_days=retention_days,
            archive_interval=archive_interval,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    hold_log(settings.db, "shelby serve")
    settings, generated = ensure_tokens(settings)
    _route_stdlib_logging()
    if settings.dev:
        log.warning("dev mode: credentials are off and every CORS origin is allowed")
    _announce(settings, generated.admin_generated)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_run(settings, with_agent))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # not on Windows
        return None
    return uvloop.new_event_loop


def _freeze_startup_objects() -> None:
    """Leave what start-up made (modules, the app, the state loaded from the log) out of
    the garbage collector's full collections from now on.

    A full collection walks every tracked object: some 60,000 after start-up, tens of
    milliseconds of CPU with the event loop stopped, every few seconds under load, so
    each one lands in the heartbeats' tail latency. Frozen objects are still freed by
    reference counting; only a cycle among them is never collected, and start-up's own
    cycles are collected right before.
    """
    gc.collect()
    gc.freeze()


async def _run(settings: Settings, with_agent: bool) -> None:
    from shelby.api.app import create_app
    from shelby.api.protocol import bounded_protocol

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="none",
        http=bounded_protocol(
            max_head_bytes=settings.max_head_bytes, head_timeout=settings.head_timeout_seconds
        ),
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=5,
    )
    server = _Server(config)
    # uvicorn lets the requests under way finish before it stops, for 5 s at most; a
    # long poll would use all of them and then be cancelled unanswered. The signal
    # handler (or the agent-stopping thread) may not touch the loop's objects itself,
    # so it asks the loop to end them.
    loop = asyncio.get_running_loop()

    def end_long_polls() -> None:
        loop.call_soon_threadsafe(app.state.service.work.close)

    server.on_exit = end_long_polls
    serving = asyncio.create_task(server.serve())
    agent: subprocess.Popen[bytes] | None = None
    try:
        # uvicorn only exposes a ``started`` flag, no event to wait on.
        while not server.started and not serving.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if server.started:
            _freeze_startup_objects()
        if with_agent and server.started:
            host = f"[{settings.host}]" if ":" in settings.host else settings.host
            url = f"http://{host}:{settings.port}"
            if settings.host in ("0.0.0.0", "::"):
                url = f"http://127.0.0.1:{settings.port}"
            agent = server.agent = _start_agent(settings, url)
            log.info(
                "agent started", pid=agent.pid, work_dir=str(data_dir_of(settings.db) / "agent")
            )
        await serving
    finally:
        if agent is not None:
            await asyncio.to_thread(_stop, agent)


COMMANDS = (serve,)

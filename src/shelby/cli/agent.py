"""``shelby agent``: run this machine as a compute node of a Shelby server."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from shelby.agent import Agent, AgentConfig, JoinRefused
from shelby.agent.sandbox import Sandbox, SandboxError, make_undumpable
from shelby.settings import parse_size

__all__ = ["COMMANDS"]

DEFAULT_SERVER = "http://127.0.0.1:8000"


def _labels(pairs: tuple[str, ...]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--label")
        labels[key.strip()] = value.strip()
    return labels


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _join_token(ctx: click.Context, given: str, file: Path | None) -> str:
    """The join token from the flag, the environment or a file; warned about on the
    command line, where every local user can read it (``/proc/PID/cmdline``)."""
    if file is not None:
        if given:
            raise click.UsageError("give --join-token or --join-token-file, not both")
        try:
            return file.read_text().strip()
        except OSError as exc:
            raise click.BadParameter(str(exc), param_hint="--join-token-file") from None
    if given and ctx.get_parameter_source("join_token") == ParameterSource.COMMANDLINE:
        click.echo(
            "shelby agent: warning: a join token on the command line is visible to every"
            " process on this machine; use $SHELBY_JOIN_TOKEN or --join-token-file",
            err=True,
        )
    return given


@click.command()
@click.option(
    "--server",
    envvar="SHELBY_SERVER",
    default=DEFAULT_SERVER,
    show_default=True,
    help="The coordinator's URL ($SHELBY_SERVER).",
)
@click.option(
    "--join-token",
    envvar="SHELBY_JOIN_TOKEN",
    default="",
    help="The server's join token ($SHELBY_JOIN_TOKEN); a --dev server needs none.",
)
@click.option(
    "--join-token-file",
    envvar="SHELBY_JOIN_TOKEN_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Read the join token from this file ($SHELBY_JOIN_TOKEN_FILE).",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("./shelby-agent"),
    show_default=True,
    help="Node identity, job directories, log spools and cached environments.",
)
@click.option("--max-jobs", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@click.option("--name", default=socket.gethostname, help="Shown in the dashboard [hostname].")
@click.option(
    "--poll-wait",
    type=click.FloatRange(0, 30),
    default=10.0,
    show_default=True,
    help="Seconds one poll may wait for a job.",
)
@click.option(
    "--kill-grace",
    type=click.FloatRange(0),
    default=5.0,
    show_default=True,
    help="Seconds between SIGTERM and SIGKILL when a job is stopped.",
)
@click.option(
    "--max-backoff",
    type=click.FloatRange(0.25),
    default=30.0,
    show_default=True,
    help="Longest wait between tries while the server is unreachable.",
)
@click.option(
    "--run-as",
    envvar="SHELBY_RUN_AS",
    default=None,
    metavar="USER",
    help="Run jobs as this unprivileged user ($SHELBY_RUN_AS); the agent must be root."
    " Without it jobs run as the agent's user (see SECURITY.md).",
)
@click.option(
    "--memory-limit",
    envvar="SHELBY_MEMORY_LIMIT",
    callback=_size,
    default=None,
    metavar="SIZE",
    help="Memory of each job process, e.g. 4G; off for none ($SHELBY_MEMORY_LIMIT)"
    " [the node's RAM / --max-jobs].",
)
@click.option(
    "--max-open-files",
    envvar="SHELBY_MAX_OPEN_FILES",
    type=click.IntRange(min=0),
    default=None,
    help="Open files of each job process; 0 for no limit ($SHELBY_MAX_OPEN_FILES) [65536].",
)
@click.option(
    "--pass-env",
    "pass_env",
    envvar="SHELBY_PASS_ENV",
    multiple=True,
    metavar="NAME",
    help="Also pass this variable of the agent's environment to jobs; repeatable"
    " ($SHELBY_PASS_ENV, space-separated).",
)
@click.option(
    "--job-python",
    envvar="SHELBY_JOB_PYTHON",
    default=None,
    metavar="PATH",
    help="The Python job environments are made from ($SHELBY_JOB_PYTHON) [the agent's].",
)
@click.pass_context
def agent(
    ctx: click.Context,
    server: str,
    join_token: str,
    join_token_file: Path | None,
    work_dir: Path,
    max_jobs: int,
    labels: tuple[str, ...],
    name: str,
    poll_wait: float,
    kill_grace: float,
    max_backoff: float,
    run_as: str | None,
    memory_limit: int | None,
    max_open_files: int | None,
    pass_env: tuple[str, ...],
    job_python: str | None,
) -> None:
    """Join SERVER as a compute node and run the jobs it hands out."""
    # Before any secret is in memory: no process of this user may read it from there.
    make_undumpable()
    token = _join_token(ctx, join_token, join_token_file)
    # Nothing started from here on inherits a token by accident.
    for variable in ("SHELBY_JOIN_TOKEN", "SHELBY_ADMIN_TOKEN"):
        os.environ.pop(variable, None)
    try:
        sandbox = Sandbox.create(
            run_as=run_as,
            memory_bytes=memory_limit,
            open_files=max_open_files,
            pass_env=pass_env,
            max_jobs=max_jobs,
        )
    except SandboxError as exc:
        click.echo(f"shelby agent: {exc}", err=True)
        sys.exit(1)
    config = AgentConfig(
        server=server,
        join_token=token,
        work_dir=work_dir.resolve(),
        name=name,
        max_jobs=max_jobs,
        labels=_labels(labels),
        poll_wait=poll_wait,
        kill_grace=kill_grace,
        max_backoff=max_backoff,
        sandbox=sandbox,
        job_python=job_python,
    )

    async def run() -> None:
        node = Agent(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, node.request_shutdown)
        await node.run()

    try:
        asyncio.run(run())
    except (JoinRefused, SandboxError) as exc:
        click.echo(f"shelby agent: {exc}", err=True)
        sys.exit(1)


COMMANDS = (agent,)

"""``shelby agent``: run this machine as a compute node of a Shelby server."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

import click

from shelby.agent import Agent, AgentConfig, JoinRefused

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
def agent(
    server: str,
    join_token: str,
    work_dir: Path,
    max_jobs: int,
    labels: tuple[str, ...],
    name: str,
    poll_wait: float,
    kill_grace: float,
    max_backoff: float,
) -> None:
    """Join SERVER as a compute node and run the jobs it hands out."""
    config = AgentConfig(
        server=server,
        join_token=join_token,
        work_dir=work_dir.resolve(),
        name=name,
        max_jobs=max_jobs,
        labels=_labels(labels),
        poll_wait=poll_wait,
        kill_grace=kill_grace,
        max_backoff=max_backoff,
    )

    async def run() -> None:
        node = Agent(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, node.request_shutdown)
        await node.run()

    try:
        asyncio.run(run())
    except JoinRefused as exc:
        click.echo(f"shelby agent: {exc}", err=True)
        sys.exit(1)


COMMANDS = (agent,)

"""The ``shelby`` command. Each group of subcommands lives in a module of its own."""

from __future__ import annotations

import click

from shelby.cli import agent, audit, client, log, migrate, serve
from shelby.logs import configure_logging

__all__ = ["main"]


@click.group()
@click.version_option(package_name="shelby")
def main() -> None:
    """Shelby: run ML training jobs on a pool of compute nodes."""
    configure_logging()


for command in (
    *log.COMMANDS,
    *serve.COMMANDS,
    *agent.COMMANDS,
    *client.COMMANDS,
    *migrate.COMMANDS,
    *audit.COMMANDS,
):
    main.add_command(command)

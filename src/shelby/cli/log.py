"""Commands over the event log itself: rebuild the projections, verify the chain."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from shelby.cli._lock import hold_log
from shelby.events.open import open_store
from shelby.events.verify import Verdict, verify_store
from shelby.projections import all_projections

__all__ = ["COMMANDS", "db_option"]

DEFAULT_DB = "./shelby-data/shelby.db"

db_option = click.option(
    "--db",
    default=lambda: os.environ.get("SHELBY_DB", DEFAULT_DB),
    show_default="$SHELBY_DB or " + DEFAULT_DB,
    help="SQLite file, or a postgresql:// URL.",
)

err = Console(stderr=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


def _require_log(db: str) -> None:
    """Commands that read a log must not create an empty one by mistake."""
    if "://" not in db and not os.path.exists(db):
        raise click.ClickException(f"no event log at {db}")


@click.command()
@db_option
def rebuild(db: str) -> None:
    """Drop every projection and rebuild it from the log."""

    async def run() -> tuple[int, float]:
        store = open_store(db, all_projections())
        await store.open()
        try:
            head = await store.head()
            started = time.perf_counter()
            with _progress() as bar:
                task = bar.add_task("rebuilding", total=head.seq, rate="")

                def step(done: int, total: int) -> None:
                    rate = done / max(time.perf_counter() - started, 1e-9)
                    bar.update(task, completed=done, total=total, rate=f"{rate:,.0f} events/s")

                applied = await store.rebuild(step)
            return applied, time.perf_counter() - started
        finally:
            await store.close()

    _require_log(db)
    hold_log(db, "shelby rebuild")  # a live server's appends would be replayed twice
    applied, seconds = asyncio.run(run())
    click.echo(
        f"rebuilt every projection from {applied} events in {seconds:.2f} s"
        f" ({applied / max(seconds, 1e-9):,.0f} events/s)"
    )


@click.command()
@db_option
def verify(db: str) -> None:
    """Check the hash chain and that the log has no gaps."""

    async def run() -> Verdict:
        store = open_store(db, all_projections())
        await store.open()
        try:
            head = await store.head()
            with _progress() as bar:
                task = bar.add_task("verifying", total=head.seq, rate="")
                return await verify_store(store, lambda n: bar.update(task, completed=n))
        finally:
            await store.close()

    _require_log(db)
    verdict = asyncio.run(run())
    if verdict.problem is not None:
        click.echo(f"FAILED at seq {verdict.problem.seq}: {verdict.problem.reason}", err=True)
        sys.exit(1)
    click.echo(f"ok: {verdict.count} events, head {verdict.head_hash}")


COMMANDS = (rebuild, verify)

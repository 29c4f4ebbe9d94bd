"""Moving a log from SQLite up to PostgreSQL, to run several replicas on it."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from shelby.events.archive import UnionReader, archive_dir
from shelby.events.open import is_postgres_url
from shelby.events.postgres import PostgresEventStore
from shelby.events.store import StoreError
from shelby.events.verify import ChainVerifier, Verdict, verify_store
from shelby.projections import all_projections

__all__ = ["COMMANDS", "ChainBroken", "copy_log"]

err = Console(stderr=True)


class ChainBroken(StoreError):
    """The source log does not verify; nothing was copied."""


CHUNK = 20_000


def _open_source(path: str) -> sqlite3.Connection:
    """Read-only: copying a log never writes to it (not even the Merkle tree that
    opening it as a store would extend)."""
    # Used from one thread at a time: the loop's, and the one each chunk is read in.
    return sqlite3.connect(
        f"file:{os.path.abspath(path)}?mode=ro", uri=True, check_same_thread=False
    )


async def _source_rows(
    conn: sqlite3.Connection, archive: Path
) -> AsyncIterator[list[tuple[Any, ...]]]:
    """The whole log, archived events read from their segments in their places."""
    reader = UnionReader(conn, archive)
    try:
        head = await asyncio.to_thread(reader.head)
        after = 0
        while after < head:
            high = min(after + CHUNK, head)
            yield await asyncio.to_thread(reader.window, after, high)
            after = high
    finally:
        reader.close()


def _bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
    )


async def copy_log(source: str, destination: str, bar: Progress | None = None) -> Verdict:
    """Copy every row of the SQLite log at ``source`` (archived rows included, read
    from their segments) verbatim into the empty PostgreSQL log at ``destination``,
    checking the chain on the way in (a broken source copies nothing), verify the chain
    as the destination now holds it, and rebuild the destination's projections from
    it. Returns the destination's verdict."""
    src = _open_source(source)
    dst = PostgresEventStore(destination, all_projections())
    try:
        await dst.open()
        try:
            total = src.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
            task = bar.add_task("copying", total=total) if bar else None
            checker = ChainVerifier()

            def check(rows: list[tuple[Any, ...]]) -> None:
                if not checker.feed(rows):
                    problem = checker.problem
                    assert problem is not None
                    raise ChainBroken(
                        f"the source log is broken at seq {problem.seq}: {problem.reason}"
                    )

            def copied(n: int) -> None:
                if bar is not None and task is not None:
                    bar.update(task, completed=n)

            await dst.import_log(_source_rows(src, archive_dir(Path(source))), check, copied)
            vtask = bar.add_task("verifying", total=total) if bar else None
            verdict = await verify_store(
                dst, lambda n: bar.update(vtask, completed=n) if bar and vtask is not None else None
            )
            if verdict.ok:
                rtask = bar.add_task("rebuilding", total=total) if bar else None
                await dst.rebuild(
                    lambda done, _total: (
                        bar.update(rtask, completed=done) if bar and rtask is not None else None
                    )
                )
            return verdict
        finally:
            await dst.close()
    finally:
        src.close()


@click.command("copy-log")
@click.option("--from", "source", required=True, help="The SQLite log to copy.")
@click.option(
    "--to", "destination", required=True, help="A postgresql:// URL; its log must be empty."
)
def copy_log_command(source: str, destination: str) -> None:
    """Copy a whole SQLite log into PostgreSQL, verify it there, rebuild its views."""
    if not os.path.exists(source):
        raise click.ClickException(f"no event log at {source}")
    if not is_postgres_url(destination):
        raise click.ClickException("--to must be a postgresql:// URL")
    started = time.perf_counter()
    try:
        with _bar() as bar:
            verdict = asyncio.run(copy_log(source, destination, bar))
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    if verdict.problem is not None:
        click.echo(
            f"FAILED at seq {verdict.problem.seq} after copying: {verdict.problem.reason}",
            err=True,
        )
        sys.exit(1)
    click.echo(
        f"copied {verdict.count} events in {time.perf_counter() - started:.2f} s;"
        f" chain verified at the destination, head {verdict.head_hash}; projections rebuilt"
    )


COMMANDS = (copy_log_command,)

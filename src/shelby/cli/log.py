"""Commands over the event log itself: rebuild the projections, verify the chain and
the archive segments, archive old history."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
from pathlib import Path

import click
from click.core import ParameterSource
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from shelby.cli._lock import hold_log
from shelby.clock import SystemClock
from shelby.events.archive import Entry, archive_dir, catalogue, leftovers
from shelby.events.open import open_store
from shelby.events.segments import check_segment
from shelby.events.sqlite import SQLiteEventStore
from shelby.events.store import Recorded, StoreError
from shelby.events.types import HistoryArchived
from shelby.events.verify import Verdict, verify_store
from shelby.projections import all_projections
from shelby.retention import DAY, archive_before
from shelby.settings import is_database_url

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
    try:
        applied, seconds = asyncio.run(run())
    except StoreError as exc:
        raise click.ClickException(f"nothing was rebuilt: {exc}") from exc
    click.echo(
        f"rebuilt every projection from {applied} events in {seconds:.2f} s"
        f" ({applied / max(seconds, 1e-9):,.0f} events/s)"
    )


@click.command()
@db_option
@click.option(
    "--segment",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Check one archive segment instead: alone, or against the log named by --db or"
    " $SHELBY_DB.",
)
@click.pass_context
def verify(ctx: click.Context, db: str, segment: Path | None) -> None:
    """Check the hash chain and that the log has no gaps (archived events included)."""
    if segment is not None:
        given = ctx.get_parameter_source("db") is ParameterSource.COMMANDLINE
        _verify_segment(segment, db if given or "SHELBY_DB" in os.environ else None)
        return

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
    archived = ""
    if not is_database_url(db):
        entries, left = _archive_listing(db)
        if entries:
            count = sum(e.count for _, e in entries)
            archived = f" ({count} of them in {len(entries)} archive segments)"
        for path in left:
            click.echo(
                f"note: {path} is listed by no HistoryArchived event (an archive run that did"
                " not commit, or has not yet; its rows are still in the log): the next run"
                " removes it",
                err=True,
            )
    click.echo(f"ok: {verdict.count} events{archived}, head {verdict.head_hash}")


def _archive_listing(db: str) -> tuple[list[Entry], list[Path]]:
    path = Path(db.removeprefix("sqlite:///"))
    conn = sqlite3.connect(path)
    try:
        entries = catalogue(conn)
    finally:
        conn.close()
    return entries, leftovers(archive_dir(path), entries)


def _verify_segment(segment: Path, db: str | None) -> None:
    """``verify --segment``: the segment alone, and against its log when one is given."""
    entry: Entry | None = None
    log_conn: sqlite3.Connection | None = None
    if db is not None:
        if is_database_url(db):
            raise click.ClickException("archive segments belong to SQLite logs")
        _require_log(db)
        log_conn = sqlite3.connect(db.removeprefix("sqlite:///"))
        log_conn.execute("PRAGMA query_only = 1")
    try:
        if log_conn is not None:
            entry = next((e for e in catalogue(log_conn) if e[1].segment == segment.name), None)
            if entry is None:
                raise click.ClickException(
                    f"no HistoryArchived event in {db} lists a segment named {segment.name}"
                )
        manifest, problems = check_segment(
            segment, entry=None if entry is None else entry[1], log=log_conn
        )
    finally:
        if log_conn is not None:
            log_conn.close()
    if problems or manifest is None:
        for problem in problems:
            click.echo(f"FAILED: {segment.name}: {problem}", err=True)
        sys.exit(1)
    against = (
        ""
        if entry is None
        else f"; its file hash, digest and every Merkle leaf match {db}"
        f" (HistoryArchived at seq {entry[0]})"
    )
    click.echo(
        f"ok: {segment.name}: {manifest.count} events (seq {manifest.first_seq}.."
        f"{manifest.last_seq}), digest {manifest.digest}, each hash recomputed{against}"
    )


@click.command()
@db_option
@click.option(
    "--older-than-days",
    type=click.FloatRange(min=0),
    required=True,
    help="Archive heartbeats and log lines older than this many days.",
)
@click.option(
    "--vacuum",
    is_flag=True,
    help="Then VACUUM the log, handing the space archiving freed back to the file system.",
)
def archive(db: str, older_than_days: float, vacuum: bool) -> None:
    """Move old heartbeats and log lines to archive segments beside the log (SQLite)."""
    if is_database_url(db):
        raise click.ClickException("retention is SQLite-only for now")
    _require_log(db)
    hold_log(db, "shelby archive")  # the server archives through its own writer
    path = Path(db.removeprefix("sqlite:///"))
    size_before = _file_bytes(path)

    async def run() -> list[Recorded]:
        store = SQLiteEventStore(path, all_projections())
        await store.open()
        try:
            clock = SystemClock()
            return await archive_before(store, clock.now() - older_than_days * DAY, clock)
        finally:
            await store.close()

    try:
        archived = asyncio.run(run())
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    if vacuum:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("VACUUM")
        finally:
            conn.close()
    events = [rec.event for rec in archived]
    count = sum(e.count for e in events if isinstance(e, HistoryArchived))
    click.echo(
        f"archived {count} events to {len(events)} segments in {archive_dir(path)};"
        f" the log's file: {size_before:,} bytes before, {_file_bytes(path):,} after"
    )


def _file_bytes(path: Path) -> int:
    """The log's file and its write-ahead log."""
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


COMMANDS = (rebuild, verify, archive)

"""``shelby audit JOB_ID``: verify one job's whole provenance against a signed checkpoint,
from a server (``--server``) or a local database (``--db``), and optionally export its
attestation. Exit 0 when everything verifies, 1 naming what failed."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click
import msgspec

from shelby.audit.attestation import NoModel, attest
from shelby.audit.auditor import (
    AuditFailure,
    HttpSource,
    Report,
    SourceError,
    StoreSource,
    audit_job,
    check_attestation,
)
from shelby.audit.history import read_history
from shelby.audit.keys import KEY_FILE_NAME, PublicKey, SigningKey, load_or_create
from shelby.audit.keys import parse_public_key as parse_key
from shelby.events.open import open_store
from shelby.projections import all_projections
from shelby.settings import DEFAULT_DB, data_dir_of

__all__ = ["COMMANDS", "audit"]


def _read(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from exc


def _pinned(path: str | None) -> PublicKey | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return parse_key(text)
    except ValueError as exc:
        raise click.ClickException(f"{path}: {exc}") from exc


def _write(path: str, text: str) -> None:
    Path(path).write_text(text, encoding="utf-8")


async def _from_server(
    server: str,
    token: str | None,
    job_id: str,
    pinned: PublicKey | None,
    saved: str | None,
    export: bool,
) -> tuple[Report, dict[str, Any] | None]:
    source = HttpSource(server, token)
    try:
        report = await audit_job(source, job_id, pinned=pinned, saved_checkpoint=saved)
        envelope = None
        if export:
            envelope = await source.attestation(job_id)
            check_attestation(envelope, report)
        return report, envelope
    finally:
        await source.aclose()


async def _from_db(
    db: str,
    key_path: str | None,
    job_id: str,
    pinned: PublicKey | None,
    saved: str | None,
    export: bool,
) -> tuple[Report, dict[str, Any] | None]:
    path = Path(key_path) if key_path else data_dir_of(db) / KEY_FILE_NAME
    key: SigningKey | None = None
    if path.exists():
        key = load_or_create(path, create=False)
    elif key_path:
        raise click.ClickException(f"no signing key at {key_path}")
    if pinned is not None and key is not None and pinned.raw != key.public.raw:
        raise AuditFailure(f"the key at {path} is not the pinned public key")
    store = open_store(db, all_projections())
    await store.open()
    try:
        source = StoreSource(store, key, time.time())
        report = await audit_job(
            source, job_id, pinned=pinned or await source.public_key(), saved_checkpoint=saved
        )
    finally:
        await store.close()
    envelope = None
    if export:
        if key is None:
            raise click.ClickException(
                f"--export signs with the server's key: none at {path} (give --signing-key)"
            )
        try:
            signed = attest(read_history(job_id, report.events), key)
        except NoModel as exc:
            raise click.ClickException(str(exc)) from exc
        envelope = msgspec.to_builtins(signed)
    return report, envelope


@click.command()
@click.argument("job_id")
@click.option(
    "--server",
    envvar="SHELBY_SERVER",
    default=None,
    help="Audit through this server's API ($SHELBY_SERVER); otherwise the local --db.",
)
@click.option("--token", envvar="SHELBY_ADMIN_TOKEN", default=None, help="$SHELBY_ADMIN_TOKEN")
@click.option(
    "--db",
    default=None,
    help=f"Audit a local database instead of a server [$SHELBY_DB; {DEFAULT_DB}].",
)
@click.option(
    "--public-key",
    "public_key_file",
    default=None,
    help="The server's pinned public key (PEM, or a signed-note verifier key).",
)
@click.option(
    "--checkpoint",
    "checkpoint_file",
    default=None,
    help="A checkpoint saved earlier: also prove the log only grew since.",
)
@click.option(
    "--save-checkpoint",
    default=None,
    help="Write the checkpoint this audit verified against, for the next --checkpoint.",
)
@click.option(
    "--export",
    "export_file",
    default=None,
    help="Write the job's attestation (DSSE envelope, in-toto / SLSA) to this file.",
)
@click.option(
    "--signing-key",
    default=None,
    help="With --db: the server's key file, to sign checkpoints and --export [data dir].",
)
def audit(
    job_id: str,
    server: str | None,
    token: str | None,
    db: str | None,
    public_key_file: str | None,
    checkpoint_file: str | None,
    save_checkpoint: str | None,
    export_file: str | None,
    signing_key: str | None,
) -> None:
    """Verify JOB_ID's provenance: each event's hash from its fields, each event's
    inclusion in the log's signed checkpoint, and (with --checkpoint) that the log only
    grew since a checkpoint saved earlier."""
    if server and db:
        raise click.UsageError("give --server or --db, not both")
    pinned = _pinned(public_key_file)
    saved = _read(checkpoint_file)
    export = export_file is not None
    try:
        if server:
            report, envelope = asyncio.run(
                _from_server(server, token, job_id, pinned, saved, export)
            )
        else:
            db = db or os.environ.get("SHELBY_DB", DEFAULT_DB)
            if "://" not in db and not Path(db).exists():
                raise click.ClickException(f"no event log at {db}")
            report, envelope = asyncio.run(_from_db(db, signing_key, job_id, pinned, saved, export))
    except SourceError as exc:
        raise click.ClickException(str(exc)) from exc
    except AuditFailure as exc:
        click.echo(f"FAILED: job {job_id}: {exc}", err=True)
        sys.exit(1)

    if pinned is None and report.key is not None:
        click.echo(
            "warning: the public key was fetched from the server itself, which proves\n"
            "  nothing about the server; pin it (save the line below to a file and pass\n"
            "  --public-key FILE next time), and compare it through another channel:\n"
            f"  {report.key.verifier_key}",
            err=True,
        )
    cp = report.checkpoint
    first, last = report.events[0].seq, report.events[-1].seq
    click.echo(
        f"ok: job {job_id}: {len(report.events)} events (seq {first}..{last}), each hash"
        f" recomputed and proven in the log of {cp.size} events, root {cp.root.hex()}"
    )
    if report.note is not None and report.key is not None:
        click.echo(f"checkpoint signed by {report.key.name}")
    else:
        click.echo("checkpoint: computed from the local tree, unsigned (no signing key here)")
    if report.consistent_from is not None:
        click.echo(
            f"the log only grew since the saved checkpoint ({report.consistent_from} events)"
        )
    if save_checkpoint:
        if report.note is None:
            raise click.ClickException("there is no signed checkpoint to save")
        _write(save_checkpoint, report.note)
        click.echo(f"checkpoint saved to {save_checkpoint}")
    if export_file and envelope is not None:
        _write(export_file, json.dumps(envelope, indent=2, ensure_ascii=False) + "\n")
        click.echo(f"attestation written to {export_file}")


COMMANDS = (audit,)

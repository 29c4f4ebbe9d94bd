"""One writer per SQLite log: ``shelby serve`` holds a lock beside the file for as long
as it runs, and commands that rewrite what the server writes (``rebuild``) refuse to
run while it does. A PostgreSQL log is shared by design and takes no lock."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import click

__all__ = ["hold_log"]


def _lock_path(db: str) -> Path | None:
    if "://" in db and not db.startswith("sqlite:///"):
        return None
    path = Path(db.removeprefix("sqlite:///"))
    return path.with_name(path.name + ".lock")


def hold_log(db: str, purpose: str) -> int | None:
    """Take the log's lock for the life of this process (the descriptor stays open);
    a ``ClickException`` names the holder's purpose when another process has it."""
    path = _lock_path(db)
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise click.ClickException(
            f"the log {db} is in use ({holder}); stop it before {purpose}"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{purpose}, pid {os.getpid()}".encode())
    return fd

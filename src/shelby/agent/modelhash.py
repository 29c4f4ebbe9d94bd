"""The model hash: one value anyone holding the output directory can recompute.

API.md defines it as the SHA-256 of the manifest that

    cd OUT && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum

prints, written ``sha256:<hex>``. This module reproduces that pipeline byte for byte
instead of inventing a nicer format, so an auditor needs nothing but coreutils.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

__all__ = ["manifest", "model_hash", "output_files"]

_CHUNK = 1 << 20


def output_files(out: Path) -> list[bytes]:
    """The ``./``-prefixed paths ``find . -type f`` lists, in ``LC_ALL=C sort -z`` order.

    Paths stay bytes: a file name need not be valid UTF-8, and C-locale sorting is
    byte order. ``find`` does not follow symbolic links and ``-type f`` skips them, so
    neither do we.
    """
    root = os.fsencode(out)
    found: list[bytes] = []
    for directory, _dirs, files in os.walk(root, followlinks=False):
        for name in files:
            full = os.path.join(directory, name)
            if stat.S_ISREG(os.lstat(full).st_mode):
                found.append(b"." + full[len(root) :])
    found.sort()
    return found


def _file_digest(path: bytes) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _manifest_line(hexdigest: str, name: bytes) -> bytes:
    # GNU sha256sum (coreutils >= 9) escapes a name holding a backslash, newline or
    # carriage return, and then starts the line with a backslash.
    escaped = name.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
    prefix = b"\\" if escaped != name else b""
    return prefix + hexdigest.encode() + b"  " + escaped + b"\n"


def manifest(out: Path) -> bytes:
    """The exact bytes the pipeline prints for the directory ``out``."""
    root = os.fsencode(out)
    files = output_files(out)
    if not files:
        # xargs without -r runs sha256sum once with no arguments, which hashes its
        # (empty) standard input and names it "-".
        return _manifest_line(hashlib.sha256(b"").hexdigest(), b"-")
    return b"".join(_manifest_line(_file_digest(root + name[1:]), name) for name in files)


def model_hash(out: Path) -> str:
    return "sha256:" + hashlib.sha256(manifest(out)).hexdigest()

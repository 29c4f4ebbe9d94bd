"""Fetching a job's dataset and proving it is the one the job names.

The file is hashed while it is written, and a job whose ``datasetHash`` does not
match never starts: a script must not train on data nobody asked for.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

__all__ = ["DatasetError", "dataset_file_name", "fetch_dataset", "parse_hash"]

_CHUNK = 1 << 20
_HEX = re.compile(r"[0-9a-f]{64}")


class DatasetError(Exception):
    """The dataset could not be fetched, or is not the one the job names."""


def parse_hash(expected: str) -> str:
    """``sha256:<hex>`` (or bare hex) → the lowercase hex digest."""
    algorithm, _, digest = expected.strip().rpartition(":")
    digest = digest.lower()
    if algorithm.lower() not in ("", "sha256") or not _HEX.fullmatch(digest):
        raise DatasetError(f"datasetHash {expected!r} is not of the form sha256:<64 hex digits>")
    return digest


def dataset_file_name(url: str) -> str:
    name = os.path.basename(unquote(urlparse(url).path))
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        return "dataset"
    return name


def _copy_hashing(source: Path, target: Path) -> str:
    digest = hashlib.sha256()
    with open(source, "rb") as src, open(target, "wb") as dst:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
    return digest.hexdigest()


async def _download_hashing(url: str, target: Path) -> str:
    digest = hashlib.sha256()
    timeout = httpx.Timeout(30.0, read=120.0)
    async with (
        httpx.AsyncClient(timeout=timeout, follow_redirects=True) as http,
        http.stream("GET", url) as response,
    ):
        if response.status_code != 200:
            raise DatasetError(f"dataset download failed: HTTP {response.status_code} from {url}")
        f = await asyncio.to_thread(open, target, "wb")
        try:
            async for chunk in response.aiter_bytes(_CHUNK):
                digest.update(chunk)
                await asyncio.to_thread(f.write, chunk)
        finally:
            await asyncio.to_thread(f.close)
    return digest.hexdigest()


async def fetch_dataset(url: str, expected_hash: str | None, directory: Path) -> tuple[Path, str]:
    """Fetch ``url`` (``file://``, ``http://``, ``https://``) into ``directory`` and check
    it against ``expected_hash``. Returns the file and its ``sha256:<hex>``."""
    want = parse_hash(expected_hash) if expected_hash else None
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    target = directory / dataset_file_name(url)
    scheme = urlparse(url).scheme.lower()
    try:
        match scheme:
            case "file":
                source = Path(unquote(urlparse(url).path))
                if not await asyncio.to_thread(source.is_file):
                    raise DatasetError(f"dataset {url} is not a readable file")
                got = await asyncio.to_thread(_copy_hashing, source, target)
            case "http" | "https":
                got = await _download_hashing(url, target)
            case _:
                raise DatasetError(
                    f"dataset URL scheme {scheme!r} is not supported (file, http, https)"
                )
    except (OSError, httpx.HTTPError) as exc:
        raise DatasetError(f"dataset download failed: {type(exc).__name__}: {exc}") from exc
    if want is not None and got != want:
        await asyncio.to_thread(shutil.rmtree, directory, True)
        raise DatasetError(
            f"dataset hash mismatch: the job names sha256:{want}, {url} is sha256:{got}"
        )
    return target, f"sha256:{got}"

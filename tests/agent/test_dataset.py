"""A dataset is fetched over file:// or HTTP and must match its datasetHash."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shelby.agent.dataset import DatasetError, fetch_dataset, parse_hash


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on loopback serving a directory."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def test_a_file_url_is_copied_and_checked(tmp_path: Path) -> None:
    """file:// is copied into the attempt and its hash confirmed."""
    data = b"a,b\n1,2\n" * 1000
    source = tmp_path / "data set.csv"
    source.write_bytes(data)
    path, digest = await fetch_dataset(source.as_uri(), sha(data), tmp_path / "attempt")
    assert path.read_bytes() == data and path.name == "data set.csv"
    assert digest == sha(data)


async def test_http_download_is_checked(http_root: tuple[str, Path], tmp_path: Path) -> None:
    """An http:// dataset is downloaded whole and checked."""
    url, root = http_root
    data = bytes(range(256)) * 5000
    (root / "train.bin").write_bytes(data)
    path, digest = await fetch_dataset(
        f"{url}/train.bin", sha(data).upper().replace("SHA256", "sha256"), tmp_path / "a"
    )
    assert path.read_bytes() == data and digest == sha(data)


async def test_a_hash_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    """The wrong bytes fail with both hashes named, and leave no file behind."""
    source = tmp_path / "d.txt"
    source.write_bytes(b"actual")
    with pytest.raises(DatasetError, match="hash mismatch.*" + sha(b"actual")):
        await fetch_dataset(source.as_uri(), sha(b"expected"), tmp_path / "attempt")
    assert not (tmp_path / "attempt" / "d.txt").exists()


async def test_http_errors_and_missing_files_fail_the_fetch(
    http_root: tuple[str, Path], tmp_path: Path
) -> None:
    """A 404, a missing file and an unknown scheme are DatasetErrors."""
    url, _ = http_root
    with pytest.raises(DatasetError, match="HTTP 404"):
        await fetch_dataset(f"{url}/missing", None, tmp_path / "a")
    with pytest.raises(DatasetError, match="not a readable file"):
        await fetch_dataset((tmp_path / "nope").as_uri(), None, tmp_path / "b")
    with pytest.raises(DatasetError, match="not supported"):
        await fetch_dataset("ftp://example.invalid/x", None, tmp_path / "c")


def test_hash_forms() -> None:
    """sha256:<hex> and bare hex are accepted; other algorithms and junk are not."""
    digest = "ab" * 32
    assert parse_hash(f"sha256:{digest}") == digest
    assert parse_hash(digest.upper()) == digest
    for bad in ("md5:" + "ab" * 16, "sha256:xyz", "optional-hash"):
        with pytest.raises(DatasetError):
            parse_hash(bad)

"""The model hash equals what coreutils print for the same directory."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shelby.agent.modelhash import manifest, model_hash

PIPELINE = 'cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum'


def shell_manifest(out: Path) -> bytes:
    return subprocess.run(
        ["sh", "-c", PIPELINE, "sh", str(out)], capture_output=True, check=True
    ).stdout


def shell_model_hash(out: Path) -> str:
    return "sha256:" + hashlib.sha256(shell_manifest(out)).hexdigest()


def test_nested_files_match_the_shell_pipeline(tmp_path: Path) -> None:
    """Nested directories, spaces and unicode names hash as sha256sum lists them."""
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "model.bin").write_bytes(os.urandom(3000))
    (tmp_path / "sub" / "weights é.pt").write_bytes(b"w" * 10)
    (tmp_path / "sub" / "deeper" / "a b c").write_text("config")
    (tmp_path / "Z-upper").write_text("sorted before lower case in C order")
    assert manifest(tmp_path) == shell_manifest(tmp_path)
    assert model_hash(tmp_path) == shell_model_hash(tmp_path)


def test_names_sha256sum_escapes_match(tmp_path: Path) -> None:
    """Names with a newline, backslash or carriage return, and non-UTF-8 bytes, match."""
    root = os.fsencode(tmp_path)
    for name in (b"new\nline", b"back\\slash", b"carriage\rreturn", b"latin1-\xe9"):
        with open(os.path.join(root, name), "wb") as f:
            f.write(name)
    assert manifest(tmp_path) == shell_manifest(tmp_path)


def test_symlinks_and_empty_directories_are_left_out(tmp_path: Path) -> None:
    """find -type f skips symlinks (to files and to directories) and empty directories."""
    (tmp_path / "real").write_text("data")
    (tmp_path / "empty").mkdir()
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "inside").write_text("x")
    (tmp_path / "link-to-file").symlink_to(tmp_path / "real")
    (tmp_path / "link-to-dir").symlink_to(tmp_path / "dir")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert manifest(tmp_path) == shell_manifest(tmp_path)
    assert manifest(tmp_path).count(b"\n") == 2


def test_an_empty_output_directory_hashes_like_the_pipeline(tmp_path: Path) -> None:
    """With no files, xargs still runs sha256sum once, over empty input named '-'."""
    assert model_hash(tmp_path) == shell_model_hash(tmp_path)


names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"),
    min_size=1,
    max_size=12,
).filter(lambda n: n not in (".", ".."))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tree=st.dictionaries(
        st.lists(names, min_size=1, max_size=3).map(tuple), st.binary(max_size=64), max_size=6
    )
)
def test_random_trees_match_the_shell_pipeline(tmp_path_factory, tree) -> None:  # type: ignore[no-untyped-def]
    """Any tree of files hashes as the pipeline prints it."""
    out = tmp_path_factory.mktemp("out")
    for parts, content in tree.items():
        path = out.joinpath(*parts)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                continue
            path.write_bytes(content)
        except (OSError, UnicodeEncodeError):
            continue  # a file where a directory is wanted, or a name the fs refuses
    assert manifest(out) == shell_manifest(out)

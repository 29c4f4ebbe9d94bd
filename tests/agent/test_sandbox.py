"""The sandbox's parts that need no agent: sizes, a failure's limit, taking back a tree
the run-as user built."""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from shelby.agent.process import SHIM
from shelby.agent.sandbox import RunAs, Sandbox, freeze
from shelby.settings import parse_size


def test_sizes_are_read_in_powers_of_1024_and_off_means_none() -> None:
    """512M, 4G, 1.5GiB, bare bytes; 0/off/none/unlimited are 0; nonsense is refused."""
    assert parse_size("512M") == 512 * 2**20
    assert parse_size("4g") == 4 * 2**30
    assert parse_size("1.5GiB") == 3 * 2**29
    assert parse_size("12MB") == 12 * 2**20
    assert parse_size("1048576") == 2**20
    assert [parse_size(t) for t in ("0", "off", "None", "unlimited")] == [0, 0, 0, 0]
    assert parse_size("8388607T") == 8388607 * 2**40  # just under 8 EiB
    for bad in ("lots", "G", "-1G", "inf", "1e400", "1e19", "8E"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_the_shim_says_why_it_cannot_start_a_job_and_exits_126() -> None:
    """A child of the shim that fails before exec (here a limit setrlimit cannot hold)
    reports why and exits 126, never running on into the shim's own code."""
    config = json.dumps({"rlimits": {"DATA": 2**70}, "parent": os.getpid()})
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(SHIM), config, "--", "true"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 126, done.stderr
    assert done.stderr.decode().startswith("shelby: cannot start true: "), done.stderr
    assert b"Traceback" not in done.stderr


def test_a_failure_names_the_limit_its_last_words_point_at() -> None:
    """MemoryError and friends point at the memory limit, EMFILE at the open files one;
    anything else, or a limit not set, at nothing."""
    sandbox = Sandbox(memory_bytes=3 * 2**30, open_files=64)
    assert sandbox.explain("MemoryError") == (
        "memory is limited to 3.0 GiB per process on this node: shelby agent --memory-limit"
    )
    assert "3.0 GiB" in (sandbox.explain("terminate called after std::bad_alloc") or "")
    assert sandbox.explain("OSError: [Errno 24] Too many open files: 'x'") == (
        "open files are limited to 64 per process on this node: shelby agent --max-open-files"
    )
    assert sandbox.explain("ValueError: the loss is NaN") is None
    assert Sandbox().explain("MemoryError") is None


def test_freeze_takes_back_what_the_user_owns_and_follows_no_link(tmp_path: Path) -> None:
    """Files, directories and links the user owns become the agent's, readable by all,
    writable by none else, without set-id bits; pipes go; a link planted towards a file
    outside is taken back itself but its target is left alone; what the user does not
    own is not touched."""
    nobody = pwd.getpwnam("nobody")
    run_as = RunAs("nobody", nobody.pw_uid, nobody.pw_gid, (nobody.pw_gid,))
    outside = tmp_path / "outside"
    outside.write_text("not the environment's")
    os.chown(outside, nobody.pw_uid, nobody.pw_gid)
    outside.chmod(0o666)
    env = tmp_path / "env"
    (env / "bin").mkdir(parents=True)
    python = env / "bin" / "python"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o4777)
    lib = env / "lib.py"
    lib.write_text("x = 1\n")
    lib.chmod(0o600)
    (env / "planted").symlink_to(outside)
    (env / "bin" / "up").symlink_to(tmp_path)
    os.mkfifo(env / "pipe")
    theirs = env / "root-owned"
    theirs.write_text("")
    theirs.chmod(0o600)
    for path in (env, env / "bin", python, lib, env / "planted", env / "bin" / "up", env / "pipe"):
        os.chown(path, nobody.pw_uid, nobody.pw_gid, follow_symlinks=False)

    above = tmp_path.stat()
    freeze(env, run_as)

    me = os.geteuid()
    for path in (env, env / "bin", python, lib, env / "planted", env / "bin" / "up"):
        assert os.lstat(path).st_uid == me, path
    assert stat.S_IMODE(env.stat().st_mode) == 0o755
    assert stat.S_IMODE(python.stat().st_mode) == 0o755  # no set-uid, no group/other write
    assert stat.S_IMODE(lib.stat().st_mode) == 0o644
    assert not (env / "pipe").exists()
    assert outside.stat().st_uid == nobody.pw_uid
    assert stat.S_IMODE(outside.stat().st_mode) == 0o666
    assert (tmp_path.stat().st_mode, tmp_path.stat().st_uid) == (above.st_mode, above.st_uid)
    assert stat.S_IMODE(theirs.stat().st_mode) == 0o600

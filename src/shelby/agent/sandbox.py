"""What a job's processes may do on the node: as whom they run, within which limits,
and what they see of the agent. SECURITY.md says what this does not protect against.

- Environment: built from an allow-list, never inherited whole; nothing of Shelby's
  (``SHELBY_*``) and no value holding one of the agent's tokens gets through.
- ``--run-as USER``: the job's processes (its environment build included: ``pip``
  runs code from the requirements) run as USER, an unprivileged user, while the
  agent's files stay the agent's (0600/0700); the job's own directories are handed to
  USER, and a built environment is handed back (root-owned, read-only) before any job
  uses it, so that no job can change what a later one runs.
- Limits per process (``setrlimit``, soft and hard alike): private writable memory
  (``RLIMIT_DATA``), open files (``RLIMIT_NOFILE``), no core files.
- The agent itself is not dumpable: no process of its user can read its memory or
  ``/proc/<agent>/environ``, nor attach a debugger to it.

The limits and the user are applied by the shim (``shim.py``), which also keeps every
process of the job in its subtree so that a stop reaches all of them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import resource
import stat
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import structlog

__all__ = [
    "DEFAULT_OPEN_FILES",
    "RunAs",
    "Sandbox",
    "SandboxError",
    "freeze",
    "hand_over",
    "job_environment",
    "make_undumpable",
    "prepare_work_dir",
]

log = structlog.get_logger(__name__)

DEFAULT_OPEN_FILES = 65536
"""Enough for data loaders that pass tensors by file descriptor; the agent's own hard
limit when that is lower and it may not raise it."""

ALLOWED_VARIABLES = frozenset(
    {"PATH", "LANG", "LANGUAGE", "TZ", "TERM", "LD_LIBRARY_PATH", "SSL_CERT_FILE", "SSL_CERT_DIR"}
)
ALLOWED_PREFIXES = ("LC_", "PIP_", "CUDA_", "NVIDIA_", "NCCL_", "OMP_")
"""Locale, the operator's pip settings (environment builds need them), GPU selection
and tuning. Anything else only with ``--pass-env NAME``."""

_PR_SET_DUMPABLE = 4
# Capabilities --run-as needs: hand files over (CHOWN, FOWNER), read what the job
# wrote (DAC_OVERRIDE), signal its processes (KILL), become the user (SETGID, SETUID).
_RUN_AS_CAPABILITIES = {
    0: "CAP_CHOWN",
    1: "CAP_DAC_OVERRIDE",
    3: "CAP_FOWNER",
    5: "CAP_KILL",
    6: "CAP_SETGID",
    7: "CAP_SETUID",
}
_CAP_SYS_RESOURCE = 24

# Run as the user by the probe: can it reach the directory it would work in?
_PROBE = "import os, sys; sys.exit(0 if os.access(sys.argv[1], os.X_OK) else 3)"


class SandboxError(Exception):
    """The sandbox asked for cannot be set up here; the message says why."""


def _effective_capabilities() -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


@dataclass(frozen=True)
class RunAs:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    @classmethod
    def lookup(cls, user: str) -> RunAs:
        """USER by name (or number); refused unless the agent can switch to it."""
        try:
            entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except (KeyError, ValueError):
            raise SandboxError(f"--run-as {user}: no such user") from None
        if entry.pw_uid == 0:
            raise SandboxError(f"--run-as {user}: that is root, which no sandbox holds")
        if os.geteuid() != 0:
            raise SandboxError(
                f"--run-as {user} needs the agent to run as root (it runs as uid {os.geteuid()})"
            )
        have = _effective_capabilities()
        missing = [name for bit, name in _RUN_AS_CAPABILITIES.items() if not have >> bit & 1]
        if missing:
            raise SandboxError(
                f"--run-as {user} needs the agent to run as root with {', '.join(missing)}"
                " (the capabilities it was started with lack them)"
            )
        groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, entry.pw_gid))))
        return cls(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid, groups=groups)


def _limit(
    what: str, option: str, requested: int | None, default: int | None, kind: int
) -> int | None:
    """``requested`` (``None``: ``default``), checked against the agent's own hard limit,
    which only CAP_SYS_RESOURCE may raise; 0 means no limit."""
    value = default if requested is None else requested
    if not value:
        return None
    hard = resource.getrlimit(kind)[1]
    if hard == resource.RLIM_INFINITY or value <= hard:
        return value
    if _effective_capabilities() >> _CAP_SYS_RESOURCE & 1:
        return value
    if requested is None:
        return hard
    raise SandboxError(
        f"{option} {value}: above the agent's own hard limit of {hard} {what},"
        " which it may not raise (no CAP_SYS_RESOURCE)"
    )


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB" if size < 2**30 else f"{size / 2**30:.1f} GiB"


@dataclass(frozen=True)
class Sandbox:
    run_as: RunAs | None = None
    memory_bytes: int | None = None
    """``RLIMIT_DATA`` of every process of a job: its heap and private writable
    mappings (what ``malloc`` and ``mmap`` hand out), not the address space it only
    reserves, which GPU runtimes reserve by the terabyte."""
    open_files: int | None = None
    pass_env: tuple[str, ...] = ()

    @classmethod
    def create(
        cls,
        *,
        run_as: str | None = None,
        memory_bytes: int | None = None,
        open_files: int | None = None,
        pass_env: Iterable[str] = (),
        max_jobs: int = 1,
    ) -> Sandbox:
        """The sandbox of the agent's options: ``None`` takes the default (memory: the
        node's RAM shared by ``max_jobs``; open files: ``DEFAULT_OPEN_FILES``), 0 none."""
        share = psutil.virtual_memory().total // max(1, max_jobs)
        return cls(
            run_as=RunAs.lookup(run_as) if run_as else None,
            memory_bytes=_limit(
                "bytes", "--memory-limit", memory_bytes, share, resource.RLIMIT_DATA
            ),
            open_files=_limit(
                "files", "--max-open-files", open_files, DEFAULT_OPEN_FILES, resource.RLIMIT_NOFILE
            ),
            pass_env=tuple(pass_env),
        )

    def shim_config(self) -> dict[str, Any]:
        """What ``shim.py`` applies to the job's first process before it runs."""
        rlimits: dict[str, int] = {"CORE": 0}
        if self.memory_bytes:
            rlimits["DATA"] = self.memory_bytes
        if self.open_files:
            rlimits["NOFILE"] = self.open_files
        config: dict[str, Any] = {"rlimits": rlimits}
        if self.run_as is not None:
            config.update(uid=self.run_as.uid, gid=self.run_as.gid, groups=list(self.run_as.groups))
        return config

    def describe(self) -> str:
        who = (
            f"as {self.run_as.name} (uid {self.run_as.uid})"
            if self.run_as
            else f"as the agent's user (uid {os.geteuid()})"
        )
        memory = _mib(self.memory_bytes) if self.memory_bytes else "unlimited"
        files = self.open_files or "unlimited"
        return f"{who}; per process: memory {memory}, open files {files}"

    def explain(self, error: str) -> str | None:
        """The limit a failure's last words point at, as the job's error should say it."""
        lowered = error.lower()
        if self.memory_bytes and any(
            sign in lowered
            for sign in ("memoryerror", "cannot allocate memory", "bad_alloc", "out of memory")
        ):
            return (
                f"memory is limited to {_mib(self.memory_bytes)} per process on this node:"
                " shelby agent --memory-limit"
            )
        if self.open_files and "too many open files" in lowered:
            return (
                f"open files are limited to {self.open_files} per process on this node:"
                " shelby agent --max-open-files"
            )
        return None

    def user_name(self) -> str:
        if self.run_as is not None:
            return self.run_as.name
        try:
            return pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            return str(os.geteuid())


def job_environment(
    base: Mapping[str, str],
    secrets: Iterable[str],
    extra: Mapping[str, str],
    pass_env: Iterable[str] = (),
) -> dict[str, str]:
    """The environment a job's processes get: of ``base`` (the agent's), only the
    allowed variables and those named in ``pass_env``, never one of Shelby's own
    (``SHELBY_*``: tokens, the server) nor one whose value holds one of ``secrets``;
    then ``extra``."""
    hidden = [s for s in secrets if s]
    named = set(pass_env)
    env = {
        name: value
        for name, value in base.items()
        if (name in ALLOWED_VARIABLES or name.startswith(ALLOWED_PREFIXES) or name in named)
        and not name.startswith("SHELBY_")
        and not any(secret in value for secret in hidden)
    }
    env.update(extra)
    return env


def make_undumpable() -> None:
    """Keep processes of this user (a job's, without --run-as) out of this one's
    memory: ``/proc/<pid>/environ``, ``mem`` and ptrace need CAP_SYS_PTRACE from now
    on, and no core file is written. Linux only; elsewhere nothing happens."""
    try:
        failed = ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0
    except (OSError, AttributeError):  # not Linux: no prctl
        return
    if failed:  # the sandbox is weaker than SECURITY.md says: say so
        log.warning("could not make the agent non-dumpable", errno=ctypes.get_errno())


def prepare_work_dir(work_dir: Path, sandbox: Sandbox, python: str) -> None:
    """Create the work directory. With --run-as, the agent's state stays its own while
    the user can pass through to the job directories (0711: no listing), and a probe
    run as the user checks that it can start ``python`` and reach them."""
    jobs = work_dir / "jobs"
    environments = work_dir / "environments"
    for directory in (work_dir, jobs, environments):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    run_as = sandbox.run_as
    if run_as is None:
        return
    for directory in (work_dir, jobs, environments):
        os.chmod(directory, 0o711)
    try:
        probe = subprocess.run(
            [python, "-I", "-S", "-c", _PROBE, str(jobs)],
            user=run_as.uid,
            group=run_as.gid,
            extra_groups=list(run_as.groups),
            env={"PATH": os.defpath},
            cwd="/",
            capture_output=True,
            timeout=60,
            check=False,
        )
    except OSError as exc:
        raise SandboxError(
            f"--run-as {run_as.name}: {run_as.name} cannot run {python} ({exc.strerror}),"
            " the Python that job environments are made from; name one it can run with"
            " --job-python"
        ) from exc
    if probe.returncode == 3:
        raise SandboxError(
            f"--run-as {run_as.name}: {run_as.name} cannot reach {jobs} (a directory on the"
            " way is closed to it); put the work directory where it can"
        )
    if probe.returncode != 0:
        raise SandboxError(
            f"--run-as {run_as.name}: {python} failed as {run_as.name} (exit code"
            f" {probe.returncode}): {probe.stderr.decode(errors='replace').strip()[-300:]}"
        )


def hand_over(path: Path, run_as: RunAs) -> None:
    """Give ``path`` (and what is below it) to the user. Only for what the agent just
    made and the user cannot have touched yet: the walk follows no link."""
    for directory, dirs, files in os.walk(path, followlinks=False):
        for name in (*dirs, *files):
            os.chown(os.path.join(directory, name), run_as.uid, run_as.gid, follow_symlinks=False)
    os.chown(path, run_as.uid, run_as.gid, follow_symlinks=False)


def freeze(path: Path, run_as: RunAs) -> None:
    """Take back a tree the user built (an environment): what the user owns becomes the
    agent's, readable by all and writable by none but the agent; set-id bits go.

    The tree is walked by directory descriptors and nothing is followed, so that a
    link planted in it cannot point the agent at a file elsewhere; and only what the
    user owns changes hands.
    """
    uid, gid = os.geteuid(), os.getegid()

    def take(fd: int) -> None:
        st = os.fstat(fd)
        if st.st_uid != run_as.uid:
            return
        os.fchown(fd, uid, gid)
        keep = st.st_mode & 0o755
        readable = 0o555 if stat.S_ISDIR(st.st_mode) or st.st_mode & 0o100 else 0o444
        os.fchmod(fd, keep | readable)

    for _root, dirs, files, root_fd in os.fwalk(path, follow_symlinks=False):
        take(root_fd)
        for name in (*dirs, *files):
            st = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                if st.st_uid == run_as.uid:
                    os.chown(name, uid, gid, dir_fd=root_fd, follow_symlinks=False)
            elif stat.S_ISREG(st.st_mode):
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=root_fd)
                except OSError:
                    continue
                try:
                    take(fd)
                finally:
                    os.close(fd)
            elif not stat.S_ISDIR(st.st_mode) and st.st_uid == run_as.uid:
                os.unlink(name, dir_fd=root_fd)  # a pipe or socket: no part of an environment

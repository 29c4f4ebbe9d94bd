"""The agent's sandbox, with real ``shelby agent`` processes running real scripts that
try to get out: at the agent's credentials, past their timeout or cancel, beyond
their limits. SECURITY.md says what the sandbox is and is not.

``--run-as`` tests use the system's ``nobody`` (no user is created) and a work
directory under /tmp that nobody can pass through (pytest's own tmp_path is closed to
other users). Scripts report what they saw on stdout, as JSON, for the test to read
from the server's log.
"""

from __future__ import annotations

import ctypes
import json
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from test_agent_jobs import create_job, gone, printed, shell_model_hash, wait_status

from conftest import AgentFactory, wait_for
from shelby.agent.environments import base_python

_PR_CAPBSET_DROP = 24
CAP_SETUID = 7

# Tries each way at the agent's secrets; prints what each attempt came to.
PROBE_SCRIPT = """
import json, os, sys
agent, work = {agent_pid}, {work_dir!r}
secrets = {secrets!r}

def attempt(action):
    try:
        action()
    except OSError as exc:
        return type(exc).__name__
    return "allowed"

def read(path):
    return lambda: open(path, "rb").read()

def holds_the_job(pid):
    try:
        return b"SHELBY_JOB_ID=" in open(f"/proc/{{pid}}/environ", "rb").read()
    except OSError as exc:
        return type(exc).__name__

own = ("SHELBY_JOB_ID", "SHELBY_ATTEMPT", "SHELBY_DATASET_PATH", "SHELBY_OUTPUT_DIR")
print(json.dumps({{
    "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups(),
    "leaked": sorted(k for k, v in os.environ.items()
                     if (k.startswith("SHELBY_") and k not in own)
                     or any(s in v for s in secrets)),
    "agent environ": attempt(read(f"/proc/{{agent}}/environ")),
    "agent memory": attempt(read(f"/proc/{{agent}}/mem")),
    "parent environ": holds_the_job(os.getppid()),
    "node.json": attempt(read(work + "/node.json")),
    "token file": attempt(read({token_file!r})),
    "spool": attempt(read(os.path.dirname(os.getcwd()) + "/log/lines.jsonl")),
    "signal the agent": attempt(lambda: os.kill(agent, 0)),
    "write the environment": attempt(
        lambda: open(os.environ["VIRTUAL_ENV"] + "/planted.py", "w")),
    "home": os.environ["HOME"] == os.path.dirname(os.getcwd()) + "/home",
    "write home": attempt(lambda: open(os.environ["HOME"] + "/.cache", "w")),
}}), flush=True)
open(os.environ["SHELBY_OUTPUT_DIR"] + "/model.bin", "wb").write(b"weights")
"""

# Leaves a grandchild that escapes: its own session (setsid), its parent gone (so it
# is nobody's child in the job's tree), deaf to SIGTERM, like the script itself.
ESCAPING_SCRIPT = """
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
read, write = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(write, f"{os.getpid()} {os.getsid(0)}".encode())
        time.sleep(600)
    os._exit(0)
os.close(write)
grandchild, session = os.read(read, 100).decode().split()
os.wait()
print(f"tree {os.getpid()} {os.getsid(0)} {grandchild} {session}", flush=True)
time.sleep(600)
"""


def without_capabilities(*capabilities: int) -> Callable[[], None]:
    """A preexec_fn: the process and all it starts lose these capabilities, root or not."""

    def drop() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in capabilities:
            if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), f"cannot drop capability {capability}")

    return drop


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory under /tmp that other users may pass through (not list)."""
    path = Path(tempfile.mkdtemp(prefix="shelby-sandbox-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def nobody() -> pwd.struct_passwd:
    return pwd.getpwnam("nobody")


@pytest.fixture
def nobody_python(nobody: pwd.struct_passwd) -> str:
    """A Python that nobody can run, to make job environments from: the agent's own
    may live where nobody cannot go (pyenv under /root)."""
    candidates = [base_python(), "/usr/bin/python3", "/usr/local/bin/python3"]
    for python in dict.fromkeys(candidates):
        try:
            subprocess.run([python, "-c", "pass"], user=nobody.pw_uid, check=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        return python
    pytest.fail(f"none of {candidates} can be run by nobody")


@pytest.fixture
def nobody_agent(nobody: pwd.struct_passwd, nobody_python: str) -> tuple[str, dict[str, str]]:
    """How nobody can run ``python -m shelby``: a Python of the agent's version that
    nobody can run, given this checkout's code and installed packages by PYTHONPATH."""
    import shelby

    paths = [str(Path(shelby.__file__).parents[1]), sysconfig.get_paths()["purelib"]]
    env = {"PYTHONPATH": os.pathsep.join(paths)}
    check = f"import sys, shelby.cli; assert sys.version_info[:2] == {sys.version_info[:2]!r}"
    done = subprocess.run(
        [nobody_python, "-c", check],
        env={**os.environ, **env},
        user=nobody.pw_uid,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"nobody cannot run shelby with {nobody_python} and {paths}: {done.stderr}")
    return nobody_python, env


def report(server: Any, job_id: str) -> dict[str, Any]:
    reports = [line for line in printed(server, job_id) if line.startswith("{")]
    assert len(reports) == 1, printed(server, job_id)
    found: dict[str, Any] = json.loads(reports[0])
    return found


def tree_of(server: Any, job_id: str) -> tuple[int, int, int, int]:
    """(script pid, its session, grandchild pid, the grandchild's session)."""

    def reported() -> str | None:
        return next((line for line in printed(server, job_id) if line.startswith("tree ")), None)

    line = wait_for(reported, 30, f"the tree of {job_id}")
    script, session, grandchild, escaped = (int(field) for field in line.split()[1:])
    return script, session, grandchild, escaped


# --- credentials --------------------------------------------------------------------


def test_run_as_a_script_runs_as_the_user_and_cannot_reach_the_agents_credentials(
    shelby_server: Any,
    agents: AgentFactory,
    open_dir: Path,
    nobody: pwd.struct_passwd,
    nobody_python: str,
) -> None:
    """With --run-as nobody the script is nobody: no token in its environment, and
    /proc/<agent>/environ and mem, node.json, the join token file, the log spool, the
    agent itself and its cached environment are all refused; its own home and output
    are its own, and its model is hashed as written."""
    token_file = open_dir / "join.token"
    token_file.write_text(shelby_server.join_token + "\n")
    token_file.chmod(0o600)
    work_dir = open_dir / "work"
    agent = agents(
        shelby_server,
        "--run-as",
        "nobody",
        "--job-python",
        nobody_python,
        "--join-token-file",
        str(token_file),
        work_dir=work_dir,
        token_in_env=False,
    )
    assert agent.proc is not None
    script = PROBE_SCRIPT.format(
        agent_pid=agent.proc.pid,
        work_dir=str(work_dir),
        secrets=[shelby_server.join_token, shelby_server.admin_token],
        token_file=str(token_file),
    )
    job_id = create_job(shelby_server, script)
    job = wait_status(shelby_server, job_id, "finished", "failed")
    assert job["status"] == "finished", (job, agent.log_text()[-2000:])

    seen = report(shelby_server, job_id)
    node_token = json.loads((work_dir / "node.json").read_text())["token"]
    assert node_token not in json.dumps(seen)
    assert (seen["uid"], seen["euid"], seen["gid"]) == (nobody.pw_uid, nobody.pw_uid, nobody.pw_gid)
    assert seen["groups"] == sorted(set(os.getgrouplist("nobody", nobody.pw_gid)))
    assert seen["leaked"] == []
    refused = "PermissionError"
    for what in (
        "agent environ",
        "agent memory",
        "node.json",
        "token file",
        "spool",
        "signal the agent",
        "write the environment",
    ):
        assert seen[what] == refused, (what, seen)
    assert seen["parent environ"] == refused  # the shim is root's
    assert seen["home"] is True and seen["write home"] == "allowed"

    out = agent.attempt_dir(job_id, 1) / "out"
    assert (out / "model.bin").stat().st_uid == nobody.pw_uid
    assert job["modelHash"] == shell_model_hash(out)
    assert (work_dir / "node.json").stat().st_mode & 0o777 == 0o600
    system = printed(shelby_server, job_id, stream="system")
    assert any(f"as nobody (uid {nobody.pw_uid})" in line for line in system), system


def test_without_run_as_a_script_of_the_agents_user_cannot_read_its_environ_or_memory(
    shelby_server: Any,
    agents: AgentFactory,
    open_dir: Path,
    nobody: pwd.struct_passwd,
    nobody_agent: tuple[str, dict[str, str]],
) -> None:
    """An agent run as an unprivileged user (nobody) runs jobs as that same user. The
    agent is not dumpable, so /proc/<agent>/environ (which holds the tokens it was
    started with) and its memory are refused to the script, while the same read of
    the script's own parent (the shim, dumpable, the same user) works."""
    work_dir = open_dir / "work"
    work_dir.mkdir(mode=0o700)
    os.chown(work_dir, nobody.pw_uid, nobody.pw_gid)
    python, env = nobody_agent
    agent = agents(
        shelby_server,
        work_dir=work_dir,
        python=python,
        env=env,
        popen={"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []},
    )
    assert agent.proc is not None
    script = PROBE_SCRIPT.format(
        agent_pid=agent.proc.pid,
        work_dir=str(work_dir),
        secrets=[shelby_server.join_token, shelby_server.admin_token],
        token_file="/nonexistent",
    )
    job_id = create_job(shelby_server, script)
    job = wait_status(shelby_server, job_id, "finished", "failed")
    assert job["status"] == "finished", (job, agent.log_text()[-2000:])
    seen = report(shelby_server, job_id)
    assert seen["uid"] == nobody.pw_uid == psutil.Process(agent.proc.pid).uids().real
    assert seen["leaked"] == []
    assert seen["agent environ"] == seen["agent memory"] == "PermissionError"
    assert seen["parent environ"] is True  # the same read of a dumpable process works
    agent_environ = Path(f"/proc/{agent.proc.pid}/environ").read_bytes()
    assert shelby_server.admin_token.encode() in agent_environ  # there, and hidden


# --- the process tree ---------------------------------------------------------------


def test_a_timeout_and_a_cancel_each_kill_their_own_tree_escaped_grandchildren_too(
    shelby_server: Any,
    agents: AgentFactory,
) -> None:
    """Two jobs side by side on one node, each leaving a grandchild that escaped into a
    session of its own and ignores SIGTERM. Deleting one kills its whole tree and
    nothing of the other; the other's timeout then kills its whole tree."""
    timed = create_job(shelby_server, ESCAPING_SCRIPT, timeoutMinutes=0.15)
    deleted = create_job(shelby_server, ESCAPING_SCRIPT)
    agents(shelby_server, "--max-jobs", "2")
    trees = {job_id: tree_of(shelby_server, job_id) for job_id in (timed, deleted)}
    for _script, session, grandchild, escaped in trees.values():
        assert escaped != session
        holder = psutil.Process(grandchild).parent()
        assert holder is not None and "shim.py" in " ".join(holder.cmdline())

    with shelby_server.client() as http:
        assert http.delete(f"/api/frontend/jobs/{deleted}").status_code == 200
    script, _, grandchild, _ = trees[deleted]
    for pid in (script, grandchild):
        wait_for(lambda pid=pid: gone(pid), 10, f"pid {pid} of the deleted job to die")
    assert wait_status(shelby_server, timed, "running", "failed")["status"] == "running"
    assert not any(gone(pid) for pid in trees[timed][::2])

    job = wait_status(shelby_server, timed, "failed", timeout=30)
    assert job["error"] == "timeout"
    script, _, grandchild, _ = trees[timed]
    for pid in (script, grandchild):
        wait_for(lambda pid=pid: gone(pid), 5, f"pid {pid} of the timed-out job to die")


# --- limits -------------------------------------------------------------------------


def test_memory_and_open_files_are_limited_per_process_and_a_breach_says_so(
    shelby_server: Any,
    agents: AgentFactory,
) -> None:
    """--memory-limit 200M and --max-open-files 32 bind the script (soft and hard, so it
    cannot raise them): 64 MiB is fine, 400 MiB more fails; the 33rd file fails; each
    job fails naming the limit it met."""
    limits = textwrap.dedent("""
        import json, resource
        def attempt(action):
            try:
                action()
            except ValueError as exc:
                return type(exc).__name__
            return "allowed"
        print(json.dumps({
            "data": resource.getrlimit(resource.RLIMIT_DATA),
            "files": resource.getrlimit(resource.RLIMIT_NOFILE),
            "raise": attempt(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))),
        }), flush=True)
    """)
    allocate = "kept = bytearray(64 << 20)\nprint('64 MiB', flush=True)\nbytearray(400 << 20)\n"
    memory = create_job(shelby_server, limits + allocate)
    files = create_job(shelby_server, limits + "kept = [open(__file__) for _ in range(100)]\n")
    agents(shelby_server, "--memory-limit", "200M", "--max-open-files", "32", "--max-jobs", "2")

    for job_id in (memory, files):
        job = wait_status(shelby_server, job_id, "finished", "failed")
        assert job["status"] == "failed" and job["exitCode"] == 1, job
        assert report(shelby_server, job_id) == {
            "data": [200 << 20, 200 << 20],
            "files": [32, 32],
            "raise": "ValueError",
        }
    job = wait_status(shelby_server, memory, "failed")
    assert job["error"] == (
        "exit code 1: MemoryError (memory is limited to 200 MiB per process on this node:"
        " shelby agent --memory-limit)"
    )
    assert "64 MiB" in printed(shelby_server, memory)
    job = wait_status(shelby_server, files, "failed")
    assert job["error"].startswith("exit code 1: OSError: [Errno 24] Too many open files")
    assert job["error"].endswith(
        "(open files are limited to 32 per process on this node: shelby agent --max-open-files)"
    )


# --- refusals -----------------------------------------------------------------------


def refusal(*args: str, preexec_fn: Callable[[], None] | None = None) -> str:
    """Start an agent that must refuse to start (before it contacts any server): its
    exit code is 1, its message is returned."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELBY_")}
    done = subprocess.run(
        [sys.executable, "-m", "shelby", "agent", "--server", "http://127.0.0.1:9", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=preexec_fn,
        check=False,
    )
    assert done.returncode == 1, (done.returncode, done.stderr)
    return done.stderr


def test_run_as_is_refused_with_a_reason_when_it_cannot_hold(
    open_dir: Path, tmp_path: Path, nobody_python: str
) -> None:
    """An unknown user; an agent without CAP_SETUID; a work directory nobody cannot
    reach; a Python nobody cannot run: each stops the agent before it joins, saying so."""
    work = str(open_dir / "work")
    assert "--run-as no-such-user-here: no such user" in refusal(
        "--run-as", "no-such-user-here", "--work-dir", work
    )
    message = refusal(
        "--run-as", "nobody", "--work-dir", work, preexec_fn=without_capabilities(CAP_SETUID)
    )
    assert "--run-as nobody needs the agent to run as root with CAP_SETUID" in message
    closed = tmp_path / "closed"  # under pytest's 0700 directory
    message = refusal(
        "--run-as", "nobody", "--work-dir", str(closed), "--job-python", nobody_python
    )
    assert f"nobody cannot reach {closed / 'jobs'}" in message
    hidden = open_dir / "private"
    hidden.mkdir(mode=0o700)
    (hidden / "python").symlink_to(nobody_python)
    message = refusal(
        "--run-as", "nobody", "--work-dir", work, "--job-python", str(hidden / "python")
    )
    assert f"nobody cannot run {hidden / 'python'}" in message
    assert "--job-python" in message

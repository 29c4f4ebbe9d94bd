"""One command gives a working system: ``shelby serve --with-agent``, driven from a
terminal with ``shelby submit``, ``jobs``, ``nodes`` and ``logs -f``."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def test_serve_with_agent_runs_a_job_submitted_from_the_terminal(
    server_factory: Any, tmp_path: Path
) -> None:
    """submit (script + requirements file) → the built-in agent runs it → logs -f
    follows it to the end → jobs and nodes show the outcome."""
    server = server_factory(args=("--with-agent",))
    dataset = tmp_path / "numbers.txt"
    dataset.write_text("\n".join(str(i) for i in range(100)) + "\n")
    digest = "sha256:" + hashlib.sha256(dataset.read_bytes()).hexdigest()
    script = tmp_path / "fit.py"
    script.write_text(
        "import os, pathlib, sys, time\n"
        "numbers = pathlib.Path(os.environ['SHELBY_DATASET_PATH']).read_text().split()\n"
        "for step in range(5):\n"
        "    print(f'step {step} mean={sum(map(int, numbers)) / len(numbers)}', flush=True)\n"
        "    time.sleep(0.2)\n"
        "print('almost done', file=sys.stderr)\n"
        "(pathlib.Path(os.environ['SHELBY_OUTPUT_DIR']) / 'model.txt').write_text('49.5')\n"
    )
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("")

    submitted = server.cli(
        "submit",
        str(script),
        "--name",
        "numbers",
        "--dataset-url",
        dataset.as_uri(),
        "--dataset-hash",
        digest,
        "--requirements",
        str(requirements),
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[1]
    assert job_id.startswith("job-")

    followed = server.cli("logs", job_id, "-f")
    assert followed.returncode == 0, followed.stderr
    for step in range(5):
        assert f"step {step} mean=49.5" in followed.stdout
    assert "almost done" in followed.stdout
    assert "--- finished: sha256:" in followed.stdout

    jobs = server.cli("jobs")
    assert jobs.returncode == 0, jobs.stderr
    row = next(line for line in jobs.stdout.splitlines() if job_id in line)
    assert "finished" in row and "numbers" in row and "sha256:" in row

    nodes = server.cli("nodes", "--server", server.url)
    assert nodes.returncode == 0, nodes.stderr
    assert "active" in nodes.stdout and "node-" in nodes.stdout

    assert (server.data_dir / "agent" / "node.json").exists()


def test_terminal_commands_explain_a_missing_token(server_factory: Any) -> None:
    """Without the admin token the commands fail with one readable line, not a traceback."""
    server = server_factory()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELBY_")}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "shelby", "jobs", "--server", server.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert "401" in done.stderr and "SHELBY_ADMIN_TOKEN" in done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 30


def test_stopping_serve_with_agent_hands_the_running_job_back(
    server_factory: Any, tmp_path: Path
) -> None:
    """A signal to ``shelby serve --with-agent`` stops the agent first, while the server
    still answers, so the running attempt is handed back (requeued), not lost or failed."""
    import sqlite3

    server = server_factory(args=("--with-agent",))
    script = tmp_path / "slow.py"
    script.write_text("import time\nprint('started', flush=True)\ntime.sleep(120)\n")
    submitted = server.cli("submit", str(script), "--name", "slow")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[1]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = next((line for line in server.cli("jobs").stdout.splitlines() if job_id in line), "")
        if "running" in row:
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"the job never ran:\n{server.log_text()[-2000:]}")

    server.stop()  # SIGTERM; uvicorn re-raises it once shut down, so the code is -15
    conn = sqlite3.connect(server.db)
    types = [
        t
        for (t,) in conn.execute(
            "SELECT type FROM events WHERE stream = ? ORDER BY seq", (f"job-{job_id}",)
        )
    ]
    conn.close()
    assert types[-1] == "JobReleased", types
    assert "JobFailed" not in types

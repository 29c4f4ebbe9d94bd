"""The HTTP API from a terminal: ``shelby submit``, ``jobs``, ``nodes``, ``logs``."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import httpx
from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["COMMANDS"]

DEFAULT_SERVER = "http://127.0.0.1:8000"

out = Console()
err = Console(stderr=True)

_STATUS_STYLE = {
    "pending": "yellow",
    "assigned": "cyan",
    "running": "blue",
    "finished": "green",
    "failed": "red",
    "active": "green",
    "inactive": "dim",
}
_STREAM_STYLE = {"stderr": "red", "system": "dim"}

server_option = click.option(
    "--server",
    envvar="SHELBY_SERVER",
    default=DEFAULT_SERVER,
    show_default=True,
    help="The coordinator ($SHELBY_SERVER).",
)
token_option = click.option(
    "--token",
    envvar="SHELBY_ADMIN_TOKEN",
    default=None,
    help="The admin token ($SHELBY_ADMIN_TOKEN).",
)


class Api:
    """A thin admin client: every error becomes a one-line ``ClickException``."""

    def __init__(self, server: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=30.0)
        self.server = server

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise click.ClickException(f"cannot reach {self.server}: {exc}") from exc
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            hint = " (set SHELBY_ADMIN_TOKEN or --token)" if response.status_code == 401 else ""
            raise click.ClickException(f"{method} {path}: {response.status_code} {detail}{hint}")
        return response.json()


def _status(text: str | None) -> Text:
    return Text(text or "-", style=_STATUS_STYLE.get(text or "", ""))


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _short_hash(value: str | None) -> str:
    """Enough of a hash to tell models apart in a table; ``shelby logs`` shows it whole."""
    return value[:19] + "…" if value and len(value) > 20 else value or ""


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f}s"
    return f"{value / 60:.1f}m"


@click.command()
@server_option
@token_option
@click.argument("script", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", "dataset_name", help="The dataset's name, shown in lists.")
@click.option("--dataset-url", help="file://, http:// or https:// URL of the dataset file.")
@click.option("--dataset-hash", help="sha256:<hex> of the dataset file; checked before running.")
@click.option(
    "--requirements",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A requirements.txt to install for the script.",
)
@click.option("--entrypoint", help="The script's file name on the node [SCRIPT's name].")
@click.option("--job-id", help="Choose the job's id instead of letting the server make one.")
@click.option("--runtime-estimate", type=float, help="Expected minutes.")
@click.option("--timeout-minutes", type=float, help="Stop the job after this many minutes.")
@click.option("--max-attempts", type=int, help="How often a lost lease is retried.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Node labels needed.")
def submit(
    server: str,
    token: str | None,
    script: Path,
    dataset_name: str | None,
    dataset_url: str | None,
    dataset_hash: str | None,
    requirements: Path | None,
    entrypoint: str | None,
    job_id: str | None,
    runtime_estimate: float | None,
    timeout_minutes: float | None,
    max_attempts: int | None,
    labels: tuple[str, ...],
) -> None:
    """Create a job and upload SCRIPT for it, in one step."""
    body: dict[str, Any] = {
        "datasetName": dataset_name or script.stem,
        "datasetUrl": dataset_url,
        "datasetHash": dataset_hash,
        "meta": {"submittedFrom": str(script)},
    }
    optional = {
        "jobId": job_id,
        "runtimeMinutesEstimate": runtime_estimate,
        "timeoutMinutes": timeout_minutes,
        "maxAttempts": max_attempts,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if labels:
        pairs = [label.partition("=") for label in labels]
        if any(not sep for _, sep, _ in pairs):
            raise click.BadParameter("labels are KEY=VALUE", param_hint="--label")
        body["labels"] = {k: v for k, _, v in pairs}
    with Api(server, token) as api:
        job = api.call("POST", "/api/jobs/create", json=body)
        uploaded = api.call(
            "POST",
            "/api/jobs/upload-script",
            json={
                "jobId": job["jobId"],
                "script": script.read_text(encoding="utf-8"),
                "requirements": requirements.read_text(encoding="utf-8") if requirements else "",
                "entrypoint": entrypoint or script.name,
            },
        )
    out.print(
        f"submitted [bold]{job['jobId']}[/bold]  script {uploaded['scriptHash']}"
        f"  entrypoint {uploaded['entrypoint']}",
        soft_wrap=True,
    )
    out.print(f"follow it with: shelby logs {job['jobId']} -f", style="dim")


@click.command()
@server_option
@token_option
@click.option(
    "--status", type=click.Choice(["pending", "assigned", "running", "finished", "failed"])
)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
def jobs(server: str, token: str | None, status: str | None, limit: int) -> None:
    """List jobs, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if status:
        params["status"] = status
    with Api(server, token) as api:
        answer = api.call("GET", "/api/frontend/jobs", params=params)
    table = Table(title=f"{answer['count']} jobs")
    for column in ("job", "status", "attempt", "dataset", "node", "created", "took"):
        table.add_column(column, no_wrap=True)
    table.add_column("result", overflow="fold")
    for job in answer["jobs"]:
        if job["status"] == "finished":
            result = _short_hash(job.get("modelHash"))
        elif job["status"] == "failed":
            result = job.get("error") or f"exit {job.get('exitCode')}"
        else:
            result = job.get("pendingReason") or ""
        table.add_row(
            job["jobId"],
            _status(job["status"]),
            f"{job.get('attempt', 1)}/{job.get('maxAttempts', '?')}",
            job.get("datasetName") or "-",
            job.get("assignedNode") or "-",
            _when(job.get("createdAt")),
            _seconds(job.get("duration")),
            result,
        )
    out.print(table)


@click.command()
@server_option
@token_option
def nodes(server: str, token: str | None) -> None:
    """List compute nodes, in the order they joined."""
    with Api(server, token) as api:
        answer = api.call("GET", "/api/frontend/nodes")
    table = Table(title=f"{answer['count']} nodes")
    for column in ("node", "name", "status", "seen", "cpu", "ram"):
        table.add_column(column, no_wrap=True)
    for column in ("specs", "labels", "jobs"):
        table.add_column(column, overflow="fold")
    for node in answer["nodes"]:
        specs = node.get("specs") or {}
        gpus = specs.get("gpus") or []
        described = f"{specs.get('cpuCount', '?')} CPU, {specs.get('totalRAM_GB', '?')} GB"
        if gpus:
            described += f", {len(gpus)}x {gpus[0].get('name', 'GPU')}"
        cpu, ram = specs.get("cpuUsage"), specs.get("ramUsage")
        table.add_row(
            node["nodeId"],
            node.get("name") or "-",
            _status(node["status"]),
            f"{node.get('lastSeenAgo', '?')}s ago",
            "-" if cpu is None else f"{cpu:.0f}%",
            "-" if ram is None else f"{ram:.0f}%",
            described,
            ", ".join(f"{k}={v}" for k, v in (node.get("labels") or {}).items()) or "-",
            ", ".join(node.get("runningJobs") or []) or "-",
        )
    out.print(table)


def _print_lines(lines: list[dict[str, Any]]) -> None:
    for entry in lines:
        stamp = datetime.fromtimestamp(entry["timestamp"], tz=UTC).astimezone()
        text = Text(f"{stamp:%H:%M:%S} ", style="dim")
        text.append(entry["line"], style=_STREAM_STYLE.get(entry.get("stream", ""), ""))
        if entry.get("truncated"):
            text.append(" [truncated]", style="dim")
        out.print(text, soft_wrap=True, highlight=False, markup=False)


@click.command()
@server_option
@token_option
@click.argument("job_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the job ends.")
@click.option("--attempt", type=int, help="Which attempt [the current one].")
@click.option("--limit", type=click.IntRange(1, 10_000), default=1000, show_default=True)
@click.option("--interval", type=float, default=0.5, show_default=True, hidden=True)
def logs(
    server: str,
    token: str | None,
    job_id: str,
    follow: bool,
    attempt: int | None,
    limit: int,
    interval: float,
) -> None:
    """Print a job's log; with -f, follow it (to the next attempt too) until it ends."""
    with Api(server, token) as api:
        params: dict[str, Any] = {"limit": limit}
        if attempt is not None:
            params["attempt"] = attempt
        answer = api.call("GET", f"/api/frontend/logs/{job_id}", params=params)
        for part in answer.get("archived", []):
            err.print(
                f"lines {part['firstOffset']}..{part['lastOffset']} of attempt"
                f" {answer['attempt']} were archived to {part['segment']} (beside the log)",
                style="dim",
            )
        _print_lines(answer["logs"])
        if not follow:
            return
        current = answer["attempt"]
        after = answer["logs"][-1]["offset"] if answer["logs"] else -1
        while True:
            page = api.call(
                "GET",
                f"/api/frontend/logs/{job_id}",
                params={"after": after, "limit": 1000, "attempt": current},
            )
            _print_lines(page["logs"])
            if page["logs"]:
                after = page["logs"][-1]["offset"]
            if len(page["logs"]) >= 1000:
                continue  # more are waiting: no pause
            mine = api.call("GET", f"/api/frontend/jobs/{job_id}")
            if attempt is None and mine["attempt"] != current:
                current, after = mine["attempt"], -1
                out.print(f"--- attempt {current} ---", style="bold")
                continue
            if mine["status"] in ("finished", "failed") and mine["attempt"] == current:
                # One last read: lines that landed between the two calls.
                tail = api.call(
                    "GET",
                    f"/api/frontend/logs/{job_id}",
                    params={"after": after, "limit": 10_000, "attempt": current},
                )
                _print_lines(tail["logs"])
                summary = (
                    mine.get("modelHash") if mine["status"] == "finished" else mine.get("error")
                )
                out.print(
                    f"--- {mine['status']}: {summary or ''}", style=_STATUS_STYLE[mine["status"]]
                )
                return
            time.sleep(interval)


COMMANDS = (submit, jobs, nodes, logs)

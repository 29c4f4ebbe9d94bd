"""The dashboard in a real browser (Debian's Chromium, headless, driven by Playwright)
against a real ``shelby serve`` and a real ``shelby agent``.

Every page is saved as a screenshot under ``test-artifacts/dashboard/``, to be looked at.
Chromium comes from ``make chromium`` (apt); Playwright's own browser download is never used.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from conftest import JOIN_TOKEN, ServerProcess

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}

expect.set_options(timeout=20_000)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("no /usr/bin/chromium: `make chromium` installs Debian's package")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()


class Tab:
    """A page, with the script errors it raised (there must be none)."""

    def __init__(self, context: BrowserContext) -> None:
        self.context = context
        self.page = context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def shot(self, name: str) -> None:
        # From the top, so that the sticky header is not drawn across the middle.
        self.page.evaluate("window.scrollTo(0, 0)")
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture
def tab(browser: Browser) -> Iterator[Tab]:
    context = browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    t = Tab(context)
    yield t
    context.close()
    assert t.errors == [], "the page raised script errors"


@pytest.fixture
def agent(shelby_server: ServerProcess, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``shelby agent`` joined to the server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELBY_")}
    log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shelby",
            "agent",
            "--server",
            shelby_server.url,
            "--join-token",
            JOIN_TOKEN,
            "--work-dir",
            str(tmp_path / "agent"),
            "--name",
            "e2e-node",
            "--poll-wait",
            "2",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield proc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def _open(tab: Tab, server: ServerProcess, route: str) -> Page:
    tab.page.goto(f"{server.url}/?token={server.admin_token}#{route}")
    return tab.page


def _admin(server: ServerProcess) -> httpx.Client:
    return server.client()


# --- the whole road ------------------------------------------------------------------


def test_a_job_made_in_the_browser_streams_live_finishes_and_is_deleted(
    shelby_server: ServerProcess,
    agent: subprocess.Popen[bytes],
    tab: Tab,
    tmp_path: Path,
) -> None:
    """Create a job with a script file through the form; a real agent runs it; its lines
    appear live on the job page, stdout and stderr apart; it turns finished; the
    provenance shows each event with its hash from the log; deleting it (after a
    confirmation) takes it off the job table."""
    release = tmp_path / "release"
    script = tmp_path / "train.py"
    # The script waits for the test before its last lines, so that the page is seen
    # following a job that is still running.
    script.write_text(
        "import pathlib, sys, time\n"
        "print('starting training', flush=True)\n"
        "print('a warning on stderr', file=sys.stderr, flush=True)\n"
        f"release = pathlib.Path({str(release)!r})\n"
        "while not release.exists():\n"
        "    time.sleep(0.05)\n"
        "print('epoch 1 loss=0.25', flush=True)\n"
        "print('training done', flush=True)\n"
    )
    page = _open(tab, shelby_server, "/new")

    # The token is kept for the session and taken out of the address.
    expect(page.locator("#datasetName")).to_be_visible()
    assert "token" not in page.url
    assert page.evaluate("sessionStorage.getItem('shelby.adminToken')") == (
        shelby_server.admin_token
    )

    page.fill("#datasetName", "e2e dataset")
    page.set_input_files("#scriptFile", str(script))
    expect(page.locator("#script")).to_have_value(script.read_text())
    expect(page.locator("#entrypoint")).to_have_value("train.py")
    tab.shot("new-job")
    page.get_by_role("button", name="Create job").click()

    page.wait_for_url("**/#/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]
    log = page.locator(".log-lines")
    expect(log.locator(".ln-text", has_text="starting training")).to_be_visible()
    stderr_line = log.locator(".ln-stderr .ln-text")
    expect(stderr_line).to_have_text("a warning on stderr")
    expect(log.locator(".ln-stdout .ln-text", has_text="starting training")).to_have_count(1)
    badge = page.locator(".job-title .badge")
    expect(badge).to_have_text("running")
    expect(log.locator(".ln-text", has_text="training done")).to_have_count(0)
    tab.shot("job-running")

    release.touch()
    expect(log.locator(".ln-text", has_text="training done")).to_be_visible()
    expect(badge).to_have_text("finished")
    expect(page.locator(".facts dd", has_text="sha256:").first).to_be_visible()
    types = ["JobCreated", "ScriptUploaded", "JobAssigned", "JobAcked", "JobFinished"]
    for type_ in types:
        expect(page.locator(f".timeline .ev-{type_}")).to_have_count(1)
    tab.shot("job-finished")

    # Each hash on the page is the one in the log, as an auditor would read it.
    with _admin(shelby_server) as admin:
        audit = admin.get(f"/api/audit/jobs/{job_id}").json()["events"]
    hashes = {e["seq"]: e["hash"] for e in audit}
    shown = page.locator(".timeline .event")
    for i in range(shown.count()):
        event = shown.nth(i)
        seq = int(event.get_attribute("data-seq") or "0")
        assert event.locator("code.hash").inner_text() == hashes[seq]
    assert {e["type"] for e in audit} >= set(types)

    # Restart: the same page follows the job into attempt 2, its log starting afresh.
    page.get_by_role("button", name="Restart").click()
    expect(page.locator(".log-status")).to_contain_text("Attempt 2")
    expect(badge).to_have_text("finished")
    expect(log.locator(".ln-text", has_text="training done")).to_have_count(1)
    expect(log.locator(".ln").first).to_have_attribute("data-offset", "0")
    expect(page.locator(".timeline .ev-JobRestarted")).to_have_count(1)
    expect(page.locator(".facts dd", has_text="2 of 3")).to_be_visible()

    # The other pages, while there is something to show.
    page.goto(f"{shelby_server.url}/#/")
    expect(page.locator(".stat-finished .value")).to_have_text("1")
    expect(page.locator(".stat-nodes .value")).to_have_text("1")
    expect(page.locator("svg.chart polyline")).to_have_count(3)
    tab.shot("overview")
    page.goto(f"{shelby_server.url}/#/nodes")
    expect(page.locator("tr", has_text="e2e-node").locator("[role=meter]")).to_have_count(2)
    tab.shot("nodes")
    page.goto(f"{shelby_server.url}/#/jobs")
    row = page.locator(f"tr[data-job-id='{job_id}']")
    expect(row).to_be_visible()
    tab.shot("jobs")

    # Delete, confirmed in a dialog; the job leaves the table.
    row.get_by_role("link", name=job_id).click()
    page.get_by_role("button", name="Delete…").click()
    dialog = page.locator("dialog.confirm")
    expect(dialog).to_be_visible()
    tab.page.screenshot(path=str(ARTIFACTS / "delete-confirm.png"))
    dialog.get_by_role("button", name="Delete job").click()
    page.wait_for_url("**/#/jobs")
    expect(page.locator(f"tr[data-job-id='{job_id}']")).to_have_count(0)
    expect(page.locator(".alert-notice", has_text=f"Job {job_id} deleted.")).to_be_visible()
    with _admin(shelby_server) as admin:
        assert admin.get(f"/api/frontend/jobs/{job_id}").status_code == 404


# --- live tables -----------------------------------------------------------------------


def _register(server: ServerProcess, name: str) -> tuple[str, httpx.Client]:
    with server.client(JOIN_TOKEN) as join:
        body = join.post(
            "/api/nodes/register",
            json={"name": name, "specs": {"cpuCount": 8, "totalRAM_GB": 32.0, "os": "Linux"}},
        ).json()
    return body["nodeId"], server.client(body["token"])


def test_tables_follow_changes_without_a_reload(shelby_server: ServerProcess, tab: Tab) -> None:
    """A job created elsewhere appears in the job table, filter and search narrow it, and
    a heartbeat moves a node's CPU and RAM bars, all without reloading the page."""
    page = _open(tab, shelby_server, "/jobs")
    expect(page.locator(".empty")).to_have_text("No jobs here yet.")
    with _admin(shelby_server) as admin:
        for job_id, name in (("mnist-1", "MNIST"), ("cifar-1", "CIFAR-10")):
            admin.post("/api/jobs/create", json={"jobId": job_id, "datasetName": name})
            admin.post("/api/jobs/upload-script", json={"jobId": job_id, "script": "print(1)"})
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(2)
    page.fill("#job-search", "cifar")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("CIFAR-10")
    assert "q=cifar" in page.url
    page.fill("#job-search", "")
    page.select_option("#status-filter", "running")
    expect(page.locator(".empty")).to_have_text("No jobs here yet.")
    page.select_option("#status-filter", "pending")
    expect(rows).to_have_count(2)

    # A pending job says why it waits.
    rows.filter(has_text="MNIST").get_by_role("link").click()
    expect(page.locator(".pending-reason")).to_contain_text("no node matches its resources")
    tab.shot("job-pending")

    node_id, node = _register(shelby_server, "gpu-box-7")
    page.goto(f"{shelby_server.url}/#/nodes")
    row = page.locator(f"tr[data-node-id='{node_id}']")
    expect(row).to_contain_text("gpu-box-7")
    node.post(
        "/api/nodes/heartbeat",
        json={"nodeId": node_id, "specs": {"cpuUsage": 91.0, "ramUsage": 35.5}},
    ).raise_for_status()
    cpu = row.locator("[role=meter]").first
    expect(cpu).to_have_attribute("aria-valuenow", "91.0")
    expect(row.locator("[role=meter]").nth(1)).to_have_attribute("aria-valuenow", "35.5")
    expect(row.locator(".bar-fill.high")).to_have_count(1)  # 91 % is drawn as high
    node.close()


def test_a_released_attempt_reads_as_handed_back_in_the_timeline(
    shelby_server: ServerProcess, tab: Tab
) -> None:
    """A job whose node handed its attempt back shows the JobReleased entry saying which
    node, which attempt, why, and that the job is back in the queue, by that node."""
    node_id, node = _register(shelby_server, "leaving-box")
    with _admin(shelby_server) as admin:
        admin.post("/api/jobs/create", json={"jobId": "handed", "datasetName": "MNIST"})
        admin.post("/api/jobs/upload-script", json={"jobId": "handed", "script": "print(1)"})
    job = node.get("/api/jobs/poll", params={"nodeId": node_id}).json()["job"]
    node.post(
        "/api/jobs/release",
        json={
            "jobId": "handed",
            "nodeId": node_id,
            "attempt": job["attempt"],
            "reason": "the agent shut down",
        },
    ).raise_for_status()
    node.close()
    page = _open(tab, shelby_server, "/jobs/handed")
    entry = page.locator(".timeline .ev-JobReleased")
    expect(entry).to_have_count(1)
    expect(entry.locator(".ev-text")).to_have_text(
        f"{node_id} handed attempt 1 back (the agent shut down); back in the queue."
    )
    expect(entry.locator(".ev-head")).to_contain_text(f"by {node_id}")
    expect(page.locator(".job-title .badge")).to_have_text("pending")
    tab.shot("job-released")


# --- errors, credentials, keyboard, phone ------------------------------------------------


def test_api_errors_are_shown_to_the_person(shelby_server: ServerProcess, tab: Tab) -> None:
    """A refused request shows the server's own ``detail``, on the form and as an alert."""
    with _admin(shelby_server) as admin:
        admin.post("/api/jobs/create", json={"jobId": "taken", "datasetName": "x"})
    page = _open(tab, shelby_server, "/new")
    page.fill("#datasetName", "again")
    page.fill("#jobId", "taken")
    page.fill("#script", "print('hello')")
    page.get_by_role("button", name="Create job").click()
    expect(page.locator(".job-form .error-text")).to_contain_text("The job was not created")
    expect(page.locator(".alert-error")).to_contain_text("Error 409")
    tab.shot("new-job-error")


def test_a_wrong_token_asks_for_the_right_one(shelby_server: ServerProcess, tab: Tab) -> None:
    """With a wrong token the page says so and asks for one; the right one then works."""
    page = tab.page
    page.goto(f"{shelby_server.url}/?token=wrong#/jobs")
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    # The refused live connection raises an alert of its own, which may come first.
    expect(page.locator(".alert-error").filter(has_text="401")).to_be_visible()
    tab.shot("token-dialog")
    page.fill("#token-input", shelby_server.admin_token)
    page.get_by_role("button", name="Use token").click()
    expect(dialog).to_be_hidden()
    expect(page.locator(".empty")).to_have_text("No jobs here yet.")
    expect(page.locator("#live")).to_have_text("live")


def test_the_pages_work_from_the_keyboard(shelby_server: ServerProcess, tab: Tab) -> None:
    """Tab reaches the skip link first and then the navigation; Enter follows a link."""
    page = _open(tab, shelby_server, "/")
    expect(page.locator(".stat").first).to_be_visible()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    focused: list[str] = []
    for _ in range(6):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.textContent.trim()"))
        if focused[-1] == "Nodes":
            break
    assert focused[-1] == "Nodes", focused
    page.keyboard.press("Enter")
    page.wait_for_url("**/#/nodes")
    expect(page.locator("h1")).to_have_text("Nodes")


def test_the_pages_fit_a_phone(
    shelby_server: ServerProcess, agent: subprocess.Popen[bytes], browser: Browser
) -> None:
    """At 390 px wide no page scrolls sideways; the job table turns into cards."""
    with _admin(shelby_server) as admin:
        admin.post("/api/jobs/create", json={"jobId": "phone-job", "datasetName": "MNIST"})
        admin.post(
            "/api/jobs/upload-script",
            json={"jobId": "phone-job", "script": "print('a line long enough to wrap ' * 6)"},
        )
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)  # type: ignore[arg-type]
    tab = Tab(context)
    page = _open(tab, shelby_server, "/")
    for route, name, ready in (
        ("/", "phone-overview", ".stat"),
        ("/jobs", "phone-jobs", "tbody tr"),
        ("/nodes", "phone-nodes", "tbody tr"),
        ("/jobs/phone-job", "phone-job", ".ln"),
        ("/new", "phone-new-job", "#datasetName"),
    ):
        page.goto(f"{shelby_server.url}/#{route}")
        expect(page.locator(ready).first).to_be_visible()
        overflow: Any = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{route} is {overflow} px too wide"
        tab.shot(name)
    page.goto(f"{shelby_server.url}/#/jobs")
    expect(page.locator("table.stack")).to_be_visible()
    assert (
        page.evaluate("getComputedStyle(document.querySelector('table.stack thead')).position")
        == "absolute"
    )
    context.close()
    assert tab.errors == []


def test_the_log_tail_follows_until_the_reader_scrolls_up(
    shelby_server: ServerProcess, tab: Tab
) -> None:
    """The tail keeps to the newest line; scrolling up stops that and counts what
    arrives below; "Jump to end" goes back and follows again."""
    with _admin(shelby_server) as admin:
        admin.post("/api/jobs/create", json={"jobId": "chatty", "datasetName": "d"})
        admin.post("/api/jobs/upload-script", json={"jobId": "chatty", "script": "print(1)"})
    node_id, node = _register(shelby_server, "manual")
    job = node.get("/api/jobs/poll", params={"nodeId": node_id}).json()["job"]
    node.post("/api/jobs/ack", json={"jobId": "chatty", "nodeId": node_id, "attempt": 1})

    def post(offset: int, count: int) -> None:
        node.post(
            "/api/jobs/stream-log",
            json={
                "jobId": "chatty",
                "nodeId": node_id,
                "attempt": job["attempt"],
                "offset": offset,
                "lines": [
                    {"line": f"line {offset + i}", "timestamp": 1.7e9 + offset + i}
                    for i in range(count)
                ],
            },
        ).raise_for_status()

    post(0, 200)
    page = _open(tab, shelby_server, "/jobs/chatty")
    box = page.locator(".log-box")
    expect(page.locator(".ln")).to_have_count(200)
    at_end = "el => el.scrollHeight - el.scrollTop - el.clientHeight < 24"
    page.wait_for_function(f"({at_end})(document.querySelector('.log-box'))")
    post(200, 10)
    expect(page.locator(".ln")).to_have_count(210)
    page.wait_for_function(f"({at_end})(document.querySelector('.log-box'))")

    box.evaluate("el => el.scrollTo(0, 0)")
    expect(page.locator("#log-follow")).not_to_be_checked()
    post(210, 5)
    jump = page.get_by_role("button", name="Jump to end (5 new)")
    expect(jump).to_be_visible()
    assert box.evaluate("el => el.scrollTop") == 0
    tab.shot("job-log-scrolled-up")
    jump.click()
    expect(page.locator("#log-follow")).to_be_checked()
    assert box.evaluate(at_end)
    node.close()

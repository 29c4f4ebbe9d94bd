"""Random sequences of admin and agent calls against one real server, with the job
lifecycle's invariants checked after every call.

A small model of API.md's lifecycle predicts each answer (the status code, the job's
status, attempt and node), so every call is checked, the refusals included: a node
acting on a job it does not hold, or for an attempt that is no longer current, gets
409 and changes nothing. After each step:

- no attempt of any job was ever assigned twice (read from the raw log), so no job is
  held by two nodes at once;
- the dashboard's counts equal those of the job list, and health's queue agrees;
- every job the step touched shows what the model expects, and its provenance is
  complete (one entry per event of its stream but log lines, in order, with the log's
  hashes) and each of its events hashes to what the log says.

One server serves the whole run; each example is kept apart by fresh ids and a label
that only its own nodes carry (so a node never takes an earlier example's job).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from api._flow import Node, register
from conftest import ServerProcess
from hardening._support import module_server, verify

__all__ = ["module_server"]

STATUSES = ("pending", "assigned", "running", "finished", "failed")
HELD = ("assigned", "running")
_runs = itertools.count()
# About 10 s; by hand, SHELBY_STATEFUL_EXAMPLES=200 explores more.
EXAMPLES = int(os.environ.get("SHELBY_STATEFUL_EXAMPLES", "15"))


@dataclass
class JobModel:
    job_id: str
    max_attempts: int
    status: str = "pending"
    attempt: int = 1
    first_attempt: int = 1
    node: str | None = None  # the node of the current attempt, if it was handed out
    has_script: bool = False
    deleted: bool = False
    next_offset: int = 0
    ending: tuple[str, str, int] | None = None  # (status, node, attempt) of a finish call
    released: set[tuple[int, str]] = field(default_factory=set)

    def held_by(self, node_id: str) -> bool:
        """A deleted job frees its node's slot at once (the node learns to stop it from
        its next heartbeat's cancelJobs)."""
        return not self.deleted and self.status in HELD and self.node == node_id

    def attempts_left(self) -> bool:
        return self.attempt - self.first_attempt + 1 < self.max_attempts

    def requeue(self) -> None:
        self.status, self.attempt, self.node, self.next_offset = (
            "pending",
            self.attempt + 1,
            None,
            0,
        )


@dataclass
class NodeModel:
    agent: Node
    max_jobs: int
    believed: set[str] = field(default_factory=set)  # jobs it was handed and thinks it runs


def _recomputed_hash(event: dict[str, Any]) -> str:
    """README, "The event log's byte layout", with json and hashlib alone."""
    canonical = json.dumps(
        {k: event[k] for k in ("data", "seq", "stream", "timestamp", "type", "version")},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(bytes.fromhex(event["prevHash"]) + canonical.encode()).hexdigest()


class Lifecycle(RuleBasedStateMachine):
    server: ServerProcess  # set by the test before the run
    assigned: set[tuple[str, int]]  # (job, attempt) of every JobAssigned seen in the log
    log_seen: int

    jobs = Bundle("jobs")
    nodes = Bundle("nodes")

    def __init__(self) -> None:
        super().__init__()
        self.run = f"r{next(_runs)}"
        self.admin = self.server.client()
        self.model: dict[str, JobModel] = {}
        self.agents: dict[str, NodeModel] = {}
        self.touched: set[str] = set()
        self._ids = itertools.count()

    def teardown(self) -> None:
        for node in self.agents.values():
            node.agent.close()
        self.admin.close()

    # --- admin ----------------------------------------------------------------------

    # Every example starts with a node and a runnable job (Hypothesis turns a random
    # subset of the rules off in each example, creating jobs among them at times).
    @initialize(target=nodes)
    def first_node(self) -> str:
        return self._register(1)

    @initialize(target=jobs)
    def first_job(self) -> str:
        return self.create_job(max_attempts=2, script=True)

    @rule(target=jobs, max_attempts=st.integers(1, 3), script=st.booleans())
    def create_job(self, max_attempts: int, script: bool) -> str:
        job_id = f"{self.run}-j{next(self._ids)}"
        r = self.admin.post(
            "/api/jobs/create",
            json={"jobId": job_id, "maxAttempts": max_attempts, "labels": {"run": self.run}},
        )
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["attempt"]) == ("pending", 1)
        self.model[job_id] = JobModel(job_id, max_attempts)
        self.touched.add(job_id)
        if script:
            self.upload_script(job_id)
        return job_id

    @rule(job=jobs)
    def upload_script(self, job: str) -> None:
        m = self.model[job]
        r = self.admin.post("/api/jobs/upload-script", json={"jobId": job, "script": "print(1)"})
        expected = 404 if m.deleted else 409 if m.status != "pending" else 200
        assert r.status_code == expected, (r.status_code, r.text, m)
        if expected == 200:
            m.has_script = True
        self.touched.add(job)

    @rule(data=st.data(), job=jobs)
    def restart(self, data: st.DataObject, job: str) -> None:
        ended = sorted(j for j, m in self.model.items() if m.status in ("finished", "failed"))
        if ended and data.draw(st.booleans(), label="an ended job"):
            job = data.draw(st.sampled_from(ended), label="job")
        m = self.model[job]
        r = self.admin.post(f"/api/frontend/jobs/{job}/restart")
        expected = 404 if m.deleted else 409 if m.status not in ("finished", "failed") else 200
        assert r.status_code == expected, (r.status_code, r.text, m)
        if expected == 200:
            m.requeue()
            m.first_attempt, m.ending = m.attempt, None
        self.touched.add(job)

    @rule(job=jobs)
    def delete(self, job: str) -> None:
        m = self.model[job]
        r = self.admin.delete(f"/api/frontend/jobs/{job}")
        assert r.status_code == (404 if m.deleted else 200), (r.status_code, r.text, m)
        m.deleted = True
        self.touched.add(job)

    # --- agents ---------------------------------------------------------------------

    def _register(self, max_jobs: int) -> str:
        node_id = f"{self.run}-n{next(self._ids)}"
        agent = register(self.server, node_id, labels={"run": self.run}, max_jobs=max_jobs)
        self.agents[node_id] = NodeModel(agent, max_jobs)
        return node_id

    @rule(target=nodes, max_jobs=st.integers(1, 2))
    def register_node(self, max_jobs: int) -> str:
        return self._register(max_jobs)

    @rule(node=nodes)
    def poll(self, node: str) -> None:
        n = self.agents[node]
        r = n.agent.poll()
        assert r.status_code == 200, r.text
        got = r.json()["job"]
        held = sum(m.held_by(node) for m in self.model.values())
        runnable = [
            m
            for m in self.model.values()
            if not m.deleted and m.status == "pending" and m.has_script
        ]
        if held >= n.max_jobs or not runnable:
            assert got is None, (got, held, runnable)
            return
        # The oldest runnable job this node can take (all of this run's jobs fit it).
        m = runnable[0]
        assert got is not None and (got["jobId"], got["attempt"]) == (m.job_id, m.attempt)
        m.status, m.node = "assigned", node
        n.believed.add(m.job_id)
        self.touched.add(m.job_id)

    def _pick(self, data: st.DataObject, node: str, job: str) -> tuple[str, str, JobModel]:
        """Mostly a job and the node of its current attempt, so that runs get somewhere;
        else the pair drawn, which the server may well refuse."""
        pairs = sorted((m.node, m.job_id) for m in self.model.values() if m.node and not m.deleted)
        if pairs and data.draw(st.integers(0, 3), label="the job's own node") > 0:
            node, job = data.draw(st.sampled_from(pairs), label="node, job")
        return node, job, self.model[job]

    def _fence(self, m: JobModel, node: str, attempt: int) -> int | None:
        """The refusal API.md gives a job-scoped agent call, or None when it may act."""
        if m.deleted:
            return 404
        if not m.held_by(node) or attempt != m.attempt:
            return 409
        return None

    @staticmethod
    def _attempt(m: JobModel, stale: bool) -> int:
        return m.attempt - 1 if stale and m.attempt > 1 else m.attempt

    # Each job-scoped agent call: a rule that mostly aims at a job and its own node (and
    # sometimes at a stale attempt, or any pair), and the call itself, which predicts
    # the answer from the model.

    @rule(data=st.data(), node=nodes, job=jobs, stale=st.booleans())
    def ack(self, data: st.DataObject, node: str, job: str, stale: bool) -> None:
        node, job, m = self._pick(data, node, job)
        self._ack(node, m, self._attempt(m, stale))

    @rule(data=st.data(), node=nodes, job=jobs, stale=st.booleans(), count=st.integers(1, 3))
    def stream_log(self, data: st.DataObject, node: str, job: str, stale: bool, count: int) -> None:
        node, job, m = self._pick(data, node, job)
        self._stream_log(node, m, self._attempt(m, stale), count)

    @rule(data=st.data(), node=nodes, job=jobs, stale=st.booleans(), failed=st.booleans())
    def finish(self, data: st.DataObject, node: str, job: str, stale: bool, failed: bool) -> None:
        node, job, m = self._pick(data, node, job)
        self._finish(node, m, self._attempt(m, stale), "failed" if failed else "finished")

    @rule(data=st.data(), node=nodes, job=jobs, stale=st.booleans())
    def release(self, data: st.DataObject, node: str, job: str, stale: bool) -> None:
        node, job, m = self._pick(data, node, job)
        self._release(node, m, self._attempt(m, stale))

    @rule(data=st.data())
    def agents_step(self, data: st.DataObject) -> None:
        """Every node does what a well-behaved agent does next: poll when it has room,
        ack what it was given, stream and then finish (or fail, or release) what it
        runs. The lifecycle moves on here; the other rules aim anywhere."""
        for node in list(self.agents):
            self._agent_step(data, node)

    def _agent_step(self, data: st.DataObject, node: str) -> None:
        held = [m for m in self.model.values() if m.held_by(node)]
        room = len(held) < self.agents[node].max_jobs
        if not held or (room and data.draw(st.booleans(), label="poll")):
            self.poll(node)
            return
        m = data.draw(st.sampled_from(held), label="job")
        if m.status == "assigned":
            self._ack(node, m, m.attempt)
            return
        step = data.draw(st.sampled_from(["stream", "stream", "finished", "failed", "release"]))
        if step == "stream":
            self._stream_log(node, m, m.attempt, data.draw(st.integers(1, 3), label="lines"))
        elif step == "release":
            self._release(node, m, m.attempt)
        else:
            self._finish(node, m, m.attempt, step)

    def _ack(self, node: str, m: JobModel, attempt: int) -> None:
        r = self.agents[node].agent.ack(m.job_id, attempt)
        expected = self._fence(m, node, attempt) or 200
        assert r.status_code == expected, (r.status_code, r.text, m)
        if expected == 200:
            assert r.json()["status"] == "running"
            m.status = "running"
        self.touched.add(m.job_id)

    def _stream_log(self, node: str, m: JobModel, attempt: int, count: int) -> None:
        lines = [f"line {m.next_offset + i}" for i in range(count)]
        r = self.agents[node].agent.stream(m.job_id, m.next_offset, lines, attempt)
        expected = self._fence(m, node, attempt) or 200
        assert r.status_code == expected, (r.status_code, r.text, m)
        if expected == 200:
            assert r.json() == {"accepted": count, "nextOffset": m.next_offset + count}
            m.next_offset += count
        self.touched.add(m.job_id)

    def _finish(self, node: str, m: JobModel, attempt: int, status: str) -> None:
        extra = {"exitCode": 1, "error": "exit 1"} if status == "failed" else {}
        r = self.agents[node].agent.finish(m.job_id, status, attempt, **extra)
        if m.deleted:
            expected = 404
        elif m.status in ("finished", "failed"):
            expected = 200 if m.ending == (status, node, attempt) else 409  # a repeat is a no-op
        else:
            expected = self._fence(m, node, attempt) or 200
        assert r.status_code == expected, (r.status_code, r.text, m)
        if expected == 200 and m.status in HELD:
            m.status, m.ending = status, (status, node, attempt)
            self.agents[node].believed.discard(m.job_id)
        self.touched.add(m.job_id)

    def _release(self, node: str, m: JobModel, attempt: int) -> None:
        r = self.agents[node].agent.http.post(
            "/api/jobs/release",
            json={"jobId": m.job_id, "nodeId": node, "attempt": attempt, "reason": "stopping"},
        )
        if m.deleted:
            expected = 404
        elif (attempt, node) in m.released:
            expected = 200  # the same release again
        else:
            expected = self._fence(m, node, attempt) or 200
        assert r.status_code == expected, (r.status_code, r.text, m)
        if expected == 200 and (attempt, node) not in m.released:
            m.released.add((attempt, node))
            if m.attempts_left():
                m.requeue()
            else:
                m.status, m.ending = "failed", None
            self.agents[node].believed.discard(m.job_id)
            assert (r.json()["status"], r.json()["attempt"]) == (m.status, m.attempt)
        self.touched.add(m.job_id)

    @rule(node=nodes)
    def heartbeat(self, node: str) -> None:
        """The node reports what it believes it runs; it is told to cancel exactly the
        jobs it no longer holds (deleted, restarted, ended or handed on)."""
        n = self.agents[node]
        reported = sorted(n.believed)
        r = n.agent.heartbeat(reported)
        assert r.status_code == 200, r.text
        expected = [j for j in reported if not self.model[j].held_by(node)]
        assert sorted(r.json()["cancelJobs"]) == expected
        n.believed -= set(expected)

    @rule(node=nodes, other=nodes)
    def impersonate(self, node: str, other: str) -> None:
        """A node token acting for another node is 403, and appends nothing."""
        if node == other:
            return
        before = self.admin.get("/api/frontend/system/health").json()["eventLog"]
        r = self.agents[node].agent.http.post(
            "/api/nodes/heartbeat", json={"nodeId": other, "runningJobs": []}
        )
        polled = self.agents[node].agent.http.get("/api/jobs/poll", params={"nodeId": other})
        assert (r.status_code, polled.status_code) == (403, 403)
        assert self.admin.get("/api/frontend/system/health").json()["eventLog"] == before

    # --- invariants -----------------------------------------------------------------

    @invariant()
    def no_attempt_is_assigned_twice(self) -> None:
        while True:
            page = self.admin.get(
                "/api/audit/log", params={"after": Lifecycle.log_seen, "limit": 10_000}
            ).json()["events"]
            if not page:
                break
            for event in page:
                if event["type"] == "JobAssigned":
                    key = (event["data"]["jobId"], event["data"]["attempt"])
                    assert key not in Lifecycle.assigned, f"{key} assigned twice"
                    Lifecycle.assigned.add(key)
            Lifecycle.log_seen = page[-1]["seq"]

    @invariant()
    def dashboard_counts_equal_the_job_list(self) -> None:
        listed = self.admin.get("/api/frontend/jobs", params={"limit": 1000}).json()
        assert listed["count"] < 1000, "the run outgrew one page of the job list"
        counts = Counter(job["status"] for job in listed["jobs"])
        stats = self.admin.get("/api/frontend/dashboard").json()["jobStats"]
        assert stats == {**{s: counts[s] for s in STATUSES}, "total": listed["count"]}
        queue = self.admin.get("/api/frontend/system/health").json()["jobQueue"]
        assert queue == {
            "pending": counts["pending"],
            "running": counts["assigned"] + counts["running"],
            "completed": counts["finished"],
            "failed": counts["failed"],
        }, (queue, counts, stats)

    @invariant()
    def touched_jobs_match_the_model_and_their_provenance_is_complete(self) -> None:
        for job in sorted(self.touched):
            self._check_job(self.model[job])
        self.touched.clear()

    def _check_job(self, m: JobModel) -> None:
        view = self.admin.get(f"/api/frontend/jobs/{m.job_id}")
        events = self.admin.get(f"/api/audit/jobs/{m.job_id}").json()["events"]
        for event in events:
            assert _recomputed_hash(event) == event["hash"], event["seq"]
        if m.deleted:
            assert view.status_code == 404
            assert events[-1]["type"] == "JobDeleted"
            return
        assert view.status_code == 200, view.text
        got = view.json()
        # assignedNode: the node of the current attempt (kept once it ended), or null.
        assert (got["status"], got["attempt"], got["assignedNode"]) == (m.status, m.attempt, m.node)
        lifecycle = [
            (e["seq"], e["type"], e["hash"])
            for e in events
            if e["stream"] == f"job-{m.job_id}" and e["type"] != "LogLinesAppended"
        ]
        provenance = [(p["seq"], p["type"], p["hash"]) for p in got["provenance"]]
        assert provenance == lifecycle


def test_random_call_sequences_keep_the_lifecycle_invariants(
    module_server: ServerProcess,
) -> None:
    Lifecycle.server = module_server
    Lifecycle.assigned = set()
    Lifecycle.log_seen = 0
    run_state_machine_as_test(
        Lifecycle,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=30,
            deadline=None,
            database=None,
            # The server outlives examples, so a replay does not meet the same state:
            # a failure is reported as found (with its steps), not shrunk.
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        ),
    )
    verify(module_server)
    with httpx.Client(base_url=module_server.url) as c:
        assert c.get("/api/frontend/system/health").json()["status"] == "healthy"

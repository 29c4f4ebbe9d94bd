"""The agent's loop: join, heartbeat, poll, run up to N attempts, report, shut down.

Three kinds of task share one event loop:

- the heartbeat, every ``heartbeatIntervalSeconds``, carrying live CPU and RAM use and
  the jobs this node holds; its answer's ``cancelJobs`` stops those attempts;
- the poller, which asks for a job (with ``wait``) whenever a slot is free;
- one task per attempt (agent side of the protocol around ``runner.AttemptRunner``).

The server may vanish at any moment. Every call then waits with backoff and jitter
and tries again; a running script is not disturbed, and its lines wait in the spool.

An agent going away is an infrastructure event, not the script's failure: a graceful
shutdown stops each running script, ships its log and hands the attempt back
(``POST /api/jobs/release``), so that the server requeues the job at once rather than
when the lease expires. A start that finds an attempt an earlier run left unfinished
hands it back the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import structlog

from shelby.agent import specs
from shelby.agent.attempts import ACTIVE, AttemptState, attempt_directory, unfinished_attempts
from shelby.agent.backoff import Backoff
from shelby.agent.client import (
    AgentClient,
    AttemptGone,
    NotRegistered,
    Rejected,
    ServerError,
    Unreachable,
    persist,
)
from shelby.agent.environments import EnvironmentCache
from shelby.agent.process import StopRequest
from shelby.agent.runner import (
    CANCELLED,
    SHUTDOWN,
    TIMEOUT,
    Assignment,
    AttemptRunner,
    Ending,
    Script,
    stopped_ending,
    unless_stopped,
)
from shelby.agent.sandbox import Sandbox, prepare_work_dir
from shelby.agent.shipper import LogShipper
from shelby.agent.spool import LogSpool

__all__ = ["Agent", "AgentConfig", "JoinRefused"]

log = structlog.get_logger("shelby.agent")


class JoinRefused(Exception):
    """The server will not let this node join (wrong join token, malformed request)."""


@dataclass(frozen=True)
class AgentConfig:
    server: str
    join_token: str
    work_dir: Path
    name: str
    max_jobs: int = 1
    labels: Mapping[str, str] = field(default_factory=dict)
    poll_wait: float = 10.0
    """How long one poll may hold for a job (the server caps it at 30 s)."""
    kill_grace: float = 5.0
    """Between SIGTERM and SIGKILL when an attempt is stopped."""
    max_backoff: float = 30.0
    shutdown_grace: float = 10.0
    """How long a shutdown may spend reporting the attempts it stopped; what is not
    reported by then is reported by the next start."""
    release_timeout: float = 5.0
    """How long a shutdown tries to hand a stopped attempt back (its log, usage and
    the release itself) before leaving it to the lease; at most ``shutdown_grace``."""
    sandbox: Sandbox = field(default_factory=Sandbox)
    """As whom, and within which limits, jobs run (sandbox.py)."""
    job_python: str | None = None
    """The Python job environments are made from; the agent's own by default."""


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        if config.max_jobs < 1:
            raise ValueError("max_jobs must be at least 1")
        self.config = config
        self.client = AgentClient(config.server, timeout=15.0)
        self.node_id: str | None = None
        self.heartbeat_interval = 10.0
        self.lease_seconds: float | None = None
        # Every attempt this node holds, running or still reporting. Keyed by attempt
        # too: after a lost lease the same job can come back as the next attempt while
        # the stale one is still being stopped.
        self._held: dict[tuple[str, int], StopRequest] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._capacity = asyncio.Semaphore(config.max_jobs)
        self._stopping = asyncio.Event()
        self._forced = False
        self._register_lock = asyncio.Lock()
        self._registered_at = 0.0
        self._environments = EnvironmentCache(
            config.work_dir / "environments",
            kill_grace=config.kill_grace,
            python=config.job_python,
            sandbox=config.sandbox,
        )
        self._runner = AttemptRunner(
            self._environments,
            secrets=self._secrets,
            kill_grace=config.kill_grace,
            track_gpus=shutil.which("nvidia-smi") is not None,
            sandbox=config.sandbox,
        )

    # --- life ----------------------------------------------------------------------

    def request_shutdown(self) -> None:
        """First call: stop gracefully. Second call: stop now."""
        if self._stopping.is_set():
            self._forced = True
            for task in list(self._tasks):
                task.cancel()
        self._stopping.set()

    async def run(self) -> None:
        """Join and work until ``request_shutdown``; ``SandboxError`` before joining
        when the sandbox asked for cannot be had."""
        await asyncio.to_thread(
            prepare_work_dir, self.config.work_dir, self.config.sandbox, self._environments.python
        )
        log.info("jobs run " + self.config.sandbox.describe())
        stop = StopRequest()
        watcher = asyncio.create_task(self._relay_stop(stop))
        try:
            joined = await unless_stopped(self._join(), stop)
            if joined is None:
                return
            for state in unfinished_attempts(self.config.work_dir):
                self._spawn(self._recover(state))
            heartbeat = asyncio.create_task(self._heartbeats())
            polling = asyncio.create_task(self._polls())
            await self._stopping.wait()
            log.info("shutting down", running=self._held_jobs())
            polling.cancel()
            for request in self._held.values():
                request.request(SHUTDOWN)
            if self._tasks:
                _, late = await asyncio.wait(
                    set(self._tasks),
                    timeout=self.config.kill_grace + self.config.shutdown_grace,
                )
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
            heartbeat.cancel()
            await asyncio.gather(polling, heartbeat, return_exceptions=True)
        finally:
            watcher.cancel()
            await self.client.aclose()
        log.info("agent stopped")

    async def _relay_stop(self, stop: StopRequest) -> None:
        await self._stopping.wait()
        stop.request(SHUTDOWN)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _secrets(self) -> list[str]:
        return [s for s in (self.config.join_token, self.client.token) if s]

    # --- joining -------------------------------------------------------------------

    @property
    def _identity_file(self) -> Path:
        return self.config.work_dir / "node.json"

    def _load_identity(self) -> dict[str, Any]:
        try:
            data = json.loads(self._identity_file.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save_identity(self, node_id: str, token: str | None) -> None:
        tmp = self._identity_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)  # a file left by a crash keeps its mode through O_CREAT
        with os.fdopen(fd, "w") as f:
            json.dump({"nodeId": node_id, "token": token, "server": self.config.server}, f)
        os.replace(tmp, self._identity_file)

    async def _join(self) -> str:
        node_specs = await asyncio.to_thread(specs.node_specs)
        body: dict[str, Any] = {
            "name": self.config.name,
            "specs": node_specs,
            "labels": dict(self.config.labels),
            "maxConcurrentJobs": self.config.max_jobs,
        }
        known = self._load_identity().get("nodeId")
        if not known:
            # Chosen here and kept before asking: if the answer to the first
            # registration is lost, the retry registers the same node, not a second one.
            known = f"node-{secrets.token_hex(6)}"
            self._save_identity(known, None)
            rejoined = False
        else:
            rejoined = True
        body["nodeId"] = known
        try:
            answer = await persist(
                partial(self.client.register, self.config.join_token, body),
                Backoff(cap=self.config.max_backoff),
                what="register",
            )
        except (NotRegistered, Rejected) as exc:
            raise JoinRefused(f"the server refused to register this node: {exc}") from exc
        self.node_id = str(answer["nodeId"])
        self.heartbeat_interval = float(answer.get("heartbeatIntervalSeconds") or 10.0)
        lease = answer.get("leaseSeconds")
        self.lease_seconds = float(lease) if lease is not None else None
        self._registered_at = time.monotonic()
        self._save_identity(self.node_id, answer["token"])
        structlog.contextvars.bind_contextvars(node_id=self.node_id)
        log.info(
            "joined",
            server=self.config.server,
            rejoined=rejoined,
            heartbeat_seconds=self.heartbeat_interval,
            lease_seconds=self.lease_seconds,
            max_jobs=self.config.max_jobs,
        )
        return self.node_id

    async def _reregister(self) -> None:
        """The node token stopped working: join again, as the same node."""
        async with self._register_lock:
            if time.monotonic() - self._registered_at < 1.0:
                return  # another task just did it
            log.warning("node token refused; registering again")
            await self._join()

    @property
    def _node(self) -> str:
        assert self.node_id is not None
        return self.node_id

    # --- heartbeat -----------------------------------------------------------------

    async def _heartbeats(self) -> None:
        backoff = Backoff(cap=max(0.25, min(self.config.max_backoff, self.heartbeat_interval)))
        while True:
            delay = self.heartbeat_interval
            # Only what was held when the heartbeat left can be cancelled by its answer:
            # an attempt taken meanwhile (the same job's next attempt) is not the one the
            # server meant.
            sent = set(self._held)
            try:
                answer = await self.client.heartbeat(
                    self._node, specs.live_usage(), self._held_jobs()
                )
            except Unreachable as exc:
                delay = min(backoff.next_delay(), self.heartbeat_interval)
                if backoff.failures == 1:
                    log.warning("heartbeat failed; retrying", error=str(exc))
            except NotRegistered:
                with contextlib.suppress(ServerError):
                    await self._reregister()
                delay = 0
            except Rejected as exc:
                log.error("heartbeat refused", error=str(exc))
            else:
                if backoff.failures:
                    log.info("heartbeat through again", after_failures=backoff.failures)
                backoff.reset()
                for job_id in answer.get("cancelJobs") or []:
                    for (held, attempt), request in list(self._held.items()):
                        if held == job_id and (held, attempt) in sent:
                            log.info("server cancelled the job", job_id=job_id, attempt=attempt)
                            request.request(CANCELLED)
            await asyncio.sleep(delay)

    # --- polling -------------------------------------------------------------------

    async def _polls(self) -> None:
        backoff = Backoff(cap=self.config.max_backoff)
        while True:
            await self._capacity.acquire()
            handed_over = False
            try:
                asked = time.monotonic()
                job = await persist(
                    partial(self.client.poll, self._node, self.config.poll_wait),
                    backoff,
                    what="poll",
                    on_not_registered=self._reregister,
                )
                if job is not None:
                    self._take(job)
                    handed_over = True
                elif time.monotonic() - asked < 0.5:
                    # An answer without waiting (a server that ignores ``wait``): pace it.
                    await asyncio.sleep(1.0)
            except Rejected as exc:
                log.error("poll refused", error=str(exc))
                await asyncio.sleep(self.heartbeat_interval)
            finally:
                if not handed_over:
                    self._capacity.release()

    def _held_jobs(self) -> list[str]:
        return sorted({job_id for job_id, _ in self._held})

    def _take(self, job: dict[str, Any]) -> None:
        """Start an assignment. An older attempt of the same job still held here is
        stale: the server moved on, so it is stopped and reports nothing more."""
        job_id, attempt = str(job["jobId"]), int(job.get("attempt") or 1)
        for (held, held_attempt), request in self._held.items():
            if held == job_id and held_attempt < attempt:
                request.request(CANCELLED)
        if (job_id, attempt) in self._held:
            log.warning("the server handed out an attempt already held", job_id=job_id)
            self._capacity.release()
            return
        self._spawn(self._attempt(job))

    # --- one attempt ---------------------------------------------------------------

    def _shipper(self, state: AttemptState, stop: StopRequest) -> tuple[LogSpool, LogShipper]:
        spool = LogSpool(state.directory / "log")
        shipper = LogShipper(
            self.client,
            spool,
            job_id=state.job_id,
            attempt=state.attempt,
            node_id=lambda: self._node,
            backoff=Backoff(cap=self.config.max_backoff),
            reregister=self._reregister,
            on_gone=lambda: stop.request(CANCELLED),
        )
        return spool, shipper

    async def _attempt(self, job: dict[str, Any]) -> None:
        """Run one assignment from ack to finish; releases its slot at the end."""
        assignment = Assignment.from_poll(job)
        job_id = assignment.job_id
        stop = StopRequest()
        self._held[job_id, assignment.attempt] = stop
        structlog.contextvars.bind_contextvars(job_id=job_id, attempt=assignment.attempt)
        log.info("assigned", timeout_seconds=assignment.timeout_seconds)
        directory = attempt_directory(self.config.work_dir, job_id, assignment.attempt)
        spool: LogSpool | None = None
        shipping: asyncio.Task[None] | None = None
        try:
            # A fresh directory for every attempt: nothing of an earlier run leaks in.
            await asyncio.to_thread(shutil.rmtree, directory, True)
            directory.mkdir(parents=True)
            state = AttemptState.create(directory, job_id, assignment.attempt, self._node)
            spool, shipper = self._shipper(state, stop)
            shipping = asyncio.create_task(shipper.run())
            timer = asyncio.get_running_loop().call_later(
                assignment.timeout_seconds, stop.request, TIMEOUT
            )
            try:
                ending = await self._run(assignment, state, shipper, stop)
            finally:
                timer.cancel()
            spool.flush()  # every line is on disk before the ending is
            if ending is None or ending.status == "cancelled" or shipper.gone:
                state.update(phase="abandoned")
                log.info("attempt taken back by the server; reporting nothing more")
                return
            if ending.status == "released":
                state.update(phase="releasing", reason=ending.error, usage=ending.usage_body())
                log.info("handing the attempt back", reason=ending.error)
                timeout = min(self.config.release_timeout, self.config.shutdown_grace)
                await self._hand_back(
                    state, shipper, deadline=asyncio.get_running_loop().time() + timeout
                )
                return
            state.update(
                phase="finishing",
                finish=ending.finish_body(job_id, self._node, assignment.attempt),
                usage=ending.usage_body(),
            )
            log.info("attempt ended", status=ending.status, error=ending.error)
            await self._report(state, shipper)
        except Exception:
            log.exception("attempt crashed")
        finally:
            if shipping is not None:
                shipping.cancel()
            if spool is not None:
                spool.close()
            if self._held.get((job_id, assignment.attempt)) is stop:
                del self._held[job_id, assignment.attempt]
            self._capacity.release()

    async def _run(
        self, assignment: Assignment, state: AttemptState, shipper: LogShipper, stop: StopRequest
    ) -> Ending | None:
        """Ack, fetch the script and run it; ``None`` when the server took it back first."""
        retry = partial(
            persist,
            backoff=Backoff(cap=self.config.max_backoff),
            on_not_registered=self._reregister,
        )
        job_id, attempt = assignment.job_id, assignment.attempt
        try:
            acked = await unless_stopped(
                retry(partial(self.client.ack, job_id, self._node, attempt), what="ack"), stop
            )
            if acked is None:
                return stopped_ending(stop.reason or SHUTDOWN)
            answer = await unless_stopped(
                retry(partial(self.client.fetch_script, job_id, self._node), what="fetch-script"),
                stop,
            )
            if answer is None:
                return stopped_ending(stop.reason or SHUTDOWN)
        except AttemptGone:
            return None
        except Rejected as exc:
            return Ending(status="failed", error=f"the server refused the script: {exc}")
        state.update(phase="running")
        return await self._runner.run(
            assignment,
            Script.from_fetch(answer),
            state.directory,
            sink=shipper.line,
            stop=stop,
            on_spawn=state.record_process,
        )

    async def _report(self, state: AttemptState, shipper: LogShipper) -> None:
        """Drain the log, then send usage and finish, in that order: once the server has
        the finish, the job's log and usage are complete."""
        retry = partial(
            persist,
            backoff=Backoff(cap=self.config.max_backoff),
            on_not_registered=self._reregister,
        )
        await shipper.drain()
        if shipper.gone:
            state.update(phase="abandoned")
            return
        try:
            usage = state.data.get("usage")
            if usage and not state.data.get("usageSent"):
                await retry(
                    partial(
                        self.client.usage_report, state.job_id, self._node, state.attempt, usage
                    ),
                    what="usage-report",
                )
                state.update(usageSent=True)
            finish = dict(state.data["finish"], nodeId=self._node)
            await retry(partial(self.client.finish, finish), what="finish")
        except AttemptGone as exc:
            log.info("the server took the attempt back before its finish", detail=exc.detail)
            state.update(phase="abandoned")
            return
        except Rejected as exc:
            log.error("the server refused the finish", error=str(exc))
            state.update(phase="refused", refusal=str(exc))
            return
        state.update(phase="done")
        log.info("reported", status=finish["status"])

    async def _hand_back(
        self, state: AttemptState, shipper: LogShipper, *, deadline: float | None
    ) -> None:
        """Drain the log, send the usage, then release the attempt: the server requeues
        the job at once. By ``deadline`` (loop time) it gives up, and the attempt stays
        ``releasing``: the lease expires as it would have anyway, and the next start of
        the agent tries the release again (a 409 then, if the server moved on)."""
        loop = asyncio.get_running_loop()

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - loop.time())

        retry = partial(
            persist,
            backoff=Backoff(cap=self.config.max_backoff),
            on_not_registered=self._reregister,
            deadline=deadline,
        )
        reason = str(state.data.get("reason") or "the agent stopped")
        try:
            await asyncio.wait_for(shipper.drain(), left())
            if shipper.gone:
                state.update(phase="abandoned")
                return
            usage = state.data.get("usage")
            if usage and not state.data.get("usageSent"):
                await asyncio.wait_for(
                    retry(
                        partial(
                            self.client.usage_report,
                            state.job_id,
                            self._node,
                            state.attempt,
                            usage,
                        ),
                        what="usage-report",
                    ),
                    left(),
                )
                state.update(usageSent=True)
            answer = await asyncio.wait_for(
                retry(
                    partial(self.client.release, state.job_id, self._node, state.attempt, reason),
                    what="release",
                ),
                left(),
            )
        except (Unreachable, TimeoutError) as exc:
            log.warning(
                "could not hand the attempt back in time; its lease will expire",
                error=str(exc) or type(exc).__name__,
            )
            return
        except AttemptGone as exc:
            log.info("the server took the attempt back before its release", detail=exc.detail)
            state.update(phase="abandoned")
            return
        except Rejected as exc:
            log.error("the server refused the release", error=str(exc))
            state.update(phase="refused", refusal=str(exc))
            return
        state.update(phase="released")
        log.info(
            "attempt handed back",
            job_status=answer.get("status"),
            next_attempt=answer.get("attempt"),
        )

    async def _recover(self, state: AttemptState) -> None:
        """Finish what an earlier run of the agent left: a stopped or killed agent
        leaves attempts ``running`` (their process tree cannot be adopted again: they
        are handed back), ``releasing`` (not yet handed back) or ``finishing``
        (reported in part)."""
        structlog.contextvars.bind_contextvars(job_id=state.job_id, attempt=state.attempt)
        stop = StopRequest()
        key = (state.job_id, state.attempt)
        self._held.setdefault(key, stop)
        spool, shipper = self._shipper(state, stop)
        try:
            if state.phase in ACTIVE:
                killed = await asyncio.to_thread(state.kill_leftovers)
                reason = "the agent stopped while the attempt ran"
                shipper.line("system", f"[shelby] {reason}; handing it back", time.time())
                spool.flush()
                state.update(phase="releasing", reason=reason, usage=None)
                log.warning("found an interrupted attempt", killed_leftovers=killed)
            if state.phase == "releasing":
                log.info("handing back an attempt of an earlier run")
                await self._hand_back(state, shipper, deadline=None)
            else:
                log.info("completing the report of an earlier run")
                await self._report(state, shipper)
        except Exception:
            log.exception("recovery crashed")
        finally:
            spool.close()
            if self._held.get(key) is stop:
                del self._held[key]

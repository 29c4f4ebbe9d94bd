"""The agent's side of the HTTP contract (API.md, "Agent protocol").

Every failure is sorted into what the agent should do about it:

- ``Unreachable``: the server could not be asked or could not answer (connection
  refused, timeout, 5xx, 429). Try again later with backoff; nothing is lost.
- ``NotRegistered``: the node token is no longer good (401) or the server forgot the
  node (404 on a node call). Register again with the join token, as the same node.
- ``AttemptGone``: 409 or 404 on a job-scoped call. The attempt is not ours any more
  (lease expired, restarted, deleted): stop it and report nothing more for it.
- ``OffsetGap``: a log batch started beyond what the server has; resend from
  ``expected``.
- ``Rejected``: anything else (400, 403, 413, 422): a bug on one side; say it loudly.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import structlog

from shelby.agent.backoff import Backoff

__all__ = [
    "AgentClient",
    "AttemptGone",
    "NotRegistered",
    "OffsetGap",
    "Rejected",
    "ServerError",
    "Unreachable",
    "persist",
]

log = structlog.get_logger("shelby.agent")

T = TypeVar("T")


class ServerError(Exception):
    def __init__(self, status: int | None, detail: str) -> None:
        super().__init__(f"{status}: {detail}" if status else detail)
        self.status = status
        self.detail = detail


class Unreachable(ServerError):
    def __init__(self, status: int | None, detail: str, retry_after: float | None = None) -> None:
        super().__init__(status, detail)
        self.retry_after = retry_after


class NotRegistered(ServerError):
    pass


class AttemptGone(ServerError):
    pass


class OffsetGap(ServerError):
    def __init__(self, status: int | None, detail: str, expected: int) -> None:
        super().__init__(status, detail)
        self.expected = expected


class Rejected(ServerError):
    pass


_EXPECTED_OFFSET = re.compile(r"expected offset (\d+)")


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return response.text[:500]


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None


KEEPALIVE_EXPIRY = 30.0  # seconds an idle connection to the server is kept


class AgentClient:
    """One node's conversation with the server. ``token`` is the node token once registered."""

    def __init__(
        self,
        server: str,
        *,
        timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.token: str | None = None
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.server,
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
            # Longer than the heartbeat interval (at most 10 s), so that heartbeats reuse
            # one connection; shorter than the server's keep-alive (75 s), so that an idle
            # connection is closed by this side, never reused as the server closes it.
            # The connection counts are httpx's defaults.
            limits=httpx.Limits(
                max_connections=100, max_keepalive_connections=20, keepalive_expiry=KEEPALIVE_EXPIRY
            ),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        limit_seconds: float | None = None,
        job_scoped: bool = False,
    ) -> Any:
        bearer = token if token is not None else self.token
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        try:
            response = await self._http.request(
                method,
                path,
                json=body,
                params=params,
                headers=headers,
                timeout=limit_seconds if limit_seconds is not None else self._timeout,
            )
        except httpx.TransportError as exc:
            raise Unreachable(None, f"{type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status < 300:
            try:
                return response.json()
            except ValueError as exc:
                raise Unreachable(status, "the server answered something that is not JSON") from exc
        detail = _detail(response)
        if status >= 500 or status == 429:
            raise Unreachable(status, detail, _retry_after(response))
        if status == 401:
            raise NotRegistered(status, detail)
        if job_scoped and status == 409:
            if match := _EXPECTED_OFFSET.search(detail):
                raise OffsetGap(status, detail, int(match.group(1)))
            raise AttemptGone(status, detail)
        if job_scoped and status == 404:
            raise AttemptGone(status, detail)
        if status == 404 and path.startswith("/api/nodes/"):
            raise NotRegistered(status, detail)
        raise Rejected(status, detail)

    # --- the node ------------------------------------------------------------------

    async def register(self, join_token: str, body: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = await self._call(
            "POST", "/api/nodes/register", token=join_token, body=body
        )
        self.token = answer["token"]
        return answer

    async def heartbeat(
        self, node_id: str, specs: dict[str, Any], running: list[str]
    ) -> dict[str, Any]:
        body = {"nodeId": node_id, "specs": specs, "runningJobs": running}
        answer: dict[str, Any] = await self._call("POST", "/api/nodes/heartbeat", body=body)
        return answer

    async def poll(self, node_id: str, wait: float) -> dict[str, Any] | None:
        params: dict[str, Any] = {"nodeId": node_id}
        if wait > 0:
            params["wait"] = wait
        answer = await self._call(
            "GET", "/api/jobs/poll", params=params, limit_seconds=self._timeout + wait
        )
        job: dict[str, Any] | None = answer.get("job")
        return job

    # --- one attempt of one job ----------------------------------------------------

    async def ack(self, job_id: str, node_id: str, attempt: int) -> dict[str, Any]:
        body = {"jobId": job_id, "nodeId": node_id, "attempt": attempt}
        answer: dict[str, Any] = await self._call(
            "POST", "/api/jobs/ack", body=body, job_scoped=True
        )
        return answer

    async def fetch_script(self, job_id: str, node_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self._call(
            "GET",
            "/api/jobs/fetch-script",
            params={"jobId": job_id, "nodeId": node_id},
            job_scoped=True,
        )
        return answer

    async def stream_log(
        self, job_id: str, node_id: str, attempt: int, offset: int, lines: list[dict[str, Any]]
    ) -> int:
        """Send lines ``offset …``; the answer is the server's ``nextOffset``."""
        body = {
            "jobId": job_id,
            "nodeId": node_id,
            "attempt": attempt,
            "offset": offset,
            "lines": lines,
        }
        answer = await self._call("POST", "/api/jobs/stream-log", body=body, job_scoped=True)
        return int(answer["nextOffset"])

    async def usage_report(
        self, job_id: str, node_id: str, attempt: int, usage: dict[str, Any]
    ) -> None:
        body = {"jobId": job_id, "nodeId": node_id, "attempt": attempt, **usage}
        await self._call("POST", "/api/usage-report", body=body, job_scoped=True)

    async def finish(self, body: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = await self._call(
            "POST", "/api/jobs/finish", body=body, job_scoped=True
        )
        return answer

    async def release(self, job_id: str, node_id: str, attempt: int, reason: str) -> dict[str, Any]:
        """Hand the attempt back unfinished; the answer is the job's new status and attempt."""
        body = {"jobId": job_id, "nodeId": node_id, "attempt": attempt, "reason": reason}
        answer: dict[str, Any] = await self._call(
            "POST", "/api/jobs/release", body=body, job_scoped=True
        )
        return answer


async def persist(
    call: Callable[[], Awaitable[T]],
    backoff: Backoff,
    *,
    what: str,
    on_not_registered: Callable[[], Awaitable[None]] | None = None,
    deadline: float | None = None,
) -> T:
    """Run ``call`` until the server answers, waiting with ``backoff`` while it cannot.

    ``on_not_registered`` registers the node again when its token stopped working.
    Past ``deadline`` (loop time) the last ``Unreachable`` is raised instead of waiting.
    Every other error goes to the caller at once.
    """
    loop = asyncio.get_running_loop()
    registrations = 0
    while True:
        try:
            result = await call()
        except Unreachable as exc:
            delay = backoff.next_delay()
            if exc.retry_after is not None:
                delay = max(delay, exc.retry_after)
            if deadline is not None and loop.time() + delay > deadline:
                raise
            if backoff.failures == 1 or backoff.failures % 10 == 0:
                log.warning("server unreachable", what=what, error=str(exc), retry_in=delay)
            await asyncio.sleep(delay)
            continue
        except NotRegistered:
            # A fresh token refused again means something else is wrong: do not spin.
            if on_not_registered is None or registrations >= 3:
                raise
            registrations += 1
            await on_not_registered()
            continue
        if backoff.failures:
            log.info("server reachable again", what=what, after_failures=backoff.failures)
        backoff.reset()
        return result

"""The websockets of API.md, "Real time", and the dashboard's static files.

One ``Hub`` per server subscribes once to the store. Every committed batch reaches it on
the event loop, where it turns each log append into one message, encoded once whatever
the number of readers, and offers it to each reader's own bounded queue. The hub never
awaits a reader: a log reader whose queue is full is dropped (closed with 1013; the
dashboard reconnects with ``?after=`` and loses nothing), and a snapshot reader keeps
only the newest snapshot (it skips ahead). So one slow browser slows neither the others
nor the append path.

The dashboard and node snapshots are built by one task per feed, from the same view
functions as the HTTP endpoints, at most ``SNAPSHOT_INTERVAL`` apart, only while someone
is watching: the database sees one query per burst of changes, not one per client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Scope
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from shelby.api import views
from shelby.api.auth import Access, authorize, bearer_token
from shelby.api.errors import ApiError
from shelby.events.store import Recorded
from shelby.events.types import (
    HistoryArchived,
    JobAcked,
    JobAssigned,
    JobCreated,
    JobDeleted,
    JobFailed,
    JobFinished,
    JobReleased,
    JobRestarted,
    JobTimedOut,
    LeaseExpired,
    LogLinesAppended,
    NodeHeartbeat,
    NodeRegistered,
    ScriptUploaded,
    UsageReported,
)
from shelby.service import Service

__all__ = [
    "CLOSE_FORBIDDEN",
    "CLOSE_NOT_FOUND",
    "CLOSE_TOO_SLOW",
    "CLOSE_UNAUTHORIZED",
    "WEB_DIR",
    "Hub",
    "LogFollower",
    "SnapshotFeed",
    "hub_of",
    "routes",
    "web_routes",
]

log = structlog.get_logger("shelby.realtime")

SNAPSHOT_INTERVAL = 0.25  # at most 4 snapshots a second (API.md)
# Some of a snapshot moves with time alone (a node turns inactive, "last seen"), with no
# event to say so: while anyone watches, a feed is rebuilt at least this often.
SNAPSHOT_REFRESH = 5.0
LOG_QUEUE = 512  # messages (each one append: up to 1,000 lines) a log reader may lag
BACKLOG_CHUNK = 1000

# Close codes the dashboard understands (web/js/live.js). 4xxx mirror the HTTP statuses.
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_BAD_REQUEST = 4400
CLOSE_TOO_SLOW = 1013  # "try again later": reconnect with ?after= and resume

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

_encoder = msgspec.json.Encoder()


def _text(value: Any) -> str:
    return _encoder.encode(value).decode()


# --- snapshots ---------------------------------------------------------------------------


class _Latest:
    """A queue of one: a newer snapshot replaces one not yet sent."""

    __slots__ = ("_ready", "_value")

    def __init__(self) -> None:
        self._value: str | None = None
        self._ready = asyncio.Event()

    def offer(self, text: str) -> None:
        self._value = text
        self._ready.set()

    async def take(self) -> str:
        await self._ready.wait()
        self._ready.clear()
        value, self._value = self._value, None
        assert value is not None
        return value


class SnapshotFeed:
    """One coalesced stream of snapshots (the dashboard, the nodes)."""

    def __init__(
        self,
        kind: str,
        build: Callable[[], Awaitable[Any]],
        *,
        interval: float = SNAPSHOT_INTERVAL,
        refresh: float = SNAPSHOT_REFRESH,
    ) -> None:
        self.kind = kind
        self._build = build
        self._interval = interval
        self._refresh = refresh
        self._readers: set[_Latest] = set()
        self._changed = asyncio.Event()
        self._generation = 0  # bumped by every change
        self._latest: tuple[int, str] | None = None  # (generation it reflects, message)
        self._task: asyncio.Task[None] | None = None
        self.builds = 0

    @property
    def readers(self) -> int:
        return len(self._readers)

    def touch(self) -> None:
        """Something this feed shows may have changed."""
        self._generation += 1
        if self._readers:
            self._changed.set()

    def join(self) -> _Latest:
        slot = _Latest()
        self._readers.add(slot)
        if self._latest is not None and self._latest[0] == self._generation:
            slot.offer(self._latest[1])
        else:
            self._changed.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return slot

    def leave(self, slot: _Latest) -> None:
        self._readers.discard(slot)
        if not self._readers and self._task is not None:
            self._task.cancel()
            self._task = None

    def close(self) -> None:
        self._readers.clear()
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while self._readers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self._refresh)
            self._changed.clear()
            generation = self._generation
            try:
                data = await self._build()
            except Exception:
                # The store is unreachable, say: readers keep their last snapshot, and the
                # next change or refresh tries again.
                log.exception("snapshot failed", feed=self.kind)
                await asyncio.sleep(self._refresh)
                continue
            text = _text({"type": self.kind, "data": data})
            self._latest = (generation, text)
            self.builds += 1
            for slot in self._readers:
                slot.offer(text)
            await asyncio.sleep(self._interval)


# --- job logs ----------------------------------------------------------------------------


class _Lines(NamedTuple):
    attempt: int
    lines: list[views.LogLineView]
    text: str


class _Status(NamedTuple):
    status: str
    attempt: int | None
    text: str


_Message = _Lines | _Status


class LogFollower:
    """One reader of one job's log, with a queue the hub fills and never waits on."""

    __slots__ = ("dropped", "job_id", "queue")

    def __init__(self, job_id: str, maxsize: int) -> None:
        self.job_id = job_id
        self.queue: asyncio.Queue[_Message | None] = asyncio.Queue(maxsize + 1)
        self.dropped = False

    def offer(self, message: _Message) -> None:
        if self.dropped:
            return
        if self.queue.qsize() < self.queue.maxsize - 1:
            self.queue.put_nowait(message)
            return
        # Too far behind: empty the queue and leave only the order to go. The reader
        # reconnects from the last line it got, so nothing is lost to it.
        self.dropped = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


def _status_after(event: Any) -> tuple[str | None, int | None]:
    """The job's status and attempt after ``event``; ``None`` where it does not say."""
    match event:
        case JobCreated() | ScriptUploaded():
            return "pending", None
        case JobAssigned():
            return "assigned", event.attempt
        case JobAcked():
            return "running", event.attempt
        case JobFinished():
            return "finished", event.attempt
        case JobFailed():
            return "failed", event.attempt
        case LeaseExpired(requeued=True) | JobReleased(requeued=True):
            return "pending", event.attempt + 1
        case LeaseExpired() | JobReleased() | JobTimedOut():
            return None, event.attempt  # a JobFailed follows in the same batch
        case JobRestarted():
            return "pending", event.attempt
        case JobDeleted():
            return "deleted", None
        case UsageReported():
            return None, event.attempt
        case _:
            raise TypeError(f"not a job lifecycle event: {event!r}")


class Hub:
    """The server's one subscriber for everything live."""

    def __init__(self, service: Service, *, log_queue: int = LOG_QUEUE) -> None:
        self._service = service
        self._log_queue = log_queue
        self.dashboard = SnapshotFeed("dashboard", self._dashboard)
        self.nodes = SnapshotFeed("nodes", self._nodes)
        self._followers: dict[str, set[LogFollower]] = {}
        self._status: dict[str, tuple[str, int]] = {}  # of followed jobs
        self.lines_fanned = 0
        self._unsubscribe = service.store.subscribe(self._on_batch)

    def close(self) -> None:
        self._unsubscribe()
        self.dashboard.close()
        self.nodes.close()

    # The views take the time and the lease, like the HTTP endpoints.
    async def _dashboard(self) -> Any:
        s = self._service
        return await views.dashboard_view(
            s.store, now=s.now(), lease_seconds=s.settings.lease_seconds
        )

    async def _nodes(self) -> Any:
        s = self._service
        now = s.now()
        nodes = await views.node_list_view(s.store, now=now, lease_seconds=s.settings.lease_seconds)
        return {"nodes": nodes, "count": len(nodes), "timestamp": now}

    # --- followers -----------------------------------------------------------------------

    def follow(self, job_id: str) -> LogFollower:
        follower = LogFollower(job_id, self._log_queue)
        self._followers.setdefault(job_id, set()).add(follower)
        return follower

    def unfollow(self, follower: LogFollower) -> None:
        followers = self._followers.get(follower.job_id)
        if followers is None:
            return
        followers.discard(follower)
        if not followers:
            del self._followers[follower.job_id]
            self._status.pop(follower.job_id, None)

    def followers(self, job_id: str) -> int:
        return len(self._followers.get(job_id, ()))

    def known_status(self, job_id: str, status: str, attempt: int) -> None:
        """What a reader read from the projection, unless an event already said more."""
        if job_id in self._followers:
            self._status.setdefault(job_id, (status, attempt))

    # --- the one subscription -----------------------------------------------------------

    def _on_batch(self, batch: Sequence[Recorded]) -> None:
        dashboard = nodes = False
        for rec in batch:
            event = rec.event
            match event:
                case LogLinesAppended():
                    followers = self._followers.get(event.job_id)
                    if followers:
                        self._fan_lines(event, followers)
                case NodeHeartbeat():
                    # The dashboard counts active nodes: its periodic refresh covers a
                    # node coming back, without a rebuild per heartbeat.
                    nodes = True
                case NodeRegistered():
                    nodes = dashboard = True
                case UsageReported(job_id=None) | HistoryArchived():
                    pass
                case (
                    JobCreated()
                    | ScriptUploaded()
                    | JobAssigned()
                    | JobAcked()
                    | JobFinished()
                    | JobFailed()
                    | LeaseExpired()
                    | JobReleased()
                    | JobTimedOut()
                    | JobRestarted()
                    | JobDeleted()
                    | UsageReported()
                ):
                    dashboard = nodes = True
                    assert event.job_id is not None
                    followers = self._followers.get(event.job_id)
                    if followers:
                        self._fan_status(event, rec.type, followers)
                case _:
                    raise TypeError(f"the realtime hub does not know {rec.type}")
        if dashboard:
            self.dashboard.touch()
        if nodes:
            self.nodes.touch()

    def _fan_lines(self, event: LogLinesAppended, followers: set[LogFollower]) -> None:
        lines = [
            views.LogLineView(
                line=ln.line,
                timestamp=ln.timestamp,
                offset=event.offset + i,
                stream=ln.stream,
                attempt=event.attempt,
                truncated=ln.truncated,
            )
            for i, ln in enumerate(event.lines)
        ]
        message = _Lines(event.attempt, lines, _log_text(event.attempt, lines))
        for follower in followers:
            follower.offer(message)
        self.lines_fanned += len(lines) * len(followers)

    def _fan_status(self, event: Any, type_: str, followers: set[LogFollower]) -> None:
        job_id = event.job_id
        status, attempt = _status_after(event)
        known = self._status.get(job_id)
        if status is None:
            if known is None:
                return
            status = known[0]
        if attempt is None:
            attempt = known[1] if known else 1
        self._status[job_id] = (status, attempt)
        message = _Status(status, attempt, _status_text(status, attempt, type_))
        for follower in followers:
            follower.offer(message)


def _log_text(attempt: int, lines: Sequence[views.LogLineView]) -> str:
    return _text({"type": "log", "attempt": attempt, "lines": lines})


def _status_text(status: str, attempt: int, event: str | None = None) -> str:
    return _text({"type": "status", "status": status, "attempt": attempt, "event": event})


def hub_of(service: Service) -> Hub:
    """The service's hub, made (and subscribed) the first time a websocket asks."""
    hub: Hub | None = getattr(service, "realtime_hub", None)
    if hub is None:
        hub = Hub(service)
        service.realtime_hub = hub  # type: ignore[attr-defined]
    return hub


# --- the websocket endpoints ----------------------------------------------------------


def _service(websocket: WebSocket) -> Service:
    service: Service = websocket.app.state.service
    return service


async def _admit(websocket: WebSocket) -> bool:
    """Credentials as for HTTP: the admin token, as a bearer header or ``?token=``
    (browsers cannot set headers on a websocket). The socket is accepted first so that
    a browser learns why it is refused (4401/4403) instead of a bare failure."""
    token = bearer_token(websocket.headers.get("authorization")) or websocket.query_params.get(
        "token"
    )
    await websocket.accept()
    try:
        authorize(_service(websocket), Access.ADMIN, token or None)
    except ApiError as exc:
        code = CLOSE_FORBIDDEN if exc.status == 403 else CLOSE_UNAUTHORIZED
        await websocket.close(code, exc.detail)
        return False
    return True


class _TooSlow(Exception):
    """The reader's queue overflowed."""


async def _pump(websocket: WebSocket, messages: AsyncGenerator[str, None]) -> int | None:
    """Send ``messages`` until they end or the client goes; returns the close code to
    send (``None`` when the client went first)."""

    async def send() -> int:
        try:
            async for text in messages:
                await websocket.send_text(text)
        except _TooSlow:
            return CLOSE_TOO_SLOW
        return 1000

    async def receive() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return

    sender = asyncio.ensure_future(send())
    receiver = asyncio.ensure_future(receive())
    try:
        done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sender, receiver):
            task.cancel()
        for task in (sender, receiver):
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, OSError):
                await task
        # Runs the generator's own clean-up now rather than whenever it is collected.
        await messages.aclose()
    if sender not in done or sender.cancelled():
        return None
    error = sender.exception()
    if error is None:
        return sender.result()
    if isinstance(error, WebSocketDisconnect | OSError):
        return None
    log.error("websocket failed", error=repr(error))
    return 1011  # the server could not go on (the store is unreachable, say)


async def _close(websocket: WebSocket, code: int, reason: str = "") -> None:
    if websocket.application_state is WebSocketState.CONNECTED:
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
            await websocket.close(code, reason)


async def _serve_feed(websocket: WebSocket, feed: SnapshotFeed) -> None:
    slot = feed.join()

    async def snapshots() -> AsyncGenerator[str, None]:
        while True:
            yield await slot.take()

    try:
        code = await _pump(websocket, snapshots())
    finally:
        feed.leave(slot)
    if code is not None:
        await _close(websocket, code)


async def dashboard_socket(websocket: WebSocket) -> None:
    if await _admit(websocket):
        await _serve_feed(websocket, hub_of(_service(websocket)).dashboard)


async def nodes_socket(websocket: WebSocket) -> None:
    if await _admit(websocket):
        await _serve_feed(websocket, hub_of(_service(websocket)).nodes)


def _int_param(websocket: WebSocket, name: str) -> int | None:
    raw = websocket.query_params.get(name)
    if raw is None or raw == "":
        return None
    return int(raw)  # ValueError: the caller closes with 4400


async def job_logs_socket(websocket: WebSocket) -> None:
    """The current attempt's stored lines (after ``?after=`` when it names this
    attempt), then each new append, following the job into its next attempts."""
    if not await _admit(websocket):
        return
    job_id: str = websocket.path_params["job_id"]
    try:
        after = _int_param(websocket, "after")
        asked_attempt = _int_param(websocket, "attempt")
    except ValueError:
        await _close(websocket, CLOSE_BAD_REQUEST, "after and attempt are integers")
        return
    service = _service(websocket)
    hub = hub_of(service)
    # Follow before reading: a line appended meanwhile is then both read and queued,
    # and the offsets weed out the double, instead of falling between the two.
    follower = hub.follow(job_id)
    try:
        view = await views.job_view(
            service.store, job_id, now=service.now(), lease_seconds=service.settings.lease_seconds
        )
        if view is None:
            await _close(websocket, CLOSE_NOT_FOUND, f"no job {job_id!r}")
            return
        hub.known_status(job_id, view.status, view.attempt)
        if asked_attempt is not None and asked_attempt != view.attempt:
            after = None  # a new attempt began while the reader was away: all of it
        code = await _pump(websocket, _log_messages(service, follower, view, after))
    finally:
        hub.unfollow(follower)
    if code is not None:
        reason = "too slow: reconnect with ?after=" if code == CLOSE_TOO_SLOW else ""
        await _close(websocket, code, reason)


async def _log_messages(
    service: Service, follower: LogFollower, view: views.JobView, after: int | None
) -> AsyncGenerator[str, None]:
    job_id = view.job_id
    attempt = view.attempt
    yield _status_text(view.status, attempt)
    # The stored lines: the last BACKLOG_CHUNK without ``after``, else all after it.
    last = -1 if after is None else after
    while True:
        lines = await views.log_lines_view(
            service.store,
            job_id,
            attempt,
            limit=BACKLOG_CHUNK,
            after=None if after is None else last,
        )
        if lines:
            last = lines[-1].offset
            yield _log_text(attempt, lines)
        if after is None or len(lines) < BACKLOG_CHUNK:
            break
    # Then what the hub queued, less what the backlog already held.
    while True:
        message = await follower.queue.get()
        match message:
            case None:
                raise _TooSlow
            case _Lines():
                if message.attempt == attempt and message.lines and message.lines[0].offset > last:
                    # The usual case, kept cheap: it runs once per line batch per reader.
                    last = message.lines[-1].offset
                    yield message.text
                    continue
                if message.attempt < attempt:
                    continue
                if message.attempt > attempt:
                    attempt, last = message.attempt, -1
                fresh = [ln for ln in message.lines if ln.offset > last]
                if not fresh:
                    continue
                last = fresh[-1].offset
                yield (
                    message.text if len(fresh) == len(message.lines) else _log_text(attempt, fresh)
                )
            case _Status():
                yield message.text
                if message.status == "deleted":
                    return
            case _:
                raise TypeError(message)


def routes() -> list[BaseRoute]:
    """The websocket routes, for the app factory."""
    return [
        WebSocketRoute("/ws/dashboard", dashboard_socket),
        WebSocketRoute("/ws/nodes", nodes_socket),
        WebSocketRoute("/ws/jobs/{job_id}/logs", job_logs_socket),
    ]


# --- the static dashboard --------------------------------------------------------------

# The page runs only our own files: no inline script, nothing from another origin.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


async def index(request: Request) -> Response:
    return FileResponse(
        WEB_DIR / "index.html",
        headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": _CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


class _Assets(StaticFiles):
    """Revalidated on every load (a 304 when unchanged), so an upgraded server never
    runs with yesterday's scripts."""

    def file_response(
        self, full_path: Any, stat_result: Any, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def web_routes() -> list[BaseRoute]:
    """``/`` (the page) and ``/web/…`` (its scripts and styles); no token needed."""
    return [
        Route("/", index, methods=["GET", "HEAD"]),
        Mount("/web", app=_Assets(directory=WEB_DIR), name="web"),
    ]

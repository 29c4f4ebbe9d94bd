"""The running coordinator: the store, the command handler, the clock and the settings,
plus what the endpoints keep in memory between requests (node tokens, poll wake-ups).

One ``Service`` lives on ``app.state.service``. Everything in it is derived from the
log: the token map is loaded from the nodes projection at start and kept in step by
``store.subscribe``, so it never disagrees with what was committed.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from shelby.clock import Clock, SystemClock
from shelby.domain import CommandHandler
from shelby.events.open import open_store
from shelby.events.store import EventStore, Recorded
from shelby.events.types import (
    JobDeleted,
    JobFailed,
    JobFinished,
    JobReleased,
    JobRestarted,
    LeaseExpired,
    NodeRegistered,
    ScriptUploaded,
)
from shelby.projections import all_projections
from shelby.settings import Settings

__all__ = ["NodeProfile", "Service", "WorkSignal", "token_hash"]


def token_hash(token: str) -> str:
    """What the log keeps of a token: its SHA-256, never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


class WorkSignal:
    """Wakes long-polls when a job may have become assignable.

    A waiter takes the current event *before* it looks for work, so a wake-up that
    lands between its search and its wait is not lost: the event it holds is set.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.closed = False

    def current(self) -> asyncio.Event:
        return self._event

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def close(self) -> None:
        """The server is stopping: wake every waiter, and let none wait again. A long
        poll left waiting would hold the shutdown up until uvicorn's grace period ran
        out and then be cancelled, its agent getting no answer."""
        self.closed = True
        self.fire()


# Events after which a poll that found nothing may find something: a job became
# runnable, or a node's capacity or specs changed.
_WAKE_TYPES = (
    ScriptUploaded,
    LeaseExpired,
    JobReleased,
    JobRestarted,
    JobFinished,
    JobFailed,
    JobDeleted,
    NodeRegistered,
)


class NodeProfile(msgspec.Struct, frozen=True):
    """A node as it registered: what jobs are matched against."""

    specs: dict[str, Any]
    labels: dict[str, str]
    max_concurrent_jobs: int


class Service:
    def __init__(
        self,
        settings: Settings,
        *,
        store: EventStore | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.store: EventStore = store or open_store(settings.db, all_projections())
        self.handler = CommandHandler(self.store, self.clock)
        self.work = WorkSignal()
        self.admin_hash = token_hash(settings.admin_token) if settings.admin_token else ""
        self.join_hash = token_hash(settings.join_token) if settings.join_token else ""
        # What each node registered with: the scheduler matches jobs against it on every
        # poll, so it is kept here rather than read and decoded each time.
        self.node_profiles: dict[str, NodeProfile] = {}
        # node token hash -> node id, and back, for revoking on re-registration.
        self._node_by_hash: dict[str, str] = {}
        self._hash_by_node: dict[str, str] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self.events_appended = 0

    async def start(self) -> None:
        await self.store.open()
        # Subscribe first, so that no registration slips between the load and the
        # subscription; what the subscription already learnt is newer than the load.
        self._unsubscribe = self.store.subscribe(self._on_committed)
        rows = await self.store.fetchall(
            "SELECT node_id, token_hash, specs, labels, max_concurrent_jobs FROM nodes"
        )
        for row in rows:
            if row[0] not in self._hash_by_node:
                self._load_node(*row)

    async def learn_token(self, hashed: str) -> bool:
        """Look a node token up in the nodes projection: another replica may have
        registered it a moment ago, before its commit reached this one."""
        row = await self.store.fetchone(
            "SELECT node_id, token_hash, specs, labels, max_concurrent_jobs FROM nodes"
            " WHERE token_hash = ?",
            (hashed,),
        )
        if row is None:
            return False
        self._load_node(*row)
        return True

    def _load_node(self, node_id: str, hashed: str, specs: str, labels: str, max_jobs: int) -> None:
        self._remember_node(node_id, hashed)
        self.node_profiles[node_id] = NodeProfile(
            msgspec.json.decode(specs), msgspec.json.decode(labels), max_jobs
        )

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await self.store.close()

    def node_of_token(self, hashed: str) -> str | None:
        return self._node_by_hash.get(hashed)

    def _remember_node(self, node_id: str, hashed: str) -> None:
        old = self._hash_by_node.pop(node_id, None)
        if old is not None:
            self._node_by_hash.pop(old, None)
        self._hash_by_node[node_id] = hashed
        self._node_by_hash[hashed] = node_id

    def _on_committed(self, batch: Sequence[Recorded]) -> None:
        self.events_appended += len(batch)
        wake = False
        for rec in batch:
            event = rec.event
            if isinstance(event, NodeRegistered):
                self._remember_node(event.node_id, event.token_hash)
                self.node_profiles[event.node_id] = NodeProfile(
                    event.specs, event.labels, event.max_concurrent_jobs
                )
            if isinstance(event, _WAKE_TYPES):
                wake = True
        if wake:
            self.work.fire()

    def now(self) -> float:
        return self.clock.now()

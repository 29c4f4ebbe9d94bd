"""The one road from a command to the log: load the stream's state, decide, append.

States are cached per stream with the version they reflect. The cache is never
trusted blindly: an append names the version its decision was based on, and if the
stream moved (another replica, or a concurrent request) the store refuses it, the
handler folds in the events it missed, and decides again. A refusal or a no-op decided
on a cached state is checked the same way, by reading the events after the cached
version, since no append ran to catch a stale cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from shelby.clock import Clock
from shelby.domain import jobs, nodes
from shelby.domain.errors import DomainError
from shelby.events.store import ConcurrencyError, EventStore, Recorded
from shelby.events.types import Event

__all__ = ["JOBS", "NODES", "CommandHandler", "Decider", "Outcome"]

C = TypeVar("C")
S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Decider(Generic[C, S]):
    decide: Callable[[C, S], list[Event]]
    evolve: Callable[[S, Event], S]
    initial_state: Callable[[], S]

    def fold(self, state: S, events: list[Event]) -> S:
        for event in events:
            state = self.evolve(state, event)
        return state


JOBS: Decider[jobs.JobCommand, jobs.JobState] = Decider(
    jobs.decide, jobs.evolve, jobs.initial_state
)
NODES: Decider[nodes.NodeCommand, nodes.NodeState] = Decider(
    nodes.decide, nodes.evolve, nodes.initial_state
)


@dataclass(frozen=True, slots=True)
class Outcome(Generic[S]):
    recorded: list[Recorded]  # empty when the command changed nothing
    state: S  # the stream's state after it


class _StreamLocks:
    """One lock per busy stream, so that commands on one stream queue in-process
    instead of racing to a conflict; a lock is dropped once nobody holds or awaits it.

    Plain ``__aenter__``/``__aexit__`` rather than ``contextlib.asynccontextmanager``,
    whose generator cost a third of the handler's own time on the heartbeat path."""

    def __init__(self) -> None:
        self._locks: dict[str, _StreamLock] = {}

    def hold(self, stream: str) -> _StreamLock:
        """The stream's lock, for ``async with`` at once: an entry counts its users only
        from ``__aenter__``, so one taken and never entered would stay in the table."""
        entry = self._locks.get(stream)
        if entry is None:
            entry = self._locks[stream] = _StreamLock(self._locks, stream)
        return entry


class _StreamLock:
    __slots__ = ("_lock", "_owners", "_stream", "users")

    def __init__(self, owners: dict[str, _StreamLock], stream: str) -> None:
        self._lock = asyncio.Lock()
        self._owners = owners
        self._stream = stream
        self.users = 0  # holding it or waiting for it

    async def __aenter__(self) -> None:
        self.users += 1
        try:
            await self._lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()
        self._leave()

    def _leave(self) -> None:
        self.users -= 1
        if self.users == 0:
            del self._owners[self._stream]


class CommandHandler:
    MAX_RETRIES = 20

    def __init__(self, store: EventStore, clock: Clock, *, cache_size: int = 100_000) -> None:
        self.store = store
        self.clock = clock
        self._cache: dict[str, tuple[Any, int]] = {}
        self._cache_size = cache_size
        self._locks = _StreamLocks()

    async def handle(self, stream: str, decider: Decider[C, S], command: C) -> Outcome[S]:
        async with self._locks.hold(stream):
            return await self._handle(stream, decider, command)

    async def state(self, stream: str, decider: Decider[C, S]) -> tuple[S, int]:
        """The stream's current state and version, from the cache or the log."""
        cached = self._cache.get(stream)
        state, version = cached if cached is not None else (decider.initial_state(), 0)
        newer = await self.store.read_stream(stream, after_version=version)
        if newer:
            state = decider.fold(state, [r.event for r in newer])
            version = newer[-1].version
            self._remember(stream, state, version)
        return state, version

    async def _handle(self, stream: str, decider: Decider[C, S], command: C) -> Outcome[S]:
        cached = self._cache.get(stream)
        if cached is None:
            state, version = await self.state(stream, decider)
        else:
            state, version = cached
        fresh = cached is None  # read from the log just now, not taken from the cache
        for _ in range(self.MAX_RETRIES):
            refusal: DomainError | None = None
            try:
                events = decider.decide(command, state)
            except DomainError as exc:
                if fresh:
                    raise
                refusal, events = exc, []
            if not events:
                # A refusal or a no-op decided on a cached state may only mean that the
                # cache is behind (another replica appended): the append's version check
                # never runs to say so. Decide once more on what the log holds.
                if not fresh:
                    fresh = True
                    newer_state, newer_version = await self.state(stream, decider)
                    if newer_version != version:
                        state, version = newer_state, newer_version
                        continue
                if refusal is not None:
                    raise refusal
                return Outcome([], state)
            try:
                recorded = await self.store.append(
                    stream, events, expected_version=version, timestamp=self.clock.now()
                )
            except ConcurrencyError:
                state, version = await self.state(stream, decider)
                fresh = True
                continue
            state = decider.fold(state, events)
            self._remember(stream, state, recorded[-1].version)
            return Outcome(recorded, state)
        raise ConcurrencyError(stream, version)

    def _remember(self, stream: str, state: Any, version: int) -> None:
        cache = self._cache
        cache.pop(stream, None)
        cache[stream] = (state, version)
        if len(cache) > self._cache_size:
            del cache[next(iter(cache))]  # the least recently written

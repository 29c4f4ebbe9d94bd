"""What both stores do the same way on the road to the log: a queued append, its
events encoded and chained onto the head, rows read back as ``Recorded``, the
cache of stream versions their writers keep, and the fault that stops their writes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from shelby.events.codec import chain_digest, decode_event, encode_data, envelope_around_seq
from shelby.events.store import Projection, Recorded, StoreError, StoreUnavailable
from shelby.events.types import Event

__all__ = [
    "REBUILD_CHUNK",
    "Pending",
    "WriteFaults",
    "chain",
    "pending",
    "remember_versions",
    "replay_records",
    "row_to_recorded",
]

REBUILD_CHUNK = 20_000
VERSION_CACHE_SIZE = 200_000


class Pending:
    """One caller's append, queued for the writer."""

    __slots__ = ("encoded", "expected_version", "future", "stream", "timestamp")

    def __init__(
        self,
        stream: str,
        encoded: list[tuple[str, str, Event, bytes, bytes]],
        expected_version: int,
        timestamp: float,
        future: asyncio.Future[list[Recorded]],
    ) -> None:
        self.stream = stream
        # (type, canonical data, event, envelope before and after its seq) per event
        self.encoded = encoded
        self.expected_version = expected_version
        self.timestamp = timestamp
        self.future = future


def pending(
    stream: str, events: Sequence[Event], expected_version: int, timestamp: float
) -> Pending:
    """Encode an append on the caller's side of the queue, so the writer only joins
    each event's canonical bytes around its seq and hashes them; an event that cannot be
    written as UTF-8 (a lone surrogate) fails here, alone."""
    encoded: list[tuple[str, str, Event, bytes, bytes]] = []
    try:
        for i, event in enumerate(events):
            type_, data = type(event).__name__, encode_data(event)
            before, after = envelope_around_seq(
                stream=stream,
                version=expected_version + i + 1,
                type=type_,
                timestamp=timestamp,
                data=data,
            )
            encoded.append((type_, data, event, before, after))
    except UnicodeEncodeError as exc:
        raise StoreError(f"an event cannot be encoded as UTF-8: {exc}") from exc
    future: asyncio.Future[list[Recorded]] = asyncio.get_running_loop().create_future()
    return Pending(stream, encoded, expected_version, timestamp, future)


def chain(p: Pending, seq: int, prev: str) -> list[Recorded]:
    """``p``'s events as the log rows that follow ``seq`` (whose hash is ``prev``)."""
    recs: list[Recorded] = []
    digest = bytes.fromhex(prev)
    for i, (type_, data, event, before, after) in enumerate(p.encoded):
        s = seq + i + 1
        version = p.expected_version + i + 1
        digest = chain_digest(digest, b"%b%d%b" % (before, s, after))
        h = digest.hex()
        recs.append(
            Recorded(
                seq=s,
                stream=p.stream,
                version=version,
                type=type_,
                timestamp=p.timestamp,
                data=data,
                prev_hash=prev,
                hash=h,
                event=event,
            )
        )
        prev = h
    return recs


def row_to_recorded(row: Sequence[Any]) -> Recorded:
    seq, stream, version, type_, timestamp, data, prev_hash, hash_ = row
    return Recorded(
        seq=seq,
        stream=stream,
        version=version,
        type=type_,
        timestamp=timestamp,
        data=data,
        prev_hash=prev_hash,
        hash=hash_,
        event=decode_event(data),
    )


def replay_records(projections: Sequence[Projection], rows: Sequence[Any]) -> list[Recorded]:
    """The rows of a replay chunk that ``projections`` apply, in log order, as
    ``Recorded``. A row is not decoded when no projection handles its type, or when
    a later row of its stream and type supersedes it for every projection that does
    (``Projection.superseded``): most of a log is heartbeats, and a replay needs each
    node's last one in the chunk."""
    handled: set[str] = set()
    applied_each: set[str] = set()  # types some projection applies every one of
    for proj in projections:
        handled |= proj.handles
        applied_each |= proj.handles - proj.superseded
    superseded = handled - applied_each
    newer: set[tuple[str, str]] = set()
    out: list[Recorded] = []
    for row in reversed(rows):
        type_ = row[3]
        if type_ not in handled:
            continue
        if type_ in superseded:
            key = (row[1], type_)
            if key in newer:
                continue
            newer.add(key)
        try:
            out.append(row_to_recorded(row))
        except (msgspec.DecodeError, UnicodeError) as exc:
            # Not JSON, not an event, or not UTF-8 (an archived row, read with
            # surrogates): a replay cannot apply it, and must not guess.
            raise StoreError(
                f"event {row[0]} cannot be decoded ({exc}); shelby verify names what is wrong"
            ) from exc
    out.reverse()
    return out


def remember_versions(cache: dict[str, int], versions: dict[str, int]) -> None:
    """Record committed stream versions, dropping the least recently written ones past
    ``VERSION_CACHE_SIZE``; a miss costs one indexed query."""
    for stream, version in versions.items():
        cache.pop(stream, None)
        cache[stream] = version
    while len(cache) > VERSION_CACHE_SIZE:
        del cache[next(iter(cache))]


class WriteFaults:
    """The fault that made the last write fail (disk full, read-only, unreachable),
    until a write goes through again.

    A store that answers reads but cannot write is not healthy, and health must say so
    without waiting for the next caller's write to find out. While a fault stands,
    ``check`` tries the store's ``probe`` (a write that changes nothing) at most once
    every ``probe_every`` seconds, so that health also recovers without traffic.
    """

    def __init__(self, probe_every: float = 1.0) -> None:
        self.fault: str | None = None
        self._probe_every = probe_every
        self._probed_at = float("-inf")

    def failed(self, fault: StoreUnavailable) -> None:
        self.fault = str(fault)

    def succeeded(self) -> None:
        self.fault = None

    async def check(self, probe: Callable[[], Awaitable[None]]) -> None:
        """Raises ``StoreUnavailable`` while the fault stands."""
        if self.fault is None:
            return
        now = time.monotonic()
        if now - self._probed_at >= self._probe_every:
            self._probed_at = now
            try:
                await probe()
            except StoreUnavailable as exc:
                self.fault = str(exc)
            else:
                self.fault = None
                return
        raise StoreUnavailable(self.fault)

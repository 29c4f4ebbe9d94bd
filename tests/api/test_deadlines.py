"""The body-reading deadlines, in process with short timeouts, through the endpoints'
own ``_read_body``. The whole road (a real server answering a trickled body with 408)
is in ``tests/hardening/test_hostile_clients.py``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shelby.api.deadlines import Deadlines
from shelby.api.endpoint import _read_body
from shelby.api.errors import ApiError

SCOPE: dict[str, Any] = {"headers": []}


def _receiving(arrives: asyncio.Future[Any]) -> Any:
    """An ASGI ``receive`` whose one message is what ``arrives`` resolves to."""

    async def receive() -> Any:
        got = await arrives
        return got if isinstance(got, dict) else {"type": "http.request", "body": got}

    return receive


async def _read(deadlines: Deadlines, arrives: asyncio.Future[Any], limit: int = 1024) -> str:
    try:
        return (await _read_body(SCOPE, _receiving(arrives), limit, deadlines)).decode()
    except ApiError as err:
        return f"{err.status} {err.detail}"


def _slack(deadlines: Deadlines) -> float:
    # A tick late at most, plus room for a busy machine (the suite runs three workers).
    return deadlines.timeout + deadlines.tick + 1.0


async def test_a_body_that_never_comes_is_a_408_after_its_deadline() -> None:
    deadlines = Deadlines(0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcome = await asyncio.create_task(_read(deadlines, loop.create_future()))
    assert outcome == "408 the request body did not arrive within 0.2 s"
    assert 0.2 <= loop.time() - started < _slack(deadlines)
    assert deadlines._due == {} and deadlines._expired == set()


async def test_the_expired_task_is_not_left_cancelling() -> None:
    deadlines = Deadlines(0.1)
    never: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def read_then_wait() -> int:
        assert (await _read(deadlines, never)).startswith("408 ")
        await asyncio.sleep(0.01)  # would raise if the cancellation were still pending
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    assert await asyncio.create_task(read_then_wait()) == 0


async def test_bodies_that_arrive_in_time_are_not_touched_and_the_watchdog_stops() -> None:
    deadlines = Deadlines(1)  # far from the 0.05 s the bodies take, however busy the machine
    loop = asyncio.get_running_loop()
    arrivals: list[asyncio.Future[Any]] = [loop.create_future() for _ in range(20)]
    reads = [asyncio.create_task(_read(deadlines, f)) for f in arrivals]
    await asyncio.sleep(0.05)
    for i, f in enumerate(arrivals):
        f.set_result(b"body %d" % i)
    assert await asyncio.gather(*reads) == [f"body {i}" for i in range(20)]
    watchdog = deadlines._watchdog
    assert watchdog is not None
    await asyncio.wait_for(watchdog, timeout=_slack(deadlines))  # nobody reads any more
    assert deadlines._due == {} and deadlines._expired == set()


async def test_a_body_already_there_starts_no_task_per_request() -> None:
    deadlines = Deadlines(30)
    loop = asyncio.get_running_loop()
    first = None
    for i in range(50):
        ready: asyncio.Future[Any] = loop.create_future()
        ready.set_result(b"%d" % i)
        assert await _read(deadlines, ready) == str(i)
        first = first or deadlines._watchdog
        assert deadlines._watchdog is first  # one watchdog for all of them
        await asyncio.sleep(0)  # the watchdog's first step runs between requests
    deadlines.close()


async def test_a_413_or_a_client_gone_ends_the_clock_too() -> None:
    deadlines = Deadlines(30)
    loop = asyncio.get_running_loop()
    big: asyncio.Future[Any] = loop.create_future()
    big.set_result(b"x" * 2000)
    assert (await _read(deadlines, big)).startswith("413 ")
    gone: asyncio.Future[Any] = loop.create_future()
    gone.set_result({"type": "http.disconnect"})
    assert await _read(deadlines, gone) == "400 the client went away"
    assert deadlines._due == {}
    deadlines.close()


async def test_a_cancellation_from_elsewhere_is_not_taken_for_the_deadline() -> None:
    deadlines = Deadlines(30)
    reading = asyncio.create_task(_read(deadlines, asyncio.get_running_loop().create_future()))
    await asyncio.sleep(0.01)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert deadlines._due == {}
    deadlines.close()


async def test_a_cancellation_from_elsewhere_at_the_deadline_still_stands() -> None:
    """The watchdog and a shutdown cancel the reader in the same turn of the loop: the
    shutdown's cancellation must not be swallowed into a 408."""
    deadlines = Deadlines(0.1)
    reading = asyncio.create_task(_read(deadlines, asyncio.get_running_loop().create_future()))
    # Each turn of the loop until the watchdog has cancelled it, before the reader runs.
    while reading not in deadlines._expired:  # noqa: ASYNC110
        await asyncio.sleep(0)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert deadlines._due == {} and deadlines._expired == set()


async def test_only_the_late_one_of_two_readers_expires() -> None:
    deadlines = Deadlines(0.2)
    loop = asyncio.get_running_loop()
    late: asyncio.Future[Any] = loop.create_future()
    on_time: asyncio.Future[Any] = loop.create_future()
    reads = [asyncio.create_task(_read(deadlines, f)) for f in (late, on_time)]
    loop.call_later(0.05, on_time.set_result, b"here")
    assert await asyncio.gather(*reads) == [
        "408 the request body did not arrive within 0.2 s",
        "here",
    ]


def test_an_app_moved_to_another_loop_still_keeps_deadlines() -> None:
    """Each loop gets its own watchdog: the first loop's, not finished when the app
    moved on (a test client's loop, say), does not stand in for it."""
    deadlines = Deadlines(0.1)

    async def expire() -> str:
        return await _read(deadlines, asyncio.get_running_loop().create_future())

    first = asyncio.new_event_loop()
    try:
        assert first.run_until_complete(expire()).startswith("408 ")
        old_watchdog = deadlines._watchdog
        assert old_watchdog is not None and not old_watchdog.done()  # asleep for a tick
        assert asyncio.run(asyncio.wait_for(expire(), timeout=5)).startswith("408 ")
        assert deadlines._watchdog is not old_watchdog
    finally:
        first.run_until_complete(asyncio.sleep(2 * deadlines.tick))  # the old one ends
        first.close()


def test_a_reader_on_another_loop_is_left_alone_and_dropped_once_that_loop_closed() -> None:
    """A watchdog cancels only its own loop's readers; a reader stranded on a loop that
    was closed under it never ends its clock, and the next watchdog drops it."""
    deadlines = Deadlines(0.1)

    async def expire() -> str:
        return await _read(deadlines, asyncio.get_running_loop().create_future())

    first = asyncio.new_event_loop()
    stranded = first.create_task(expire())
    first.run_until_complete(asyncio.sleep(0.01))  # reading, on a loop that then stands still
    try:
        assert asyncio.run(asyncio.wait_for(expire(), timeout=5)).startswith("408 ")
        # Past its deadline, but not the other loop's to cancel.
        assert stranded.cancelling() == 0 and stranded not in deadlines._expired
    finally:
        first.close()
    assert stranded in deadlines._due
    assert asyncio.run(asyncio.wait_for(expire(), timeout=5)).startswith("408 ")
    assert stranded not in deadlines._due
    stranded.get_coro().close()  # its reading ends (as at collection) with no clock left


def test_closing_after_its_loop_closed_does_not_raise() -> None:
    deadlines = Deadlines(30)
    loop = asyncio.new_event_loop()
    reading = loop.create_task(_read(deadlines, loop.create_future()))
    loop.run_until_complete(asyncio.sleep(0.01))  # its watchdog started, asleep
    loop.close()
    deadlines.close()
    assert not reading.done()  # left on the closed loop, as a server's would be
    reading.get_coro().close()
    assert deadlines._due == {}

"""The body-reading deadlines' watchdog, in process with short timeouts. The whole road
(a real server answering a trickled body with 408) is in
``tests/hardening/test_hostile_clients.py``."""

from __future__ import annotations

import asyncio

import pytest

from shelby.api.deadlines import Deadlines


async def _read(deadlines: Deadlines, arrives: asyncio.Future[bytes]) -> str:
    """What ``_read_body`` does around its reading, with the outcome named."""
    task = deadlines.start()
    try:
        body = await arrives
    except asyncio.CancelledError:
        if deadlines.ended(task):
            return "expired"
        raise
    deadlines.ended(task)
    return body.decode()


async def test_a_body_that_never_comes_expires_within_a_tick_of_its_deadline() -> None:
    deadlines = Deadlines(0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    never: asyncio.Future[bytes] = loop.create_future()
    outcome = await asyncio.create_task(_read(deadlines, never))
    took = loop.time() - started
    assert outcome == "expired"
    assert 0.2 <= took < 0.2 + 2 * deadlines.tick


async def test_the_expired_task_is_not_left_cancelling() -> None:
    deadlines = Deadlines(0.1)
    never: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def read_then_wait() -> int:
        assert await _read(deadlines, never) == "expired"
        await asyncio.sleep(0.01)  # would raise if the cancellation were still pending
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    assert await asyncio.create_task(read_then_wait()) == 0


async def test_bodies_that_arrive_in_time_are_not_touched_and_the_watchdog_stops() -> None:
    deadlines = Deadlines(0.2)
    loop = asyncio.get_running_loop()
    arrivals = [loop.create_future() for _ in range(20)]
    reads = [asyncio.create_task(_read(deadlines, f)) for f in arrivals]
    await asyncio.sleep(0.05)
    for i, f in enumerate(arrivals):
        f.set_result(b"body %d" % i)
    assert await asyncio.gather(*reads) == [f"body {i}" for i in range(20)]
    watchdog = deadlines._watchdog
    assert watchdog is not None
    await asyncio.wait_for(watchdog, timeout=2 * deadlines.tick + 0.5)  # nobody reads any more
    assert deadlines._due == {} and deadlines._expired == set()


async def test_a_cancellation_from_elsewhere_is_not_taken_for_the_deadline() -> None:
    deadlines = Deadlines(30)
    never: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    reading = asyncio.create_task(_read(deadlines, never))
    await asyncio.sleep(0.01)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert deadlines._due == {}
    deadlines.close()


async def test_only_the_late_one_of_two_readers_expires() -> None:
    deadlines = Deadlines(0.2)
    loop = asyncio.get_running_loop()
    late: asyncio.Future[bytes] = loop.create_future()
    on_time: asyncio.Future[bytes] = loop.create_future()
    reads = [asyncio.create_task(_read(deadlines, f)) for f in (late, on_time)]
    loop.call_later(0.05, on_time.set_result, b"here")
    assert await asyncio.gather(*reads) == ["expired", "here"]


def test_an_app_moved_to_another_loop_still_keeps_deadlines() -> None:
    """Each loop gets its own watchdog: the first loop's, not finished when the app
    moved on (a test client's loop, say), does not stand in for it."""
    deadlines = Deadlines(0.1)

    async def expire() -> str:
        never: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        return await _read(deadlines, never)

    first = asyncio.new_event_loop()
    try:
        assert first.run_until_complete(expire()) == "expired"
        old_watchdog = deadlines._watchdog
        assert old_watchdog is not None and not old_watchdog.done()  # asleep for a tick
        assert asyncio.run(asyncio.wait_for(expire(), timeout=2)) == "expired"
        assert deadlines._watchdog is not old_watchdog
    finally:
        first.run_until_complete(asyncio.sleep(2 * deadlines.tick))  # the old one ends
        first.close()

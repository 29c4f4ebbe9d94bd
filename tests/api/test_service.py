"""The service's in-memory token map against the log it derives from."""

from __future__ import annotations

import asyncio
from pathlib import Path

from shelby.domain import NODES
from shelby.domain.nodes import RegisterNode
from shelby.events.types import node_stream
from shelby.scheduler import Scheduler
from shelby.service import Service, token_hash
from shelby.settings import Settings


async def test_a_token_registered_through_another_replica_is_learnt_on_demand(
    tmp_path: Path,
) -> None:
    """Two services on one log, as two replicas: a node registered through one is known
    to the other as soon as it asks the projection, before any notice reaches it."""
    settings = Settings(db=str(tmp_path / "shelby.db"), admin_token="a", join_token="j")
    one, other = Service(settings), Service(settings)
    await one.start()
    await other.start()
    try:
        hashed = token_hash("node-secret")
        await one.handler.handle(
            node_stream("n1"),
            NODES,
            RegisterNode(node_id="n1", name="n1", token_hash=hashed, labels={"zone": "eu"}),
        )
        assert one.node_of_token(hashed) == "n1"
        assert other.node_of_token(hashed) is None  # SQLite tells no other process
        assert await other.learn_token(hashed)
        assert other.node_of_token(hashed) == "n1"
        assert other.node_profiles["n1"].labels == {"zone": "eu"}
        assert not await other.learn_token(token_hash("never-issued"))
    finally:
        await one.close()
        await other.close()


async def test_closing_the_work_signal_ends_waiting_polls_and_later_ones_do_not_wait(
    tmp_path: Path,
) -> None:
    """The server's shutdown: a poll waiting for work answers "no job" once the work
    signal is closed, and a poll that starts afterwards answers at once."""
    settings = Settings(db=str(tmp_path / "shelby.db"), admin_token="a", join_token="j")
    service = Service(settings)
    await service.start()
    try:
        await service.handler.handle(
            node_stream("n1"), NODES, RegisterNode(node_id="n1", name="n1", token_hash="h")
        )
        scheduler = Scheduler(service)
        waiting = asyncio.create_task(scheduler.poll("n1", wait=60))
        await asyncio.sleep(0.5)
        assert not waiting.done()  # it found nothing and sleeps on the signal
        service.work.close()
        assert await asyncio.wait_for(waiting, timeout=10) is None
        assert await asyncio.wait_for(scheduler.poll("n1", wait=60), timeout=10) is None
    finally:
        await service.close()

"""Fixtures of the PostgreSQL tests: a fresh database per test, and stores on it.

PostgreSQL runs at ``$SHELBY_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/test``; ``make test`` starts the local cluster).
Each test gets a database ``shelby_test_<random>`` of its own, dropped after it even if
something still holds a connection to it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import asyncpg
import pytest

from shelby.events.postgres import PostgresEventStore
from shelby.events.store import Projection
from shelby.projections import all_projections

ADMIN_URL = os.environ.get("SHELBY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")

StoreFactory = Callable[..., Awaitable[PostgresEventStore]]


def database_url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """The URL of a new, empty database, dropped after the test."""
    name = f"shelby_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield database_url(name)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def admin() -> AsyncIterator[asyncpg.Connection]:
    """A superuser connection to the cluster, outside the test's database."""
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def stores(pg_url: str) -> AsyncIterator[StoreFactory]:
    """Opens stores (replicas, as far as the database can tell) on the test's
    database; all are closed afterwards."""
    opened: list[PostgresEventStore] = []

    async def make(projections: Sequence[Projection] | None = None) -> PostgresEventStore:
        chosen = all_projections() if projections is None else list(projections)
        store = PostgresEventStore(pg_url, chosen)
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()

"""Fixtures of the event-log tests."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shelby.projections import all_projections

from ._helpers import append_sample_log, opened


@pytest.fixture(scope="module")
def sample_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed SQLite file holding a small realistic log, shared by a module's tests:
    copy it before changing anything."""
    path = tmp_path_factory.mktemp("sample") / "sample.db"

    async def build() -> None:
        async with opened(path, all_projections()) as store:
            await append_sample_log(store)

    asyncio.run(build())
    return path

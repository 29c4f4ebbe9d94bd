"""Reading an attempt's log back from its batches, by offset, against a plain list."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shelby.events.sqlite import SQLiteEventStore
from shelby.events.types import LogLine, LogLinesAppended, job_stream
from shelby.projections import all_projections
from shelby.projections.logs import read_lines


def _write_and_read(
    path: Path, sizes: list[int], reads: list[tuple[int, int | None]]
) -> tuple[list[str], list[list[str]]]:
    async def run() -> tuple[list[str], list[list[str]]]:
        store = SQLiteEventStore(path, all_projections())
        await store.open()
        try:
            offset, version, model = 0, 0, []
            for n, size in enumerate(sizes):
                lines = [LogLine(line=f"b{n}l{i}", timestamp=float(n)) for i in range(size)]
                model.extend(ln.line for ln in lines)
                event = LogLinesAppended(
                    job_id="j", node_id="n", attempt=1, offset=offset, lines=lines
                )
                await store.append(
                    job_stream("j"), [event], expected_version=version, timestamp=1.0
                )
                offset, version = offset + size, version + 1
            got = []
            for limit, after in reads:
                read = await read_lines(store, "j", 1, limit=limit, after=after)
                assert (
                    [o for o, _ in read] == list(range(read[0][0], read[0][0] + len(read)))
                    if read
                    else True
                )
                got.append([ln.line for _, ln in read])
            return model, got
        finally:
            await store.close()

    return asyncio.run(run())


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=0, max_size=150),
    reads=st.lists(
        st.tuples(st.integers(0, 3000), st.one_of(st.none(), st.integers(-1, 3000))),
        min_size=1,
        max_size=6,
    ),
)
@example(  # many more batches than one page of them, read across page boundaries
    sizes=[1] * 150 + [7] * 30 + [40] * 5,
    reads=[(1000, None), (5, None), (100, 60), (1000, -1), (3, 148), (0, 10), (70, 300)],
)
def test_reads_equal_slices_of_the_whole_log(
    tmp_path_factory: object, sizes: list[int], reads: list[tuple[int, int | None]]
) -> None:
    """Any limit, with or without ``after``, gives exactly the slice of the attempt's
    lines a plain list would, across as many batches (and pages of them) as it takes."""
    path = tmp_path_factory.mktemp("logs") / "log.db"  # type: ignore[attr-defined]
    model, got = _write_and_read(path, sizes, reads)
    for (limit, after), lines in zip(reads, got, strict=True):
        expected = (
            model[after + 1 :][:limit] if after is not None else model[-limit:] if limit else []
        )
        assert lines == expected


def test_reads_skip_a_stretch_of_offsets_no_longer_kept(tmp_path: Path) -> None:
    """Where the batches of a stretch of offsets are not there (a pruned or archived
    history), a read after an offset still gets the next lines kept, up to its limit,
    and the last lines are still the last ones."""

    async def run() -> dict[str, list[int]]:
        store = SQLiteEventStore(tmp_path / "log.db", all_projections())
        await store.open()
        try:
            for version, offset in enumerate((0, 100, 110)):
                lines = [LogLine(line=f"l{offset + i}", timestamp=1.0) for i in range(10)]
                event = LogLinesAppended(
                    job_id="j", node_id="n", attempt=1, offset=offset, lines=lines
                )
                await store.append(
                    job_stream("j"), [event], expected_version=version, timestamp=1.0
                )

            async def offsets(limit: int, after: int | None) -> list[int]:
                return [o for o, _ in await read_lines(store, "j", 1, limit=limit, after=after)]

            return {
                "across": await offsets(10, 5),
                "inside": await offsets(5, 50),
                "last": await offsets(5, None),
                "last across": await offsets(25, None),
                "past": await offsets(5, 119),
            }
        finally:
            await store.close()

    got = asyncio.run(run())
    assert got["across"] == [6, 7, 8, 9, 100, 101, 102, 103, 104, 105]
    assert got["inside"] == [100, 101, 102, 103, 104]
    assert got["last"] == [115, 116, 117, 118, 119]
    assert got["last across"] == [5, 6, 7, 8, 9, *range(100, 120)]
    assert got["past"] == []

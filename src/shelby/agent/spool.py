"""A job attempt's log on the node's disk, shipped to the server by offset.

Every line the script prints is appended here first, with its position in the
attempt's log (0, 1, 2, …). The server acknowledges batches with ``nextOffset``; only
then does the acknowledged position move, and it is saved beside the lines. While the
server is unreachable lines simply pile up; after an outage or an agent restart the
shipper resends from the acknowledged position, and because the server drops lines
at positions it already has, nothing is lost and nothing is duplicated.

Layout, in the spool's directory:

- ``lines.jsonl``: one JSON object per line, ``{"line", "timestamp", "stream"}``.
- ``acked``: ``"<offset> <byte position>"``, replaced atomically on every ack.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["LogSpool", "SpooledLine"]

SpooledLine = dict[str, Any]
"""One line as the server takes it: ``{"line": str, "timestamp": float, "stream": str}``."""


class LogSpool:
    def __init__(self, directory: Path) -> None:
        # The agent's alone: a job (even one run as another user) does not rewrite its log.
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lines_path = directory / "lines.jsonl"
        self._acked_path = directory / "acked"
        self.acked, acked_pos = self._load_acked()
        self._lines_path.touch()
        self._drop_torn_tail()
        # Byte positions of the unacknowledged lines, then the end of the file: what
        # lets ``pending`` and ``ack`` seek without rereading acknowledged lines.
        self._positions = self._scan(acked_pos)
        self._writer = open(self._lines_path, "ab")  # noqa: SIM115 - open for the spool's life

    # --- the writer's side ---------------------------------------------------------

    @property
    def written(self) -> int:
        """How many lines the attempt's log holds: the next line's offset."""
        return self.acked + len(self._positions) - 1

    def append(self, lines: Iterable[SpooledLine]) -> None:
        data = bytearray()
        for line in lines:
            encoded = json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode()
            data += encoded + b"\n"
            self._positions.append(self._positions[-1] + len(encoded) + 1)
        if data:
            self._writer.write(data)

    def flush(self) -> None:
        """Hand appended lines to the OS: from then on they outlive a killed agent.
        Separate from ``append`` so that a burst of lines costs one write, not one each."""
        self._writer.flush()

    # --- the shipper's side --------------------------------------------------------

    def pending(self, max_lines: int, max_bytes: int) -> tuple[int, list[SpooledLine]]:
        """The first unacknowledged offset and up to ``max_lines`` lines from it (at least
        one line when any is waiting, however long)."""
        count = min(max_lines, len(self._positions) - 1)
        if count <= 0:
            return self.acked, []
        self._writer.flush()
        start = self._positions[0]
        end = self._positions[count]
        while count > 1 and end - start > max_bytes:
            count -= 1
            end = self._positions[count]
        with open(self._lines_path, "rb") as f:
            f.seek(start)
            raw = f.read(end - start)
        return self.acked, [json.loads(text) for text in raw.splitlines()]

    def ack(self, next_offset: int) -> None:
        """The server holds every line before ``next_offset``."""
        if next_offset <= self.acked:
            return
        if next_offset > self.written:
            raise ValueError(f"ack of offset {next_offset} beyond the {self.written} lines written")
        del self._positions[: next_offset - self.acked]
        self.acked = next_offset
        self._save_acked()

    def rewind(self, offset: int) -> None:
        """The server expects ``offset`` (below what it acknowledged before): resend from there."""
        if not 0 <= offset <= self.acked:
            raise ValueError(f"cannot rewind to {offset} from {self.acked}")
        self._writer.flush()
        self.acked = 0
        self._positions = self._scan(0)
        del self._positions[:offset]
        self.acked = offset
        self._save_acked()

    @property
    def drained(self) -> bool:
        return self.acked == self.written

    def close(self) -> None:
        self._writer.close()

    # --- on disk -------------------------------------------------------------------

    def _load_acked(self) -> tuple[int, int]:
        try:
            offset, position = self._acked_path.read_text().split()
            return int(offset), int(position)
        except FileNotFoundError:
            return 0, 0

    def _save_acked(self) -> None:
        tmp = self._acked_path.with_suffix(".tmp")
        tmp.write_text(f"{self.acked} {self._positions[0]}")
        os.replace(tmp, self._acked_path)

    def _drop_torn_tail(self) -> None:
        """A crash mid-write can leave half a line at the end; it was never shipped."""
        with open(self._lines_path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            keep = size
            while keep > 0:
                step = min(4096, keep)
                f.seek(keep - step)
                chunk = f.read(step)
                newline = chunk.rfind(b"\n")
                if newline >= 0:
                    keep = keep - step + newline + 1
                    break
                keep -= step
            if keep != size:
                f.truncate(keep)

    def _scan(self, position: int) -> list[int]:
        positions = [position]
        with open(self._lines_path, "rb") as f:
            f.seek(position)
            for raw in f:
                positions.append(positions[-1] + len(raw))
        return positions

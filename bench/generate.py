"""``python -m bench.generate --events N [--out FILE]``: build a realistic log of N events.

Every event is decided by Shelby's deciders and appended through its SQLite store with
every projection and the Merkle tree (see ``bench/_generator.py`` for what the log
holds). Prints progress and the events/s it reached. Without ``--out`` the log is kept
under ``$BENCH_DIR`` (else the temp dir) by its shape, and reused if already built.

    python -m bench.generate --events 1000000
    python -m bench.generate --events 10000 --nodes 1000 --out /tmp/small.db
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench._generator import Shape, cached_log, describe, generate
from shelby.logs import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__)
    parser.add_argument("--events", type=int, required=True, help="events in the log")
    parser.add_argument("--nodes", type=int, default=1000, help="nodes in the fleet")
    parser.add_argument("--jobs", type=int, default=0, help="jobs (default: events / 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="a new SQLite file (default: the cache)")
    args = parser.parse_args(argv)
    configure_logging(json=True)
    shape = Shape(args.events, nodes=args.nodes, jobs=args.jobs, seed=args.seed)
    if args.nodes > args.events:
        parser.error("a log needs at least one event per node (its registration)")
    if args.out is None:
        path = cached_log(shape)
        print(path)
        return 0
    if args.out.exists():
        parser.error(f"{args.out} exists")
    built = generate(args.out, shape, lambda n, _: print(f"    {n:,} events", flush=True))
    print(describe(built))
    return 0


if __name__ == "__main__":
    sys.exit(main())

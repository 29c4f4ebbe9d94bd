"""``python -m bench [--quick] [--list] [NAME ...]``: run the named benchmarks, or all.

A name is a module's name with or without its ``bench_`` prefix, or any unique part of
it (``append`` finds ``bench_store_append``). Each runs in this process, one after the
other; one that fails is reported and the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover() -> list[str]:
    """Every ``bench_*.py`` beside this file, by module name, sorted."""
    return sorted(p.stem for p in HERE.glob("bench_*.py"))


def resolve(names: list[str], found: list[str]) -> list[str]:
    chosen: list[str] = []
    for name in names:
        exact = name if name.startswith("bench_") else f"bench_{name}"
        matches = [exact] if exact in found else [m for m in found if name in m]
        if len(matches) != 1:
            known = ", ".join(m.removeprefix("bench_") for m in found)
            what = "ambiguous" if matches else "unknown"
            raise SystemExit(f"{what} benchmark {name!r}; known: {known}")
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="short runs")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    found = discover()
    if args.list:
        print("\n".join(m.removeprefix("bench_") for m in found))
        return 0
    chosen = resolve(args.names, found) if args.names else found
    if str(HERE.parent) not in sys.path:
        sys.path.insert(0, str(HERE.parent))
    failed: list[str] = []
    for name in chosen:
        print(
            f"=== {name.removeprefix('bench_')}{' (quick)' if args.quick else ''} ===", flush=True
        )
        started = time.perf_counter()
        try:
            module = importlib.import_module(f"bench.{name}")
            module.main(quick=args.quick)
        except KeyboardInterrupt:
            raise
        except SystemExit as exc:
            if exc.code not in (0, None):
                failed.append(name)
        except BaseException:
            traceback.print_exc()
            failed.append(name)
        print(
            f"--- {name.removeprefix('bench_')}: {time.perf_counter() - started:.1f} s\n",
            flush=True,
        )
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shelby's benchmarks: each ``bench_<name>.py`` has ``main(quick: bool = False)`` and
prints its figures beside a baseline measured in the same run, with the ratio.

    python -m bench                 # every benchmark
    python -m bench replay append   # the named ones (bench_replay, bench_store_append)
    python -m bench --quick         # short runs, to check that they work
"""

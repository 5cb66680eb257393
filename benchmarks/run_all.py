"""Run every benchmark in this folder, one after the other, each in its own process (``make bench``).

Each benchmark prints its own table, every figure next to the floor it must clear (``floors.py``); this
only sequences them and reports which broke and which missed a floor. ``--quick`` passes the small sizes
of the test suite's smoke (``tests/test_benchmarks_smoke.py``); ``--strict`` fails on a missed floor. Benchmarks
measure speed targets (replay throughput, scenario wall time, figure build time, probe round trip); they
are not part of the test suite, whose timings would be meaningless on a shared CI machine.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ("bench_snapshot.py", "bench_replay.py", "bench_scenario.py", "bench_plots.py", "bench_probe.py",
         "bench_recorder.py", "bench_sim_hot_path.py", "bench_sweep.py")


FLOOR_MISSED_EXIT = 3  # floors.FLOOR_MISSED_EXIT


def main(argv: list[str] | None = None) -> int:
    """Exit 1 when a benchmark broke; a missed floor is listed loudly but fails only with ``--strict``
    (a shared machine misses floors without any change in the code)."""
    args = sys.argv[1:] if argv is None else argv
    strict = "--strict" in args
    extra = [a for a in args if a == "--quick"]
    failed, below = [], []
    for name in ORDER:
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, str(HERE / name), *extra])
        print(f"--- {name}: exit {code}, {time.perf_counter() - started:.1f} s", flush=True)
        if code == FLOOR_MISSED_EXIT:
            below.append(name)
        elif code:
            failed.append(name)
    if below:
        print(f"\nFAIL: below a floor in {', '.join(below)} (see FAIL lines above)", file=sys.stderr)
    if failed:
        print(f"\nbroken: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed or (strict and below) else 0


if __name__ == "__main__":
    raise SystemExit(main())

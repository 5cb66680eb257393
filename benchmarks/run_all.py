"""Run every benchmark in this folder, one after the other, each in its own process (``make bench``).

Each benchmark prints its own table; this only sequences them and reports which failed. Benchmarks
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
         "bench_sim_hot_path.py", "bench_sweep.py")


def main() -> int:
    failed = []
    for name in ORDER:
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, str(HERE / name)])
        print(f"--- {name}: exit {code}, {time.perf_counter() - started:.1f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

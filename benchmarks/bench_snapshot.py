"""Time loading and reconstructing the real CUDA trace (target: well under a second in total).

    .venv/bin/python benchmarks/bench_snapshot.py [path/to/snapshot.pickle] [--repeat N]

Prints the median wall time of each step over N runs (default 20).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from floors import check, finish, set_quick
from toolkit.snapshot import (
    final_state,
    initial_state,
    load_snapshot,
    normalize_snapshot,
    summarize,
    trace_events,
)

DEFAULT = Path(os.environ.get("MEMLAB_TRACES", Path(__file__).resolve().parents[2] / "shared" / "data" / "traces")
               ) / "cuda-transformer-forward-a.pickle"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="3 repeats, nothing judged (the test suite's smoke)")
    args = parser.parse_args()
    set_quick(args.quick)
    if args.quick:
        args.repeat = 3
    if not args.path.is_file():
        print(f"(trace not found at {args.path}: nothing to measure)")
        return 0
    data = args.path.read_bytes()
    steps = {
        "load_snapshot (bytes -> normalised)": lambda: load_snapshot(data),
        "load_snapshot (raw, no normalise)": lambda: load_snapshot(data, normalize=False),
    }
    snap = load_snapshot(data)
    raw = load_snapshot(data, normalize=False)
    steps.update({
        "normalize_snapshot (raw dict)": lambda: normalize_snapshot(raw),
        "initial_state": lambda: initial_state(snap),
        "final_state": lambda: final_state(snap),
        "trace_events": lambda: trace_events(snap),
        "summarize": lambda: summarize(snap),
        "total: load + initial + final + events": lambda: (
            lambda s: (initial_state(s), final_state(s), trace_events(s)))(load_snapshot(data)),
    })
    print(f"{args.path.name}: {len(data) / 1e6:.2f} MB, {len(snap['segments'])} segments, "
          f"{sum(map(len, snap['device_traces']))} events; median of {args.repeat} runs")
    for name, fn in steps.items():
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        if name.startswith("total"):
            check(name, statistics.median(times) * 1e3, 1000.0, "ms", higher_is_better=False, fmt=",.2f")
        else:
            print(f"  {name:42s} {statistics.median(times) * 1e3:8.2f} ms")
    return finish()


if __name__ == "__main__":
    raise SystemExit(main())

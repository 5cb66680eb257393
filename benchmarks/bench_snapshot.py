"""Time loading and reconstructing the real CUDA trace (target: well under a second in total), and loading a
synthetic 10**6-event snapshot through the restricted unpickler (target: under 5 s).

    .venv/bin/python benchmarks/bench_snapshot.py [path/to/snapshot.pickle] [--repeat N] [--events N]

Prints the median wall time of each step over N runs (default 20). The large snapshot is timed against
plain ``pickle.loads`` of the same bytes in the same run (the ratio is what the bounds cost: prescan +
type checks), since absolute times depend on how busy the machine is.
"""

from __future__ import annotations

import argparse
import os
import pickle
import random
import statistics
import time
from pathlib import Path
from typing import Any

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


def synthetic_snapshot(events: int, seed: int = 0) -> dict[str, Any]:
    """A CUDA-layout snapshot with ``events`` alloc/free_requested entries sharing 50 frame lists."""
    rng = random.Random(seed)
    frames = [[{"filename": f"/src/f{i}.py", "line": i, "name": f"fn{i}"} for i in range(3)] for _ in range(50)]
    trace: list[dict[str, Any]] = []
    live: list[tuple[int, int]] = []
    t = 1_700_000_000_000_000
    for i in range(events):
        if live and rng.random() < 0.5:
            addr, size = live.pop(rng.randrange(len(live)))
            action = "free_requested"
        else:
            addr, size, action = 0x7F0000000000 + 512 * i, rng.randrange(1, 1 << 20), "alloc"
            live.append((addr, size))
        trace.append({"action": action, "addr": addr, "size": size, "stream": 0, "time_us": t + 3 * i,
                      "frames": frames[i % 50]})
    return {"segments": [], "device_traces": [trace], "allocator_settings": {"PYTORCH_CUDA_ALLOC_CONF": None}}


def bench_large(events: int, repeat: int) -> None:
    from toolkit.snapshot._prescan import prescan

    data = pickle.dumps(synthetic_snapshot(events), protocol=4)
    steps = {"pickle.loads (baseline, unrestricted)": lambda: pickle.loads(data),
             "prescan only": lambda: prescan(data),
             "load_snapshot (prescan + restricted unpickler + checks)": lambda: load_snapshot(data)}
    medians = {}
    print(f"synthetic snapshot: {events} events, {len(data) / 1e6:.1f} MB; median of {repeat} runs")
    for name, fn in steps.items():
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        medians[name] = statistics.median(times)
        print(f"  {name:56s} {medians[name]:7.2f} s")
    base = medians["pickle.loads (baseline, unrestricted)"]
    print(f"  ratio load_snapshot / pickle.loads: {medians['load_snapshot (prescan + restricted unpickler + checks)'] / base:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="3 repeats, nothing judged (the test suite's smoke)")
    parser.add_argument("--events", type=int, default=1_000_000, help="events of the synthetic snapshot (0: skip)")
    args = parser.parse_args()
    set_quick(args.quick)
    if args.quick:
        args.repeat, args.events = 3, min(args.events, 20_000)
    if args.events:
        bench_large(args.events, max(1, min(args.repeat, 3)))
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

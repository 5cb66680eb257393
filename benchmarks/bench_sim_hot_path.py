"""The simulator's hot path and the replay loop, as ratios to a baseline tree measured in the same run.

    .venv/bin/python benchmarks/bench_sim_hot_path.py [--quick] [--events 1000000] [--baseline REV] [--rounds 3]

Rows (all simulated; single thread; CPU time, best of the rounds):
  hot path          SimDevice.malloc/free on a seeded request stream, no recording (ops/s)
  replay loop       replay_events() of a synthetic recorded trace, seeded device (events/s)
  large replay      replay_events() of the --events trace (default 10^6) under its own conf: events/s
                    and tracemalloc peak per event (memory the replay adds: timeline rows, address map)

The baseline is another revision of ``toolkit`` (default ``BASELINE_REV``: main before the issue-14
hot-path work) exported with ``git archive`` and run in a subprocess on the same pickled streams,
alternating with the current tree round by round, so both see the same machine load. Each row prints
current/baseline; results must be identical (a digest of memory_stats, segments and replay rows).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BASELINE_REV = "e33e8b6"  # main when issue 14 started (exact replay of the six recordings merged)
MiB = 1 << 20
CASES_HOT = (("cuda", ""), ("cuda", "expandable_segments:True"), ("npu", ""))
CASES_REPLAY = (("cuda", ""), ("cuda", "expandable_segments:True"), ("npu", ""))


def _digest(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _state(dev: Any) -> tuple[Any, ...]:
    """What must not change: every statistic and the segment layout (addresses, sizes, states)."""
    snap = dev.snapshot()
    segs = [(s["address"], s["total_size"], tuple((b["address"], b["size"], b["state"], b["requested_size"])
                                                  for b in s["blocks"])) for s in snap["segments"]]
    return tuple(sorted(dev.memory_stats().items())), tuple(segs)


def _flat_rows(rows: Any) -> list[int]:
    """Replay rows as one flat int list (the baseline keeps tuples, the current tree a flat array)."""
    if rows and isinstance(rows[0], tuple):
        return [x for r in rows for x in r]
    return list(rows)


def worker(data_path: Path, rounds: int) -> dict[str, Any]:
    """Measure every row with the ``toolkit`` on sys.path (run in a subprocess per tree)."""
    sys.path.insert(0, str(HERE))
    from bench_replay import run_ops, seeded_device

    from toolkit.replay import replay_events
    from toolkit.sim import SimDevice

    with open(data_path, "rb") as f:
        data = pickle.load(f)
    ops, snap, events = data["ops"], data["snap"], data["events"]
    out: dict[str, Any] = {"toolkit": __import__("toolkit").__file__}

    def best(setup: Any, fn: Any) -> tuple[float, Any]:
        t_best, result = float("inf"), None
        for _ in range(rounds):
            arg = setup()
            t0 = time.process_time()
            result = fn(arg)
            t_best = min(t_best, time.process_time() - t0)
        return t_best, result

    for platform, conf in CASES_HOT:
        def hot(dev: Any) -> Any:
            run_ops(dev, ops)
            return dev
        secs, dev = best(lambda p=platform, c=conf: SimDevice(p, c, capacity_bytes=80 << 30, context_bytes=0), hot)
        out[f"hot path malloc/free, {platform} conf={conf!r}"] = (secs, len(ops), _digest(_state(dev)))
    for platform, conf in CASES_REPLAY:
        secs, res = best(lambda p=platform, c=conf: seeded_device(snap, p, c), lambda dev: replay_events(dev, events))
        out[f"replay loop, {platform} conf={conf!r}"] = (
            secs, len(events), _digest(_flat_rows(res.rows), res.events_replayed, _state(res.device)))
    return out


def build_data(n_events: int, seed: int, cache: Path) -> Path:
    """Seeded ops and a recorded synthetic trace (the current tree records it; both trees replay it)."""
    path = cache / f"hot-path-{n_events}-{seed}.pickle"
    if path.is_file():
        return path
    sys.path.insert(0, str(HERE))
    from bench_replay import synthetic_ops, synthetic_snapshot

    from toolkit.snapshot import normalize_snapshot, trace_events

    snap, n_ops = synthetic_snapshot(n_events, seed)
    snap = normalize_snapshot(snap)
    events = [tuple(e) for e in trace_events(snap)]
    with open(path, "wb") as f:
        pickle.dump({"ops": synthetic_ops(n_ops, seed), "snap": snap, "events": events}, f, protocol=5)
    return path


def export_baseline(rev: str, dest: Path) -> Path | None:
    """``git archive REV toolkit`` into dest (None when git or the revision is not available)."""
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "toolkit"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"(baseline {rev} not available: {exc}; ratios skipped)", file=sys.stderr)
        return None
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def run_worker(tree: Path, data: Path, rounds: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run([sys.executable, __file__, "--worker", str(data), "--rounds", str(rounds)],
                          env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def large_replay(n_events: int, seed: int, cache: Path) -> tuple[int, float, int]:
    """(events, CPU seconds, tracemalloc peak bytes) of replay_events on the n-event synthetic trace."""
    sys.path.insert(0, str(HERE))
    from bench_replay import seeded_device

    from toolkit.replay import replay_events

    with open(build_data(n_events, seed, cache), "rb") as f:
        data = pickle.load(f)
    snap, events = data["snap"], data["events"]
    best = float("inf")
    for _ in range(2):
        dev = seeded_device(snap, "cuda", "")
        t0 = time.process_time()
        res = replay_events(dev, events)
        best = min(best, time.process_time() - t0)
        assert res.events_replayed == len(events) and res.error is None, "the large replay did not complete"
    dev = seeded_device(snap, "cuda", "")
    tracemalloc.start()
    res = replay_events(dev, events)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return len(events), best, peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small streams, one round (a smoke run, about 20 s)")
    ap.add_argument("--events", type=int, default=1_000_000, help="events of the large replay")
    ap.add_argument("--hot-events", type=int, default=200_000, help="events of the hot-path / replay-loop streams")
    ap.add_argument("--baseline", default=BASELINE_REV, help="git revision measured as the baseline")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per tree (best is kept)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.rounds)))
        return 0
    if args.quick:
        args.events, args.hot_events, args.rounds = 100_000, 30_000, 1
    cache = Path(tempfile.gettempdir()) / "memlab-bench"
    cache.mkdir(exist_ok=True)
    data = build_data(args.hot_events, args.seed, cache)
    with tempfile.TemporaryDirectory(prefix="memlab-baseline-") as tmp:
        base_tree = export_baseline(args.baseline, Path(tmp))
        cur: dict[str, Any] = {}
        base: dict[str, Any] = {}
        for _ in range(args.rounds):  # alternate, one round each, so both trees see the same load
            for tree, acc in ((base_tree, base), (ROOT, cur)):
                if tree is None:
                    continue
                measured = run_worker(tree, data, 1)
                measured.pop("toolkit")
                for name, (secs, n, digest) in measured.items():
                    old = acc.get(name)
                    acc[name] = (min(secs, old[0]) if old else secs, n, digest)
    print(f"Python {sys.version.split()[0]}; CPU time, best of {args.rounds} alternating rounds; "
          f"baseline = toolkit at {args.baseline} (same run, same streams); simulated")
    print(f"{'benchmark':52s} {'n':>8s} {'per s':>11s} {'baseline/s':>11s} {'ratio':>6s}  same results")
    failed = False
    for name, (secs, n, digest) in cur.items():
        b = base.get(name)
        ratio = f"{b[0] / secs:5.2f}x" if b else "   - "
        same = ("yes" if b[2] == digest else "NO") if b else "-"
        failed |= same == "NO"
        print(f"{name:52s} {n:8,d} {n / secs:11,.0f} {(n / b[0]) if b else 0:11,.0f} {ratio}  {same}")
    n_ev, secs, peak = large_replay(args.events, args.seed, cache)
    print(f"large replay: replay_events of a {n_ev:,}-event synthetic trace (cuda, recorded conf): "
          f"{n_ev / secs:,.0f} events/s (CPU), tracemalloc peak {peak / n_ev:.0f} B/event ({peak / MiB:.0f} MiB)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The simulator's hot path and the replay loop, as ratios to a baseline tree measured in the same run.

    .venv/bin/python benchmarks/bench_sim_hot_path.py [--quick] [--events 1000000] [--baseline REV] [--rounds 3]

Rows (all simulated; single thread; CPU time, best of the rounds):
  hot path          SimDevice.malloc/free on a seeded request stream, no recording (ops/s)
  replay loop       replay_events() of a synthetic recorded trace, seeded device (events/s)
  large replay      replay_events() of the --events trace (default 10^6) under its own conf: events/s
                    and tracemalloc peak per event (memory the replay adds: timeline rows, address map)

Three trees run in alternating subprocesses on the same pickled streams, round by round, so all see the same
machine load: the baseline, another revision of ``toolkit`` (default ``BASELINE_REV``: main before the
issue-14 work) exported with ``git archive``; this tree with ``MEMLAB_PURE_PYTHON=1`` (pure); and this tree as
installed (compiled twin, docs/performance.md). Each row prints compiled/baseline, pure/baseline and
compiled/pure; results must be identical in all three (a digest of memory_stats, segments and replay rows).
Floors (the issue-14 targets): hot path compiled >= 2x the baseline on every row, the large replay >= 10^6
events/s, its memory <= 64 B/event.
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

from floors import check, finish, set_quick

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


def _env(tree: Path, pure: bool) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    env.pop("MEMLAB_PURE_PYTHON", None)
    if pure:
        env["MEMLAB_PURE_PYTHON"] = "1"
    return env


def run_worker(tree: Path, data: Path, rounds: int, pure: bool = False) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--worker", str(data), "--rounds", str(rounds)],
                          env=_env(tree, pure), capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def loaded_kinds() -> str:
    """'compiled', 'python' or 'mixed': which copy of the hot modules this process runs (toolkit/_compiled.py)."""
    import toolkit

    # A tree from before the compiled twin has no _compiled.py. Look in the tree itself: an editable install's
    # import finder would otherwise hand this process the current tree's _compiled (fresh clones have one).
    if not (Path(toolkit.__file__).parent / "_compiled.py").is_file():
        return "python"
    from toolkit import _compiled

    kinds = set(_compiled.import_all().values())
    return kinds.pop() if len(kinds) == 1 else "mixed"


def large_replay(n_events: int, seed: int, cache: Path) -> tuple[int, float, int]:
    """(events, CPU seconds, tracemalloc peak bytes) of replay_events on the n-event synthetic trace."""
    sys.path.insert(0, str(HERE))
    from bench_replay import seeded_device

    from toolkit.replay import replay_events

    with open(build_data(n_events, seed, cache), "rb") as f:
        data = pickle.load(f)
    snap, events = data["snap"], data["events"]
    best = float("inf")
    for _ in range(3):  # best of 3: one slow round on a shared machine is common
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


def run_large(n_events: int, seed: int, cache: Path, pure: bool) -> tuple[int, float, int, str]:
    """large_replay in a subprocess of the current tree, compiled or MEMLAB_PURE_PYTHON=1."""
    build_data(n_events, seed, cache)
    proc = subprocess.run([sys.executable, __file__, "--large-worker", str(n_events), "--seed", str(seed)],
                          env=_env(ROOT, pure), capture_output=True, text=True, check=True)
    n, secs, peak, kind = json.loads(proc.stdout.strip().splitlines()[-1])
    return n, secs, peak, kind


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small streams, one round (a smoke run, about 20 s)")
    ap.add_argument("--events", type=int, default=1_000_000, help="events of the large replay")
    ap.add_argument("--hot-events", type=int, default=200_000, help="events of the hot-path / replay-loop streams")
    ap.add_argument("--baseline", default=BASELINE_REV, help="git revision measured as the baseline")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per tree (best is kept)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--large-worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        out = worker(args.worker, args.rounds)
        out["kinds"] = loaded_kinds()
        print(json.dumps(out))
        return 0
    cache = Path(tempfile.gettempdir()) / "memlab-bench"
    if args.large_worker is not None:
        print(json.dumps([*large_replay(args.large_worker, args.seed, cache), loaded_kinds()]))
        return 0
    set_quick(args.quick)
    if args.quick:
        args.events, args.hot_events, args.rounds = 100_000, 30_000, 1
    cache.mkdir(exist_ok=True)
    data = build_data(args.hot_events, args.seed, cache)
    with tempfile.TemporaryDirectory(prefix="memlab-baseline-") as tmp:
        base_tree = export_baseline(args.baseline, Path(tmp))
        trees = (("baseline", base_tree, False), ("pure", ROOT, True), ("compiled", ROOT, False))
        acc: dict[str, dict[str, Any]] = {label: {} for label, _, _ in trees}
        kinds: dict[str, str] = {}
        for _ in range(args.rounds):  # alternate, one round each, so all three see the same load
            for label, tree, pure in trees:
                if tree is None:
                    continue
                measured = run_worker(tree, data, 1, pure)
                measured.pop("toolkit")
                kinds[label] = measured.pop("kinds", "python")
                for name, (secs, n, digest) in measured.items():
                    old = acc[label].get(name)
                    acc[label][name] = (min(secs, old[0]) if old else secs, n, digest)
    base, pure_r, cur = acc["baseline"], acc["pure"], acc["compiled"]
    print(f"Python {sys.version.split()[0]}; CPU time, best of {args.rounds} alternating rounds; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; simulated")
    print(f"baseline = toolkit at {args.baseline} (pre-issue, pure Python); pure = this tree with "
          f"MEMLAB_PURE_PYTHON=1 (ran: {kinds.get('pure')}); compiled = this tree as installed (ran: "
          f"{kinds.get('compiled')}); same streams, same run")
    print(f"{'benchmark':52s} {'n':>8s} {'compiled/s':>11s} {'pure/s':>10s} {'baseline/s':>10s} "
          f"{'comp/base':>9s} {'pure/base':>9s} {'comp/pure':>9s}  same")
    failed = kinds.get("compiled") != "compiled" or kinds.get("pure") != "python"
    hot_ratios = []
    for name, (secs, n, digest) in cur.items():
        b, p = base.get(name), pure_r[name]
        same = digest == p[2] and (b is None or b[2] == digest)
        failed |= not same
        cb = f"{b[0] / secs:8.2f}x" if b else "      - "
        pb = f"{b[0] / p[0]:8.2f}x" if b else "      - "
        if b and name.startswith("hot path"):
            hot_ratios.append(b[0] / secs)
        print(f"{name:52s} {n:8,d} {n / secs:11,.0f} {n / p[0]:10,.0f} {(n / b[0]) if b else 0:10,.0f} "
              f"{cb} {pb} {p[0] / secs:8.2f}x  {'yes' if same else 'NO'}")
    large = {}
    for label, pure in (("pure", True), ("compiled", False)):
        n_ev, secs, peak, kind = run_large(args.events, args.seed, cache, pure)
        large[label] = (n_ev, secs, peak)
        print(f"large replay ({label}, ran {kind}): replay_events of a {n_ev:,}-event synthetic trace (cuda, recorded "
              f"conf): {n_ev / secs:,.0f} events/s (CPU), tracemalloc peak {peak / n_ev:.0f} B/event "
              f"({peak / MiB:.0f} MiB)")
    n_ev, secs, peak = large["compiled"]
    print(f"large replay compiled / pure: {large['pure'][1] / secs:.2f}x")
    if hot_ratios:
        check("hot path, compiled vs pre-issue tree (worst row)", min(hot_ratios), 2.0, "x", fmt=".2f")
    check("large replay, compiled (events/s)", n_ev / secs, 1_000_000, "events/s", fmt=",.0f")
    check("large replay memory (B/event)", peak / n_ev, 64, "B/event", higher_is_better=False, fmt=".0f")
    if failed:
        print("FAIL: results differ between the trees, or a tree did not run the copy it should", file=sys.stderr)
        return 1
    return finish()



if __name__ == "__main__":
    raise SystemExit(main())

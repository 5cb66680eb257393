"""Parallel sweeps as a ratio to the serial sweep measured in the same run (wall clock; simulated).

    .venv/bin/python benchmarks/bench_sweep.py [--quick] [--workers 2] [--photos 160]

Rows:
  replay sweep     every recording in shared/data/traces x 6 confs (sweep_replays): SerialExecutor, then a
                   ProcessPoolExecutor with --workers processes; results must be equal
  seed scenario    seed_scenario(--photos, the 4 seed confs): serial (executor=None), then one conf per
                   task on the process pool; runs must be equal (request timings aside)

The ratio is serial wall time / parallel wall time; its ceiling is the number of free cores (this
project's machine has 2, shared), minus process start-up and pickling.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from toolkit.engines.scenarios import SEED_CONFS, seed_scenario
from toolkit.replay.sweep import SerialExecutor, sweep_replays

TRACES = Path(os.environ.get("MEMLAB_TRACES", Path(__file__).resolve().parents[2] / "shared/data/traces"))
# Six confs: since the compiled twin a replay takes a tenth of a second, and three confs left the sweep shorter than
# the process pool's start-up (1.2x at best on 2 cores).
CONFS = (None, "expandable_segments:True", "max_split_size_mb:64", "max_split_size_mb:256",
         "garbage_collection_threshold:0.6", "roundup_power2_divisions:4")


def timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two recordings x two confs, 6 photos (a smoke run)")
    ap.add_argument("--workers", type=int, default=2, help="processes of the parallel run")
    ap.add_argument("--photos", type=int, default=160)
    args = ap.parse_args()
    paths = sorted(TRACES.glob("*.pickle"))
    confs = CONFS
    if args.quick:
        paths, confs, args.photos = paths[:2], CONFS[:2], 6
    print(f"{os.cpu_count()} local cores; parallel = ProcessPoolExecutor({args.workers}); wall clock; simulated")
    print(f"{'sweep':58s} {'tasks':>5s} {'serial s':>9s} {'parallel s':>10s} {'ratio':>6s}  same")
    failed = False
    if paths:
        t_serial, serial = timed(lambda: sweep_replays(paths, confs, executor=SerialExecutor(), progress=False))
        with ProcessPoolExecutor(args.workers) as pool:
            t_par, par = timed(lambda: sweep_replays(paths, confs, executor=pool, progress=False))
        same = par == serial
        failed |= not same
        print(f"{f'replay sweep: {len(paths)} recordings x {len(confs)} confs':58s} {len(serial):5d} "
              f"{t_serial:9.2f} {t_par:10.2f} {t_serial / t_par:5.2f}x  {'yes' if same else 'NO'}")
    else:
        print(f"(no recordings in {TRACES}: replay sweep skipped)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        seed_scenario(args.photos, SEED_CONFS[:1], out_dir=Path(tmp) / "warm")  # photos written once, not timed
        for sub in ("serial", "parallel"):  # both reuse the same photo set
            (Path(tmp) / sub).mkdir()
            os.symlink(Path(tmp) / "warm" / "photos", Path(tmp) / sub / "photos")
        t_serial, serial_res = timed(lambda: seed_scenario(args.photos, out_dir=Path(tmp) / "serial"))
        with ProcessPoolExecutor(args.workers) as pool:
            t_par, par_res = timed(lambda: seed_scenario(args.photos, out_dir=Path(tmp) / "parallel", executor=pool))

    def untimed(res):  # type: ignore[no-untyped-def]
        return {name: [dataclasses.replace(s, started_at_ns=0, duration_ns=0) for s in run.samples]
                for name, run in res.runs.items()}

    same = untimed(par_res) == untimed(serial_res)
    failed |= not same
    print(f"{f'seed scenario: {args.photos} photos x {len(SEED_CONFS)} confs':58s} {len(SEED_CONFS):5d} "
          f"{t_serial:9.2f} {t_par:10.2f} {t_serial / t_par:5.2f}x  {'yes' if same else 'NO'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

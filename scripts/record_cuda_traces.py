"""Record allocator traces on a real CUDA GPU for the simulator's fidelity tests.

    python scripts/record_cuda_traces.py --out ../shared/data/traces [--pattern NAME ...] [--conf CONF ...]

Each (pattern, conf) pair runs in a fresh Python process, because the caching allocator reads its conf
once, at the first CUDA allocation of the process. The child sets ``PYTORCH_CUDA_ALLOC_CONF`` before
importing torch, runs a seeded allocation pattern with memory history recording on, and writes
``<pattern>__<conf>.pickle`` (``torch.cuda.memory._dump_snapshot``) plus a ``.json`` sidecar (torch
version, GPU, capacity, free memory at start, conf). ``tests/test_fidelity.py`` replays every pickle it
finds under its recorded conf and requires an exact match.

Needs a CUDA build of torch and a GPU; without one it says so and exits with status 2. Written without
a GPU at hand (no trace recorded with it yet); the patterns use only public torch APIs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

PATTERNS = ("churn", "streams", "empty_cache", "retry")
CONFS = ("", "expandable_segments:True", "max_split_size_mb:128", "roundup_power2_divisions:4",
         "garbage_collection_threshold:0.6")
MiB = 1 << 20
RETRY_FRACTION = 0.05  # not in the snapshot: the sidecar carries it so a replay can apply it


def slug(conf: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", conf).strip("-") or "default"


def sizes(rng: random.Random) -> int:
    """Small tensors, 1-10 MiB activations and larger buffers, like a transformer step."""
    r = rng.random()
    if r < 0.45:
        return rng.randrange(1, MiB)
    if r < 0.9:
        return rng.randrange(MiB, 10 * MiB)
    return rng.randrange(10 * MiB, 96 * MiB)


def run_pattern(pattern: str, seed: int, steps: int) -> None:
    """A seeded allocation pattern, run while the child records memory history."""
    import torch

    rng = random.Random(seed)
    live: list[torch.Tensor] = []
    side = torch.cuda.Stream() if pattern == "streams" else None
    if pattern == "retry":  # a tight budget so that release-and-retry (and GC) really happen
        torch.cuda.set_per_process_memory_fraction(RETRY_FRACTION)
    for step in range(steps):
        if live and rng.random() < 0.45:
            x = live.pop(rng.randrange(len(live)))
            if side is not None and rng.random() < 0.3:
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    x.add_(1)  # used on the side stream: its free waits for an event there
                x.record_stream(side)
            del x
        else:
            try:
                live.append(torch.empty(sizes(rng), dtype=torch.uint8, device="cuda"))
            except torch.OutOfMemoryError:
                live.clear()  # the OOM is in the trace; free everything and go on
        if pattern == "empty_cache" and step % 500 == 499:
            torch.cuda.empty_cache()
    torch.cuda.synchronize()


def child(pattern: str, conf: str, out: Path, seed: int, steps: int) -> None:
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: run this on a GPU host with a CUDA build of torch", file=sys.stderr)
        sys.exit(2)
    free_at_start, total = torch.cuda.mem_get_info()
    torch.cuda.memory._record_memory_history(max_entries=1_000_000)
    run_pattern(pattern, seed, steps)
    stem = out / f"{pattern}__{slug(conf)}"
    torch.cuda.memory._dump_snapshot(str(stem) + ".pickle")
    torch.cuda.memory._record_memory_history(enabled=None)
    meta = {
        "pattern": pattern, "conf": conf, "seed": seed, "steps": steps,
        "torch_version": torch.__version__.split("+")[0], "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(), "total_bytes": total, "free_bytes_at_start": free_at_start,
        "memory_fraction": RETRY_FRACTION if pattern == "retry" else None,
        "recorded_by": "scripts/record_cuda_traces.py",
    }
    Path(str(stem) + ".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {stem}.pickle")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("traces"))
    parser.add_argument("--pattern", action="append", choices=PATTERNS, help="default: all")
    parser.add_argument("--conf", action="append", help="PYTORCH_CUDA_ALLOC_CONF value; default: a standard set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--child", nargs=2, metavar=("PATTERN", "CONF"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.child:
        child(args.child[0], args.child[1], args.out, args.seed, args.steps)
        return
    failures = 0
    for pattern in args.pattern or PATTERNS:
        for conf in args.conf if args.conf is not None else CONFS:
            env = {**os.environ, "PYTORCH_CUDA_ALLOC_CONF": conf}
            cmd = [sys.executable, __file__, "--out", str(args.out), "--seed", str(args.seed),
                   "--steps", str(args.steps), "--child", pattern, conf]
            code = subprocess.run(cmd, env=env, check=False).returncode
            if code == 2:
                sys.exit(2)  # no GPU: nothing else will work either
            if code:
                failures += 1
                print(f"FAILED: pattern={pattern} conf={conf!r} (exit {code})", file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

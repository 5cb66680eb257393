#!/usr/bin/env python3
"""Does the Ascend driver keep memory torch_npu frees? A few-minute check, with the simulator's prediction.

Each check allocates tensors, frees them, calls ``torch.npu.empty_cache()`` and compares device used
(``torch.npu.mem_get_info``) with the baseline and with ``memory_reserved()``. Below torch_npu, devmm
(hicann/driver ``src/ascend_hal/svm/v2/devmm/``) keeps freed chunks of <= 36 MiB mapped in per-heap caches;
the repository's model of it (``toolkit.sim.ascend``, docs/ascend-memory-stack.md) predicts how much:

* ``20mib``: 100 x 20 MiB, all freed. The cache is shrunk past min(2T, T + 128 MiB) down to just above
  T = 36 MiB, and idle heaps are destroyed: a few tens of MiB stay (not the whole 2 GiB).
* ``20mib-interleaved``: 100 x 20 MiB, every other one kept alive. Live chunks raise T (devmm_get_cache_thres)
  and keep their heaps: nearly all freed bytes stay mapped, used stays high while reserved drops.
* ``600mib``: 5 x 600 MiB (above 512 MiB: own heaps, no cache): used returns to the baseline.
* ``20mib-expandable``: the first check with ``expandable_segments:True`` (physical handles, no cache).

Run on an Ascend host (each check in a fresh process, since the conf is read at start-up)::

    python vllm_ascend/probe_driver_cache.py            # real checks + predictions
    python vllm_ascend/probe_driver_cache.py --sim-only # predictions only (anywhere)

Afterwards a failed allocation's plog shows the driver's ``Cached_size`` (svm_mem_statistics.c).
A plain script in a folder that must never become a package (see README.md there).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class Check:
    name: str
    conf: str
    tensor_bytes: int
    count: int
    keep_every: int  # keep every k-th tensor alive (0: free all)
    note_prediction: str  # what docs/../shared note section 5 predicts


CHECKS = (
    Check("20mib", "", 20 * MiB, 100, 0, "used stays high (driver cache) while reserved is 0"),
    Check("20mib-interleaved", "", 20 * MiB, 100, 2, "(not in the note)"),
    Check("600mib", "", 600 * MiB, 5, 0, "used returns to baseline (base heap, uncached)"),
    Check("20mib-expandable", "expandable_segments:True", 20 * MiB, 100, 0, "used returns to baseline"),
)


def simulate(check: Check) -> dict[str, int]:
    """[simulated] The same steps on ``SimDevice('npu')`` with the driver layer (64 GiB device)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from toolkit.sim import SimDevice

    dev = SimDevice("npu", check.conf, capacity_bytes=64 * GiB)
    base = dev.device_used_bytes
    kept = []
    addrs = [dev.malloc(check.tensor_bytes) for _ in range(check.count)]
    for i, a in enumerate(addrs):
        if check.keep_every and i % check.keep_every == 0:
            kept.append(a)
        else:
            dev.free(a)
    dev.empty_cache()
    return dict(extra_used=dev.device_used_bytes - base, reserved=dev.memory_reserved(),
                driver_cached=dev.driver_cached_bytes, kept=len(kept) * check.tensor_bytes)


def child(name: str) -> None:
    """The real check, in this process (PYTORCH_NPU_ALLOC_CONF already set by the parent)."""
    import torch
    import torch_npu  # noqa: F401

    check = next(c for c in CHECKS if c.name == name)
    torch.npu.init()
    torch.npu.synchronize()
    free0, _total = torch.npu.mem_get_info()
    ts = [torch.empty(check.tensor_bytes, dtype=torch.uint8, device="npu") for _ in range(check.count)]
    kept = [t for i, t in enumerate(ts) if check.keep_every and i % check.keep_every == 0]
    del ts
    torch.npu.synchronize()
    torch.npu.empty_cache()
    free1, _ = torch.npu.mem_get_info()
    print(json.dumps(dict(extra_used=free0 - free1, reserved=torch.npu.memory_reserved(),
                          kept=sum(t.numel() for t in kept))))


def verdict(check: Check, m: dict[str, int]) -> str:
    """Device used beyond the baseline that torch does not reserve: what the driver (or anything else) keeps."""
    not_torch = m["extra_used"] - m["reserved"]
    return f"{not_torch / MiB:.0f} MiB used but not reserved by torch after empty_cache"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sim-only", action="store_true", help="print the simulator's predictions only")
    ap.add_argument("--check", choices=[c.name for c in CHECKS], action="append")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child)
        return 0
    real = not a.sim_only
    if real:
        try:
            import torch_npu  # noqa: F401
        except Exception as exc:  # noqa: BLE001  (not an Ascend host: any import failure)
            print(f"torch_npu is not importable ({type(exc).__name__}): showing the simulator's predictions only")
            real = False
    for check in CHECKS:
        if a.check and check.name not in a.check:
            continue
        sim = simulate(check)
        print(f"== {check.name} (conf {check.conf or 'default'}; {check.count} x {check.tensor_bytes // MiB} MiB, "
              f"{'keep every ' + str(check.keep_every) if check.keep_every else 'all freed'})")
        print(f"   shared note predicts : {check.note_prediction}")
        print(f"   [simulated] predicts : {verdict(check, sim)} (driver cache {sim['driver_cached'] / MiB:.0f} MiB, "
              f"reserved {sim['reserved'] / MiB:.0f} MiB)")
        if real:
            env = dict(os.environ, PYTORCH_NPU_ALLOC_CONF=check.conf)
            out = subprocess.run([sys.executable, __file__, "--child", check.name], env=env, capture_output=True,
                                 text=True, check=False)
            if out.returncode != 0:
                print(f"   measured             : failed ({out.stderr.strip().splitlines()[-1:]})")
                continue
            m = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"   measured             : {verdict(check, m)} (reserved {m['reserved'] / MiB:.0f} MiB)")
            diff = (m["extra_used"] - sim["extra_used"]) / MiB
            print(f"   measured - simulated : {diff:+.0f} MiB of device used")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

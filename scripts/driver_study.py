"""[simulated] The seed scenario with the Ascend driver layer: per-conf table, sensitivity sweeps, speed.

What it prints (everything simulated, from ``toolkit.sim`` with ``toolkit.sim.ascend`` below the
allocator; no constant tuned):

1. the seed scenario (Qwen3-VL-8B, TP 2, 64 GiB, gpu_memory_utilization 0.95, seeded photo set) under
   default, expandable_segments:True, page_size:1g, max_split_size_mb:256 and
   garbage_collection_threshold:0.8 (fraction 1.0): peak reserved, peak non-torch, peak driver cache,
   retries, OOM at request (rank 0; ranks are symmetric);
2. a sweep of gpu_memory_utilization and of the image-size mix: where each conf first runs out of memory;
3. simulated 12 MP requests per second with the driver layer.

Usage: ``python scripts/driver_study.py [--photos 300] [--sweep-photos 120] [--requests 200] [--out DIR]
[--csv FILE]`` (``--quick``: fewer photos and points).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from toolkit.engines.sim import SimEngine
from toolkit.core.records import Run
from toolkit.workload.photos import generate_photo_set
from toolkit.engines.scenarios import SEED_DEVICE_BYTES, SEED_ENGINE_ARGS, SEED_MODEL, ScenarioConf
from toolkit.core.units import format_bytes

STUDY_CONFS: tuple[ScenarioConf, ...] = (
    ScenarioConf(""),
    ScenarioConf("expandable_segments:True"),
    ScenarioConf("page_size:1g"),
    ScenarioConf("max_split_size_mb:256"),
    ScenarioConf("garbage_collection_threshold:0.8", memory_fraction=1.0),
)
# image-size mixes (width, height) cycled over the requests; each file is a distinct image
MIXES: dict[str, list[tuple[int, int]]] = {
    "small (VGA..HD)": [(640, 480), (1280, 720), (1024, 768), (1920, 1080)],
    "mixed (VGA..12 MP)": [(640, 480), (4032, 3024), (1920, 1080), (3024, 4032), (1280, 720), (2560, 1440)],
    "all 12 MP": [(4032, 3024), (3024, 4032)],
}


def conf_row(sc: ScenarioConf, run: Run) -> dict[str, Any]:
    """Peak reserved / non-torch / driver cache, retries and the OOM request of rank 0."""
    r0 = run.samples_of_rank(0)
    return dict(conf=sc.name, served=run.requests_served, sent=len(r0),
                oom_at=next((s.request_index for s in r0 if s.status == "oom"), None),
                peak_reserved=max((s.reserved_bytes for s in r0), default=0),
                peak_non_torch=max((s.non_torch_bytes for s in r0), default=0),
                first_non_torch=r0[0].non_torch_bytes if r0 else 0,
                peak_driver_cache=max((s.driver_cached_bytes for s in r0), default=0),
                retries=r0[-1].alloc_retries if r0 else 0)


def print_rows(rows: list[dict[str, Any]], title: str) -> None:
    print(f"[simulated] {title}")
    print(f"  {'conf':42s} {'served':>9s} {'OOM at':>6s} {'peak reserved':>13s} {'non-torch first':>15s} "
          f"{'peak non-torch':>14s} {'peak drv cache':>14s} {'retries':>7s}")
    for r in rows:
        print(f"  {r['conf']:42s} {r['served']:>4d}/{r['sent']:<4d} {str(r['oom_at'] if r['oom_at'] is not None else '-'):>6s} "
              f"{format_bytes(r['peak_reserved']):>13s} {format_bytes(r['first_non_torch']):>15s} "
              f"{format_bytes(r['peak_non_torch']):>14s} {format_bytes(r['peak_driver_cache']):>14s} {r['retries']:>7d}")


def mix_photos(out: Path, mix: str, n: int) -> list[Path]:
    sizes = MIXES[mix]
    folder = out / ("mix_" + "".join(c if c.isalnum() else "_" for c in mix))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        p = folder / f"{i:04d}_{w}x{h}.jpg"
        if not p.exists():
            Image.new("RGB", (w, h), (i % 256, (i // 256) % 256, 120)).save(p, "JPEG", quality=50)
        paths.append(p)
    return paths


def run_conf(sc: ScenarioConf, photos: list[Path], **kwargs: Any) -> Run | str:
    args = dict(SEED_ENGINE_ARGS, device_capacity_bytes=SEED_DEVICE_BYTES, platform="npu")
    args.update(kwargs)
    try:
        eng = SimEngine(SEED_MODEL, conf=sc.conf, memory_fraction=sc.memory_fraction, **args)
    except Exception as exc:  # noqa: BLE001  (the engine's start-up failure, shown as one line)
        return "start failed: " + ("KV cache OOM" if "KV cache" in str(exc) else str(exc)[:60])
    return eng.run_images(photos, max_tokens=1024, progress=False, name=sc.name)


def sweep(out: Path, n: int, utils: list[float], csv_rows: list[dict[str, Any]], seed_photos: list[Path]) -> None:
    print("[simulated] sensitivity: first OOM request (or '-': none in the run) / total retries / peak driver cache")
    sets = {"seed photo set": seed_photos, **{mix: mix_photos(out, mix, n) for mix in MIXES}}
    for mix, photos in sets.items():
        print(f"  image mix {mix!r}, {len(photos)} requests")
        print("    " + f"{'conf':42s}" + "".join(f"{'util ' + format(u, 'g'):>26s}" for u in utils))
        for sc in STUDY_CONFS:
            cells = []
            for u in utils:
                run = run_conf(sc, photos, gpu_memory_utilization=u)
                if isinstance(run, str):
                    cells.append(run[:24])
                    csv_rows.append(dict(mix=mix, util=u, conf=sc.name, error=run))
                    continue
                r = conf_row(sc, run)
                csv_rows.append(dict(mix=mix, util=u, **r))
                cells.append(f"{'-' if r['oom_at'] is None else r['oom_at']}/{r['retries']}/{format_bytes(r['peak_driver_cache'])}")
            print("    " + f"{sc.name:42s}" + "".join(f"{c:>26s}" for c in cells))


def svg_figure(path: Path, series: dict[str, list[tuple[int, int, int]]]) -> None:
    """A dependency-free SVG: non-torch per request (solid) and its driver-cache part (dotted), per run."""
    w, h, m = 900, 420, 60
    n = max((len(v) for v in series.values()), default=1)
    top = max((nt for v in series.values() for _, nt, _ in v), default=1) * 1.1
    colors = ["#d62728", "#1f77b4", "#ff7f0e", "#2ca02c"]

    def xy(i: int, b: int) -> str:
        return f"{m + (w - 2 * m) * i / max(n - 1, 1):.1f},{h - m - (h - 2 * m) * b / top:.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             f'<text x="{m}" y="20" font-size="14">[simulated] non-torch per request (rank 0), solid; driver cache, dotted</text>',
             f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="black"/>',
             f'<line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>',
             f'<text x="{w // 2}" y="{h - 20}">request index (0..{n - 1})</text>']
    for k in range(5):
        b = top * k / 4
        parts.append(f'<text x="5" y="{h - m - (h - 2 * m) * k / 4 + 4:.1f}">{b / 2**30:.2f} GiB</text>')
    for j, (name, pts) in enumerate(series.items()):
        c = colors[j % len(colors)]
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{" ".join(xy(i, nt) for i, nt, _ in pts)}"/>')
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-dasharray="3,3" points="{" ".join(xy(i, dc) for i, _, dc in pts)}"/>')
        parts.append(f'<text x="{w - m - 330}" y="{m + 16 * j}" fill="{c}">{name}</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts))


def figure(path: Path, photos: list[Path]) -> None:
    series = {}
    for u in (0.95, 0.98):
        for sc in STUDY_CONFS[:2]:
            run = run_conf(sc, photos, gpu_memory_utilization=u)
            if isinstance(run, str):
                continue
            series[f"{sc.name}, util {u}"] = [(s.request_index, s.non_torch_bytes, s.driver_cached_bytes)
                                             for s in run.samples_of_rank(0)]
    svg_figure(path, series)
    print(f"[simulated] figure written: {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=300)
    ap.add_argument("--sweep-photos", type=int, default=120)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--csv", type=Path, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--figure", type=Path, default=None, help="write the non-torch-per-request SVG here")
    ap.add_argument("--figure-only", action="store_true")
    a = ap.parse_args()
    out = a.out or Path(tempfile.mkdtemp(prefix="memlab-driver-"))
    utils = [0.95, 0.975, 0.98, 0.984]  # 0.99 fails vLLM's start-up check (1 GiB context)
    if a.quick:
        a.photos, a.sweep_photos, utils = 60, 40, [0.95, 0.98]
    t0 = time.perf_counter()
    photos = generate_photo_set(out / "photos", a.photos, seed=0)  # the seed scenario's photo set
    if a.figure:
        figure(a.figure, photos)
        if a.figure_only:
            return
    rows = []
    for sc in STUDY_CONFS:
        run = run_conf(sc, photos)
        if isinstance(run, str):
            print(f"  {sc.name}: {run}")
            continue
        rows.append(conf_row(sc, run))
    print_rows(rows, f"seed scenario, {a.photos} photos, gpu_memory_utilization 0.95 ({time.perf_counter() - t0:.1f} s)")
    csv_rows: list[dict[str, Any]] = []
    sweep(out, a.sweep_photos, utils, csv_rows, photos)
    # the speed of 12 MP requests with the driver layer on is benchmarks/bench_scenario.py's first figure
    if a.csv:
        keys = sorted({k for r in csv_rows for k in r})
        with a.csv.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(csv_rows)


if __name__ == "__main__":
    main()

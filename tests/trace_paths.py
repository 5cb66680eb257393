"""Where the real allocator traces live, for every test that needs them.

``$MEMLAB_TRACES`` first, else ``<repo>/../shared/data/traces`` (CI keeps ``shared/`` beside the checkout).
A missing trace skips loudly: those tests prove fidelity to real hardware and must not vanish quietly.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TRACE_NAME = "cuda-transformer-forward-a.pickle"
REPO = Path(__file__).resolve().parents[1]


def traces_dir() -> Path | None:
    env = os.environ.get("MEMLAB_TRACES")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data" / "traces")
    return next((p for p in candidates if (p / TRACE_NAME).is_file()), None)


TRACES = traces_dir()
REAL_TRACE = TRACES / TRACE_NAME if TRACES is not None else REPO.parent / "shared" / "data" / "traces" / TRACE_NAME
needs_real_trace = pytest.mark.skipif(
    TRACES is None,
    reason=f"REAL TRACE MISSING: {TRACE_NAME} not found in $MEMLAB_TRACES or <repo>/../shared/data/traces",
)

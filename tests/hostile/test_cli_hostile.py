"""The real command line on hostile files: exit status 2, one stderr line, promptly (separate processes)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostile_cases import pickle_cases

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["tuple-dag-as-block-state", "memo-long-binput-128M", "colliding-int-keys-30k",
                                  "build-on-allowed-function", "fifo", "dev-zero"])
def test_cli_replay_answers_in_one_line(tmp_path: Path, name: str) -> None:
    if name == "fifo":
        path = tmp_path / "f.pickle"
        os.mkfifo(path)
    elif name == "dev-zero":
        path = Path("/dev/zero")
    else:
        data = dict((n, d) for n, d, _ in pickle_cases(tmp_path, str(tmp_path / "canary")))[name]
        path = tmp_path / f"{name}.pickle"
        path.write_bytes(data)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "toolkit", "replay", str(path)], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=tmp_path)
    took = time.perf_counter() - t0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr[-500:]
    assert len(lines) == 1 and lines[0].startswith("ascend-memlab: error: "), proc.stderr[-500:]
    assert took < 30  # interpreter start + imports on a busy machine; the case itself takes milliseconds

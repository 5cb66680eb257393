"""[simulated] vllm_ascend/probe_driver_cache.py --sim-only runs anywhere and prints the model's predictions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_sim_only_prints_a_prediction_per_check() -> None:
    out = subprocess.run([sys.executable, "vllm_ascend/probe_driver_cache.py", "--sim-only"], cwd=REPO,
                         capture_output=True, text=True, check=True, timeout=120).stdout
    blocks = {b.split(" ", 1)[0]: b for b in out.split("== ")[1:]}
    assert set(blocks) == {"20mib", "20mib-interleaved", "600mib", "20mib-expandable"}
    for b in blocks.values():
        assert "[simulated] predicts" in b and "shared note predicts" in b
    # all freed: the driver's shrink rule leaves (36, 72] MiB cached; interleaved: 50 released 22 MiB
    # segments all stay cached; above 512 MiB and expandable: nothing
    assert "44 MiB used but not reserved" in blocks["20mib"]
    assert "1100 MiB used but not reserved" in blocks["20mib-interleaved"]
    assert "0 MiB used but not reserved" in blocks["600mib"] and "0 MiB used but not reserved" in blocks["20mib-expandable"]

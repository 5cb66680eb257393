"""Recorder cost per request and the hand-vs-recorded comparison table (docs/recorded-programs.md).

    python benchmarks/bench_recorder.py [--recordings out/recordings] [--write-doc]

Reads the recordings ``scripts/record_programs.py`` wrote (recording is opt-in: it needs the CPU-engine
interpreter and takes minutes). Prints per recording the recorder's wall time per phase, and the
comparison per preset, image and phase; ``--write-doc`` replaces the generated section of
docs/recorded-programs.md. All allocator figures are simulated (``toolkit.sim.SimDevice("npu")``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from toolkit.workload.recorded.compare import compare_recording, markdown_table  # noqa: E402
from toolkit.workload.recorded.format import load_recording  # noqa: E402

BEGIN, END = "<!-- bench_recorder:begin -->", "<!-- bench_recorder:end -->"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recordings", type=Path, default=ROOT / "out" / "recordings")
    ap.add_argument("--write-doc", action="store_true")
    ap.add_argument("--quick", action="store_true", help="the test suite's smoke: same work, nothing judged")
    a = ap.parse_args(argv)
    files = sorted(a.recordings.glob("*.json.gz"))
    if not files:  # recording is opt-in (make record): nothing to measure is not a failure of make bench
        print(f"(no recordings in {a.recordings}: run `make record` first; nothing to measure)")
        return 0
    timing = ["| recording | visual tokens | phases (s) | request total (s) |", "|---|---|---|---|"]
    comps = []
    t0 = time.perf_counter()
    for f in files:
        rec = load_recording(f)
        phases = ", ".join(f"{p.name} {p.seconds:.2f}" for p in rec.phases)
        timing.append(f"| {rec.key} | {rec.meta.get('visual_tokens')} | {phases} | {rec.meta.get('seconds', 0):.1f} |")
        comps += compare_recording(rec, phases=[p.name for p in rec.phases if p.name != "weights"])
    compare_s = time.perf_counter() - t0
    out = ("### Recorder cost per request (CPU, 2 shared cores; compute elided)\n\n" + "\n".join(timing)
           + f"\n\nComparison of {len(comps)} phases (two simulated replays each): {compare_s:.1f}s.\n\n"
           "### Hand-written vs recorded (TP 1; simulated NPU, fresh device per phase)\n\n" + markdown_table(comps))
    print(out)
    if a.write_doc:
        doc = ROOT / "docs" / "recorded-programs.md"
        text = doc.read_text()
        i, j = text.index(BEGIN) + len(BEGIN), text.index(END)
        doc.write_text(text[:i] + "\n" + out + "\n" + text[j:])
        print(f"wrote {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

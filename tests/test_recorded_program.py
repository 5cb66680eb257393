"""Recorded allocation programs: format, snapshot export, comparison, SimEngine source, and a real recording.

The real recording (vLLM's Qwen3-VL classes at Qwen3-VL-2B widths, 6 vision blocks, 2 text layers, one
448x448 image) runs under the CPU-engine interpreter in a subprocess (``MEMLAB_VLLM_PYTHON`` or
``.venv-vllm``) and is skipped without it; the storage recorder itself is tested on plain torch.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from toolkit.core.errors import EngineError
from toolkit.replay import replay
from toolkit.snapshot import load_snapshot
from toolkit.workload.engine_args import EngineArgs
from toolkit.workload.images import image_grid
from toolkit.workload.presets import load_preset
from toolkit.workload.program import OP_ALLOC, OP_FREE, Program, decode_program, encoder_program
from toolkit.workload.recorded import Recording, RecordedPhase, StorageEvent, load_recording, save_recording
from toolkit.workload.recorded.compare import compare_programs, compare_recording, simulate
from toolkit.workload.recorded.format import FLAG_KERNEL, RecordingError
from toolkit.workload.recorded.snapshot import write_recording_snapshot

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = Path(os.environ.get("MEMLAB_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))
KiB = 1024


def _phase_from_program(prog: Program, name: str) -> RecordedPhase:
    """A recording that is exactly a hand-written program (sids = slots)."""
    events = []
    for op, slot, n in prog.ops:
        if op == OP_ALLOC:
            events.append(StorageEvent("alloc", slot, n, "bfloat16", (n // 2,), "aten.x", prog.labels[slot]))
        elif op == OP_FREE:
            events.append(StorageEvent("free", slot))
    return RecordedPhase(name, tuple(events), tuple(prog.kept))


def _hand_recording(model: str, w: int, h: int) -> Recording:
    p = load_preset(model)
    r = EngineArgs().resolved(p, "npu")
    grid = image_grid(w, h, p.processor)
    phases = (_phase_from_program(encoder_program(p, r, [grid]), "encoder"),
              _phase_from_program(decode_program(p, r, 1), "decode"))
    return Recording(p.name, (w, h), (grid.grid_t, grid.grid_h, grid.grid_w), phases,
                     {"max_num_batched_tokens": 8192, "prefill_tokens": 0})


def test_recording_round_trips_and_drops_cpu_kernel_temporaries(tmp_path: Path) -> None:
    ev = (StorageEvent("alloc", 0, 4 * KiB, "float32", (1024,), "aten.mm.default", "m.qkv"),
          StorageEvent("alloc", 1, 8 * KiB, "float32", (2048,), "aten.mul.Tensor", "m.rope", flag=FLAG_KERNEL),
          StorageEvent("free", 1), StorageEvent("alloc", 2, 2 * KiB, "float32", (512,), "aten.cat", "m.rope"),
          StorageEvent("free", 0))
    rec = Recording("qwen3-vl-2b-instruct", (448, 448), (1, 28, 28), (RecordedPhase("encoder", ev, (2,)),))
    back = load_recording(save_recording(rec, tmp_path / "r.json.gz"))
    assert back == rec
    neutral, cpu = back.phase("encoder").to_program(), back.phase("encoder").to_program(cpu_specific=True)
    assert (neutral.n_allocs, cpu.n_allocs) == (2, 3)
    assert neutral.requested_peak_bytes() == 6 * KiB and cpu.requested_peak_bytes() == 12 * KiB
    assert neutral.kept_bytes() == 2 * KiB  # the storage never freed is the phase's output
    with pytest.raises(RecordingError, match="not a recorded program"):
        (tmp_path / "x.json").write_text("{}")
        load_recording(tmp_path / "x.json")


def test_snapshot_of_a_recording_opens_and_replays_like_the_program(tmp_path: Path) -> None:
    rec = _hand_recording("Qwen/Qwen3-VL-2B-Instruct", 1920, 1080)
    path = write_recording_snapshot(rec, tmp_path / "rec.pickle", phases=("encoder",))
    snap = load_snapshot(path)
    trace = snap["device_traces"][0]
    prog = rec.phase("encoder").to_program()
    assert sum(e["action"] == "alloc" for e in trace) == prog.n_allocs
    assert trace[0]["frames"][0]["name"].startswith("aten.x")
    for conf in ("", "expandable_segments:True"):
        r = replay(path, platform="npu", conf=conf)
        assert int(r.timeline["reserved_bytes"].max()) == simulate(prog, conf).peak_reserved_bytes


def test_comparison_finds_a_missing_temporary() -> None:
    hand = Program("p", ((OP_ALLOC, 0, 4 * 2**20), (OP_FREE, 0, 0)), ("a",))
    rec = Program("p", ((OP_ALLOC, 0, 4 * 2**20), (OP_ALLOC, 1, 6 * 2**20), (OP_FREE, 1, 0), (OP_FREE, 0, 0)),
                  ("a", "b"))
    c = compare_programs(hand, rec, confs=("",))
    assert (c.hand_allocs, c.recorded_allocs) == (1, 2)
    assert (c.hand_peak_bytes, c.recorded_peak_bytes) == (4 * 2**20, 10 * 2**20)
    assert c.unmatched_bytes == 6 * 2**20 and c.top_differences[0] == (6 * 2**20, 0, 1)
    h, r = c.sim[""]
    # requests between 1 and 10 MiB share one 20 MiB segment (kLargeBuffer): the extra temporary fits
    assert h.peak_reserved_bytes == r.peak_reserved_bytes == 20 * 2**20
    assert h.segments_created == r.segments_created == 1


def test_sim_engine_recorded_programs_equal_to_the_hand_ones_give_the_same_memory(tmp_path: Path) -> None:
    from toolkit.engines.sim import SimEngine
    from PIL import Image

    rec = _hand_recording("Qwen/Qwen3-VL-2B-Instruct", 640, 480)
    save_recording(rec, tmp_path / "recs" / f"{rec.key}.json.gz")
    img = tmp_path / "a.png"
    Image.new("RGB", (640, 480)).save(img)
    kw = dict(model="Qwen/Qwen3-VL-2B-Instruct", max_model_len=4096, max_num_batched_tokens=2048)
    hand = SimEngine(**kw).generate(image=img, max_tokens=3)
    recd = SimEngine(**kw, program="recorded", recordings=tmp_path / "recs").generate(image=img, max_tokens=3)
    assert hand.samples[0].reserved_bytes == recd.samples[0].reserved_bytes
    assert hand.samples[0].allocated_peak_bytes == recd.samples[0].allocated_peak_bytes
    other = tmp_path / "b.png"
    Image.new("RGB", (300, 900)).save(other)
    eng = SimEngine(**kw, program="recorded", recordings=tmp_path / "recs")
    with pytest.raises(EngineError, match="no recording of qwen3-vl-2b-instruct for a"):
        eng.generate(image=other, max_tokens=1)
    with pytest.raises(EngineError, match="does not exist"):
        SimEngine(**kw, program="recorded", recordings=tmp_path / "nowhere")


@pytest.mark.torch
def test_storage_recorder_sees_allocations_frees_and_kernel_temporaries() -> None:
    torch = pytest.importorskip("torch")
    from toolkit.worker.record_program import ELIDE_BYTES, StorageRecorder

    class CustomOp(torch.nn.Module):  # stands for vLLM's per-platform op base class
        def forward(self, x):
            tmp = x * 2  # a temporary of the platform's implementation
            return tmp + 1

    class M(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(512, 1024)
            self.op = CustomOp()

        def forward(self, x):
            y = self.lin(x)
            return self.op(y)

    m = M()
    rec = StorageRecorder()
    rec.attach(m)
    rec.known(list(m.parameters()))
    x = torch.empty(2048, 512)
    rec.known(x)
    phase, out = rec.phase("p", lambda: m(x))
    rec.detach()
    allocs = [e for e in phase.events if e.kind == "alloc"]
    assert [e.module for e in allocs] == ["lin", "op", "op"]
    assert all(e.nbytes == 2048 * 1024 * 4 >= ELIDE_BYTES for e in allocs)  # sizes from meta, compute elided
    assert [e.flag for e in allocs] == ["", "kernel", "kernel_out"]
    frees = [e.sid for e in phase.events if e.kind == "free"]
    assert frees == [allocs[1].sid, allocs[0].sid]  # tmp dies inside the op, y when forward returns
    assert phase.kept == (allocs[2].sid,) and out.shape == (2048, 1024)


def test_real_vllm_recording_matches_the_fixed_hand_model(tmp_path: Path) -> None:
    if not VLLM_PYTHON.exists():
        pytest.skip(f"no CPU-engine interpreter at {VLLM_PYTHON} (scripts/setup_cpu_engine.sh)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTORCH_", "VLLM_"))}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", VLLM_LOGGING_LEVEL="WARNING", PYTHONPATH=str(ROOT))
    proc = subprocess.run([str(VLLM_PYTHON), "-m", "toolkit.worker.record_program", "--preset",
                           "qwen3-vl-2b-instruct", "--vision-depth", "6", "--text-layers", "2", "--image", "448x448",
                           "--max-num-batched-tokens", "2048", "--out", str(tmp_path)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = load_recording(next(tmp_path.glob("*.json.gz")))
    assert rec.grid == (1, 28, 28) and [p.name for p in rec.phases] == ["weights", "encoder", "prefill", "decode"]
    # one storage outlives the encoder phase as its result (host id caches are flagged, not kept)
    assert len(rec.phase("encoder").to_program().kept) == 1
    cmp = {c.phase: c for c in compare_recording(rec)}
    enc, pre = cmp["encoder"], cmp["prefill"]

    def big(prog: Program) -> list[int]:
        return sorted(n for op, _, n in prog.ops if op == OP_ALLOC and n >= 64 * KiB)

    from toolkit.workload.recorded.compare import hand_program

    # the vision tower: every allocation of 64 KiB or more, and the peak, as vLLM's code makes them
    assert big(hand_program(rec, "encoder")) == big(rec.phase("encoder").to_program())
    assert abs(enc.recorded_peak_bytes - enc.hand_peak_bytes) < 64 * KiB
    assert enc.recorded_end_bytes - enc.hand_end_bytes < 64 * KiB  # the encoder output, kept
    for conf, (h, r) in enc.sim.items():
        assert h == r, conf
    # prefill: the same, but for the sampler: the CPU samples with a fused Gumbel-argmax kernel, the hand
    # model keeps the CUDA/NPU path's float32 probabilities and exponential noise (two vocab-wide rows)
    vocab_row = 151936 * 4
    hb, rb = big(hand_program(rec, "prefill")), big(rec.phase("prefill").to_program())
    for _ in range(2):
        hb.remove(vocab_row)
    assert hb == rb
    assert pre.recorded_peak_bytes == pre.hand_peak_bytes
    # a CPU recording has CPU-only temporaries (RMSNorm, rotary, sampler internals): flagged, not replayed
    assert pre.cpu_specific_allocs > 0
    snap = load_snapshot(next(tmp_path.glob("*.snapshot.pickle.gz")))
    assert any(f["filename"].startswith("vllm/model_executor/models/qwen3_vl.py")
               for e in snap["device_traces"][0] for f in e.get("frames", []))

"""Compare a recorded program with the hand-written one, phase by phase, and on the simulated NPU (pure).

Per preset, image and phase: number of allocations, the multiset of sizes (unmatched bytes and the sizes
that differ most), peak live bytes, bytes live at the phase's end, and both programs replayed on
``toolkit.sim.SimDevice`` (default conf and ``expandable_segments:True``): peak reserved and segments
created. The recorded side drops CPU-specific and cached storages (``format.DROPPED``) unless asked not to.
Simulated figures are labelled so wherever they are shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from toolkit.core.vocab import Platform
from toolkit.workload.engine_args import EngineArgs, ResolvedArgs
from toolkit.workload.images import ImageGrid, image_grid
from toolkit.workload.presets import Preset, load_preset
from toolkit.workload.program import (
    OP_ALLOC,
    OP_FREE,
    Program,
    decode_program,
    encoder_program,
    prefill_program,
    weights_program,
)
from toolkit.workload.recorded.format import Recording, RecordingError, size_histogram

CONFS = ("", "expandable_segments:True")


def scaled_preset(preset: Preset, vision_depth: int | None = None, text_layers: int | None = None) -> Preset:
    """The preset with fewer vision blocks / text layers, same widths (the seconds-long test case).

    DeepStack and full-attention block indexes beyond the new depth are dropped. The name gets a
    ``@v<depth>t<layers>`` suffix so its recordings never pass for the full model's.
    """
    v, t = preset.vision, preset.text
    if vision_depth is not None:
        v = replace(v, depth=vision_depth,
                    deepstack_visual_indexes=tuple(i for i in v.deepstack_visual_indexes if i < vision_depth),
                    fullatt_block_indexes=tuple(i for i in v.fullatt_block_indexes if i < vision_depth))
    if text_layers is not None:
        t = replace(t, num_hidden_layers=text_layers)
    if (vision_depth, text_layers) == (None, None):
        return preset
    return replace(preset, name=f"{preset.name}@v{v.depth}t{t.num_hidden_layers}", vision=v, text=t)


def preset_of(rec: Recording) -> Preset:
    """The (possibly scaled) preset a recording was made with."""
    base = load_preset(str(rec.meta.get("preset_base", rec.preset.split("@")[0])))
    return scaled_preset(base, rec.meta.get("vision_depth"), rec.meta.get("text_layers"))


def resolved_args(rec: Recording, platform: str = "npu") -> ResolvedArgs:
    """Engine arguments the recording was made under (TP 1), for the hand-written programs."""
    return EngineArgs(tensor_parallel_size=1, max_num_batched_tokens=int(rec.meta.get("max_num_batched_tokens", 8192)),
                      max_model_len=int(rec.meta.get("max_model_len", 32768))).resolved(preset_of(rec), platform)


def hand_program(rec: Recording, phase: str, platform: str = "npu") -> Program:
    """The hand-written program (``toolkit.workload.program``) for the same preset, image and phase."""
    p, r = preset_of(rec), resolved_args(rec, platform)
    if phase == "weights":
        return weights_program(p, r)
    if rec.image is None:
        raise RecordingError(f"recording {rec.key} has no image")
    grid = image_grid(rec.image[0], rec.image[1], p.processor)
    if phase == "encoder":
        return encoder_program(p, r, [grid])
    if phase == "prefill":
        return prefill_program(p, r, int(rec.meta["prefill_tokens"]), _visual_in_chunk(rec, grid))
    if phase == "decode":
        return decode_program(p, r, 1)
    raise RecordingError(f"no hand-written program for phase {phase!r}")


def _visual_in_chunk(rec: Recording, grid: ImageGrid) -> int:
    start, n = int(rec.meta.get("visual_start", 0)), int(rec.meta["prefill_tokens"])
    return max(0, min(n, start + grid.visual_tokens) - start)


@dataclass(frozen=True, slots=True)
class SimFigures:
    """One program replayed alone on a fresh simulated device (simulated)."""

    peak_reserved_bytes: int
    segments_created: int


def simulate(program: Program, conf: str = "", platform: Platform = "npu") -> SimFigures:
    """Replay ``program`` on a fresh ``SimDevice`` (kept slots stay allocated); simulated figures."""
    from toolkit.sim import SimDevice

    dev = SimDevice(platform, conf)
    addrs = [0] * program.n_slots
    for op, slot, n in program.ops:
        if op == OP_ALLOC:
            addrs[slot] = dev.malloc(n)
        elif op == OP_FREE:
            dev.free(addrs[slot])
        else:
            dev.workspace(n)
    stats = dev.memory_stats()
    return SimFigures(dev.max_memory_reserved(), int(stats.get("segment.all.allocated", 0)))


def _sizes(program: Program) -> list[int]:
    return [n for op, _, n in program.ops if op == OP_ALLOC]


@dataclass(frozen=True, slots=True)
class PhaseComparison:
    preset: str
    image: tuple[int, int] | None
    phase: str
    hand_allocs: int
    recorded_allocs: int
    hand_peak_bytes: int
    recorded_peak_bytes: int
    hand_end_bytes: int
    recorded_end_bytes: int
    unmatched_bytes: int  # bytes of allocations whose size has no partner on the other side (both sides)
    top_differences: tuple[tuple[int, int, int], ...]  # (size, hand count, recorded count), by |diff| * size
    sim: dict[str, tuple[SimFigures, SimFigures]] = field(default_factory=dict)  # conf -> (hand, recorded)
    cpu_specific_allocs: int = 0  # recorded allocations dropped as CPU-specific

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "preset": self.preset, "image": "x".join(map(str, self.image)) if self.image else "",
            "phase": self.phase, "allocs hand": self.hand_allocs, "allocs rec": self.recorded_allocs,
            "peak live hand": self.hand_peak_bytes, "peak live rec": self.recorded_peak_bytes,
            "end live hand": self.hand_end_bytes, "end live rec": self.recorded_end_bytes,
            "unmatched": self.unmatched_bytes}
        for conf, (h, r) in self.sim.items():
            tag = "exp" if "expandable" in conf else "default"
            out[f"sim {tag} reserved hand"] = h.peak_reserved_bytes
            out[f"sim {tag} reserved rec"] = r.peak_reserved_bytes
            out[f"sim {tag} segs hand"] = h.segments_created
            out[f"sim {tag} segs rec"] = r.segments_created
        return out


def compare_programs(hand: Program, rec: Program, *, preset: str = "", image: tuple[int, int] | None = None,
                     phase: str = "", confs: Sequence[str] = CONFS, platform: Platform = "npu", top: int = 5,
                     cpu_specific_allocs: int = 0) -> PhaseComparison:
    hh, rh = size_histogram(_sizes(hand)), size_histogram(_sizes(rec))
    diffs = [(n, hh.get(n, 0), rh.get(n, 0)) for n in set(hh) | set(rh) if hh.get(n, 0) != rh.get(n, 0)]
    diffs.sort(key=lambda d: -abs(d[1] - d[2]) * d[0])
    unmatched = sum(abs(h - r) * n for n, h, r in diffs)
    hp, he = hand.live_bytes()
    rp, re_ = rec.live_bytes()
    sim = {c: (simulate(hand, c, platform), simulate(rec, c, platform)) for c in confs}
    return PhaseComparison(preset, image, phase, hand.n_allocs, rec.n_allocs, hp, rp, he, re_, unmatched,
                           tuple(diffs[:top]), sim, cpu_specific_allocs)


def compare_recording(rec: Recording, *, phases: Sequence[str] | None = None, confs: Sequence[str] = CONFS,
                      platform: Platform = "npu", cpu_specific: bool = False) -> list[PhaseComparison]:
    """One ``PhaseComparison`` per recorded phase (``phases`` to choose), recorded vs hand-written."""
    out = []
    for ph in rec.phases:
        if phases is not None and ph.name not in phases:
            continue
        recorded = ph.to_program(cpu_specific=cpu_specific)
        dropped = len(ph.allocs(cpu_specific=True)) - recorded.n_allocs
        out.append(compare_programs(hand_program(rec, ph.name, platform), recorded, preset=rec.preset,
                                    image=rec.image, phase=ph.name, confs=confs, platform=platform,
                                    cpu_specific_allocs=dropped))
    return out


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def markdown_table(comparisons: Sequence[PhaseComparison]) -> str:
    """The comparison as a Markdown table (MiB; simulated NPU figures labelled)."""
    head = ("| preset | image | phase | allocs hand / rec | peak live MiB hand / rec | end live MiB hand / rec "
            "| unmatched MiB | sim. NPU peak reserved MiB default hand / rec | segments hand / rec "
            "| sim. NPU peak reserved MiB expandable hand / rec |")
    lines = [head, "|" + "---|" * 10]
    for c in comparisons:
        d = c.sim.get("", (SimFigures(0, 0), SimFigures(0, 0)))
        e = c.sim.get("expandable_segments:True", (SimFigures(0, 0), SimFigures(0, 0)))
        img = "x".join(map(str, c.image)) if c.image else ""
        lines.append(
            f"| {c.preset} | {img} | {c.phase} | {c.hand_allocs} / {c.recorded_allocs} "
            f"| {_mib(c.hand_peak_bytes)} / {_mib(c.recorded_peak_bytes)} "
            f"| {_mib(c.hand_end_bytes)} / {_mib(c.recorded_end_bytes)} | {_mib(c.unmatched_bytes)} "
            f"| {_mib(d[0].peak_reserved_bytes)} / {_mib(d[1].peak_reserved_bytes)} "
            f"| {d[0].segments_created} / {d[1].segments_created} "
            f"| {_mib(e[0].peak_reserved_bytes)} / {_mib(e[1].peak_reserved_bytes)} |")
    return "\n".join(lines)

"""The recorded-program format: every tensor storage one phase of vLLM's model code created and freed (pure).

A *recording* is what ``toolkit/worker/record_program.py`` writes after running vLLM's own model classes
on the CPU: per phase (``weights``, ``encoder``, ``prefill``, ``decode``), the storages in the order they
were created and freed, each with its bytes, dtype, shape, the aten op that created it, the module it was
created in and the vLLM source lines on the Python stack. It is plain data (JSON, optionally gzipped) so
the pure layers read it without torch; ``to_program`` turns a phase into the same ``Program`` the
hand-written model (``toolkit.workload.program``) produces, so the simulator replays either one.

CPU-specific storages: an allocation made inside a per-platform op (a vLLM ``CustomOp`` such as
``MMEncoderAttention``, ``ApplyRotaryEmb``, ``RMSNorm``; the text ``Attention`` layer; ``TopKTopPSampler``)
belongs to the implementation the CPU platform selected (``forward_cpu`` / ``forward_native``), not to the
model code: on an NPU vllm-ascend's ``forward_oot`` runs instead and its temporaries differ (or are kernel
workspaces, outside the caching allocator). The recorder flags them ``kernel`` (freed before the op
returned) or ``kernel_out`` (the op's output, which every implementation allocates). ``to_program`` drops
``kernel`` (and ``cached``) events unless ``cpu_specific=True``; see docs/recorded-programs.md.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.core.errors import ToolkitError
from toolkit.workload.program import OP_ALLOC, OP_FREE, Program

FORMAT_VERSION = 1
ALLOC, FREE = "alloc", "free"
# Flags of an allocation (see the module docstring).
FLAG_KERNEL = "kernel"  # made and freed inside a per-platform op: the CPU implementation's temporary
FLAG_KERNEL_OUT = "kernel_out"  # the per-platform op's output (alive after it returned)
FLAG_INPUT = "input"  # an input the model runner moves to the device (pixel values, ids, positions)
# left alive by the phase outside its result, in a module cache (Qwen3-VL's ``_rot_pos_ids_cache`` of host
# position ids, ``_cached_tensor``): made once per shape, not per request, so not part of a request's program
FLAG_CACHED = "cached"
DROPPED = (FLAG_KERNEL, FLAG_CACHED)


class RecordingError(ToolkitError, ValueError):
    """A recording file is missing, malformed or from an unknown format version."""


@dataclass(frozen=True, slots=True)
class Frame:
    filename: str  # relative to site-packages, e.g. "vllm/model_executor/models/qwen3_vl.py"
    line: int
    name: str


@dataclass(frozen=True, slots=True)
class StorageEvent:
    """One storage created (``alloc``) or released (``free``). ``sid`` names the storage within the phase."""

    kind: str
    sid: int
    nbytes: int = 0
    dtype: str = ""
    shape: tuple[int, ...] = ()
    op: str = ""  # aten/custom op whose output it is, e.g. "aten.mm.default"
    module: str = ""  # qualified name of the innermost module running, e.g. "visual.blocks.0.attn.qkv"
    frames: tuple[Frame, ...] = ()  # vLLM source lines, innermost first
    flag: str = ""


@dataclass(frozen=True, slots=True)
class RecordedPhase:
    """One phase. Storages allocated and not freed are ``kept`` (weights, the encoder output) or, if the
    phase ended while they were still referenced by the driver, the phase's outputs."""

    name: str
    events: tuple[StorageEvent, ...]
    kept: tuple[int, ...] = ()
    seconds: float = 0.0  # wall time of the recorded call

    def allocs(self, cpu_specific: bool = True) -> list[StorageEvent]:
        return [e for e in self.events if e.kind == ALLOC and (cpu_specific or e.flag not in DROPPED)]

    def to_program(self, cpu_specific: bool = False) -> Program:
        """The phase as a simulator ``Program`` (slots in allocation order); ``cpu_specific=False`` drops
        the storages that live and die inside a per-platform op and those left in module caches (see the
        module docstring)."""
        slots: dict[int, int] = {}
        ops: list[tuple[int, int, int]] = []
        labels: list[str] = []
        for e in self.events:
            if e.kind == ALLOC:
                if e.nbytes == 0 or (not cpu_specific and e.flag in DROPPED):
                    continue
                slots[e.sid] = len(labels)
                labels.append(f"{e.module}:{e.op}" if e.module else e.op)
                ops.append((OP_ALLOC, slots[e.sid], e.nbytes))
            elif e.sid in slots:
                ops.append((OP_FREE, slots[e.sid], 0))
        freed = {e.sid for e in self.events if e.kind == FREE}
        kept = tuple(slots[s] for s in slots if s not in freed)
        return Program(self.name, tuple(ops), tuple(labels), kept)


@dataclass(frozen=True, slots=True)
class Recording:
    """All phases of one request recorded for one preset and image grid (TP 1, the CPU platform)."""

    preset: str  # preset file stem
    image: tuple[int, int] | None  # (width, height) of the original image, None for text only
    grid: tuple[int, int, int] | None  # (t, h, w) patch grid
    phases: tuple[RecordedPhase, ...]
    meta: dict[str, Any] = field(default_factory=dict)  # versions, dtype, tokens, recorder settings

    def phase(self, name: str) -> RecordedPhase:
        for p in self.phases:
            if p.name == name:
                return p
        raise KeyError(f"recording has no phase {name!r} (has {[p.name for p in self.phases]})")

    @property
    def key(self) -> str:
        """File stem: ``<preset>__<t>x<h>x<w>`` (the grid decides the program, not the photo)."""
        g = "text" if self.grid is None else "x".join(map(str, self.grid))
        return f"{self.preset}__{g}"


# -- serialisation -----------------------------------------------------------------------------------


def _event_to_json(e: StorageEvent, frame_ids: dict[Frame, int]) -> list[Any]:
    if e.kind == FREE:
        return [FREE, e.sid]
    return [ALLOC, e.sid, e.nbytes, e.dtype, list(e.shape), e.op, e.module,
            [frame_ids.setdefault(f, len(frame_ids)) for f in e.frames], e.flag]


def recording_to_json(rec: Recording) -> dict[str, Any]:
    frame_ids: dict[Frame, int] = {}
    phases = [{"name": p.name, "kept": list(p.kept), "seconds": p.seconds,
               "events": [_event_to_json(e, frame_ids) for e in p.events]} for p in rec.phases]
    return {"format": "memlab-recorded-program", "version": FORMAT_VERSION, "preset": rec.preset,
            "image": list(rec.image) if rec.image else None, "grid": list(rec.grid) if rec.grid else None,
            "meta": rec.meta, "frames": [[f.filename, f.line, f.name] for f in frame_ids],
            "phases": phases}


def recording_from_json(raw: Any, source: str = "recording") -> Recording:
    if not isinstance(raw, dict) or raw.get("format") != "memlab-recorded-program":
        raise RecordingError(f"{source}: not a recorded program (no 'format: memlab-recorded-program')")
    if raw.get("version") != FORMAT_VERSION:
        raise RecordingError(f"{source}: format version {raw.get('version')!r}, this toolkit reads {FORMAT_VERSION}")
    try:
        frames = [Frame(str(f), int(line), str(n)) for f, line, n in raw["frames"]]
        phases = []
        for p in raw["phases"]:
            events = []
            for ev in p["events"]:
                if ev[0] == FREE:
                    events.append(StorageEvent(FREE, int(ev[1])))
                else:
                    _, sid, n, dt, shape, op, mod, fr, flag = ev
                    events.append(StorageEvent(ALLOC, int(sid), int(n), dt, tuple(shape), op, mod,
                                               tuple(frames[i] for i in fr), flag))
            phases.append(RecordedPhase(p["name"], tuple(events), tuple(p["kept"]), float(p.get("seconds", 0))))
        return Recording(raw["preset"], tuple(raw["image"]) if raw["image"] else None,
                         tuple(raw["grid"]) if raw["grid"] else None, tuple(phases), dict(raw.get("meta", {})))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise RecordingError(f"{source}: malformed recorded program ({exc!r})") from None


def save_recording(rec: Recording, path: str | os.PathLike[str]) -> Path:
    """Write ``<path>`` as JSON (gzip-compressed when it ends in ``.gz``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(recording_to_json(rec), separators=(",", ":")).encode()
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_bytes(gzip.compress(data, 6) if p.name.endswith(".gz") else data)
    tmp.replace(p)
    return p


def load_recording(path: str | os.PathLike[str]) -> Recording:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise RecordingError(f"cannot read recording {p}: {exc.strerror or exc}") from None
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    try:
        raw = json.loads(data)
    except ValueError:
        raise RecordingError(f"{p}: not JSON: not a recorded program") from None
    return recording_from_json(raw, str(p))


def live_bytes(events: Iterable[StorageEvent]) -> tuple[int, int]:
    """(peak, end) of the sum of live storage bytes over ``events``."""
    sizes: dict[int, int] = {}
    live = peak = 0
    for e in events:
        if e.kind == ALLOC:
            sizes[e.sid] = e.nbytes
            live += e.nbytes
            peak = max(peak, live)
        elif e.sid in sizes:
            live -= sizes.pop(e.sid)
    return peak, live


def size_histogram(sizes: Sequence[int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for n in sizes:
        out[n] = out.get(n, 0) + 1
    return out

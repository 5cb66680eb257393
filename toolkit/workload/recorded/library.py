"""A folder of recordings as a program source for ``SimEngine(program="recorded")`` (pure).

Files are ``<preset>__<t>x<h>x<w>.json.gz`` (``Recording.key``), as ``toolkit/worker/record_program.py``
writes them. Programs are looked up per image grid and cached; CPU-specific storages are dropped
(``RecordedPhase.to_program``).
"""

from __future__ import annotations

import os
from pathlib import Path

from toolkit.workload.images import ImageGrid
from toolkit.workload.program import Program
from toolkit.workload.recorded.format import Recording, RecordingError, load_recording


class RecordedPrograms:
    """Recorded encoder / prefill / decode programs of one preset, from a folder."""

    def __init__(self, folder: str | os.PathLike[str], preset: str) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise RecordingError(f"recordings folder {self.folder} does not exist "
                                 "(record with scripts/record_programs.py)")
        self.preset = preset
        self._files = {p.name.split(".")[0]: p for p in self.folder.glob(f"{preset}__*.json*")}
        if not self._files:
            raise RecordingError(f"no recordings of {preset} in {self.folder} (record with scripts/record_programs.py)")
        self._recs: dict[str, Recording] = {}
        self._programs: dict[tuple[str, str], Program] = {}

    def _recording(self, key: str) -> Recording:
        rec = self._recs.get(key)
        if rec is None:
            rec = self._recs[key] = load_recording(self._files[key])
        return rec

    def _program(self, key: str, phase: str) -> Program:
        prog = self._programs.get((key, phase))
        if prog is None:
            prog = self._programs[(key, phase)] = self._recording(key).phase(phase).to_program()
        return prog

    def grid_key(self, grid: ImageGrid) -> str:
        return f"{self.preset}__{grid.grid_t}x{grid.grid_h}x{grid.grid_w}"

    def encoder(self, grid: ImageGrid) -> Program:
        """The recorded encoder program of this grid; its output slot is labelled ``encoder_output``."""
        key = self.grid_key(grid)
        if key not in self._files:
            raise RecordingError(f"no recording of {self.preset} for a {grid.grid_h}x{grid.grid_w} patch grid "
                                 f"({grid.resized_width_px}x{grid.resized_height_px} px) in {self.folder}")
        prog = self._program(key, "encoder")
        if len(prog.kept) != 1:
            raise RecordingError(f"recording {key}: the encoder phase keeps {len(prog.kept)} storages, expected 1")
        labels = list(prog.labels)
        labels[prog.kept[0]] = "encoder_output"
        return Program(prog.name, prog.ops, tuple(labels), prog.kept)

    def prefill(self, grid: ImageGrid | None, tokens: int) -> Program | None:
        """The recorded prefill of this grid when it ran the same chunk of ``tokens``; else None."""
        if grid is None:
            return None
        key = self.grid_key(grid)
        if key not in self._files:
            return None
        rec = self._recording(key)
        if int(rec.meta.get("prefill_tokens", -1)) != tokens or not any(p.name == "prefill" for p in rec.phases):
            return None
        return self._program(key, "prefill")

    def decode(self) -> Program | None:
        """A recorded decode step (batch 1: the same for every image)."""
        for key in sorted(self._files):
            if any(p.name == "decode" for p in self._recording(key).phases):
                return self._program(key, "decode")
        return None

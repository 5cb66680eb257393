"""Which torch release recorded a CUDA snapshot, read off what the snapshot holds (pure, no torch).

Snapshots do not record the version, but releases added keys and changed formats. The markers, newest
first (each gives the oldest release it is consistent with):

- ``allocator_settings["graph_capture_record_stream_reuse"]``: 2.9 and later (docs/allocator.md §1.4:
  the key is new in 2.9); also the recordings marked "torch 2.9 or later" in shared/data/traces carry
  ``user_metadata`` on trace entries, which the 2.8 one lacks.
- ``allocator_settings`` without that key: 2.2 to 2.8. ``_memory_snapshot_pickled`` writes
  ``allocator_settings`` and a ``time_us`` per trace entry (torch/csrc/cuda/memory_snapshot.cpp,
  pytorch/pytorch 00067369c933, a c10::optional-era tree); ``compile_context`` on entries narrows it
  to the later of these (the 2.8 recording has it). Taken as 2.8: every behaviour the simulator keys
  on a version is the same from 2.2 to 2.8.
- neither ``allocator_settings`` nor ``time_us``: 2.1 or older (the two Maphsge4/select_n recordings;
  their C++ frames still spell ``c10::optional<c10::Device>``, which newer frames spell
  ``std::optional``).

Every rule is checked against the six recordings by tests/test_replay_exact.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class VersionGuess:
    """``version``: the release (major.minor) whose behaviour the replay uses; None: not a CUDA snapshot."""

    version: str | None
    reason: str

    def __str__(self) -> str:
        return f"torch {self.version} (inferred: {self.reason})" if self.version else f"unknown ({self.reason})"


def _entries(snapshot: Mapping[str, Any], limit: int = 64) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for trace in snapshot.get("device_traces") or ():
        out.extend(e for e in trace[:limit] if isinstance(e, Mapping))
    return out


def infer_torch_version(snapshot: Mapping[str, Any]) -> VersionGuess:
    """The torch release a CUDA snapshot was recorded with, and the evidence (see the module docstring)."""
    if snapshot.get("platform", "cuda") != "cuda":
        return VersionGuess(None, "not a CUDA snapshot")
    settings = snapshot.get("allocator_settings")
    entries = _entries(snapshot)
    if isinstance(settings, Mapping) and "graph_capture_record_stream_reuse" in settings:
        return VersionGuess("2.9", "allocator_settings has graph_capture_record_stream_reuse (new in 2.9)")
    if isinstance(settings, Mapping) and settings:
        extra = ", trace entries with compile_context" if any("compile_context" in e for e in entries) else ""
        return VersionGuess("2.8", f"allocator_settings without graph_capture_record_stream_reuse (2.2-2.8){extra}")
    if entries and not any("time_us" in e for e in entries):
        return VersionGuess("2.1", "no allocator_settings and no time_us on trace entries (2.1 or older)")
    return VersionGuess(None, "no allocator_settings and no trace to judge by")

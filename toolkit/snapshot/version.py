"""Which torch release recorded a snapshot, read off what the snapshot holds (pure, no torch).

Snapshots do not record the version, but each release added keys and changed formats; the rules
(newest first) and the torch change behind each are in ``VERSION_MARKERS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class VersionGuess:
    """``version``: the oldest release consistent with the evidence (None: not a CUDA snapshot)."""

    version: str | None
    reason: str

    def __str__(self) -> str:
        return f"torch {self.version} ({self.reason})" if self.version else f"unknown ({self.reason})"


def infer_torch_version(snapshot: Mapping[str, Any]) -> VersionGuess:
    """The torch release (major.minor) a CUDA snapshot was recorded with, and the evidence."""
    if snapshot.get("flavor", "cuda") != "cuda":
        return VersionGuess(None, "not a CUDA snapshot")
    settings = snapshot.get("allocator_settings")
    if isinstance(settings, Mapping) and "graph_capture_record_stream_reuse" in settings:
        return VersionGuess("2.9", "allocator_settings has graph_capture_record_stream_reuse")
    if isinstance(settings, Mapping) and settings:
        return VersionGuess("2.8", "allocator_settings without graph_capture_record_stream_reuse")
    return VersionGuess("2.1", "no allocator_settings")

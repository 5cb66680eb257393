"""Allocation programs recorded from vLLM's own model code (pure: format, snapshot export, comparison).

The recorder itself (torch, vLLM) is ``toolkit/worker/record_program.py``; see ``docs/recorded-programs.md``.
"""

from toolkit.workload.recorded.format import (
    Recording,
    RecordedPhase,
    RecordingError,
    StorageEvent,
    load_recording,
    save_recording,
)
from toolkit.workload.recorded.snapshot import recording_to_snapshot, write_recording_snapshot

__all__ = ["Recording", "RecordedPhase", "RecordingError", "StorageEvent", "load_recording", "save_recording",
           "recording_to_snapshot", "write_recording_snapshot"]

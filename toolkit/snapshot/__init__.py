"""Allocator snapshots: safe loading, torch's schema, and the allocator state they imply (pure).

``load_snapshot`` reads ``torch.cuda.memory._dump_snapshot`` / torch_npu pickles (and JSON) without
executing anything; ``normalize_snapshot`` unifies CUDA, older CUDA and torch_npu layouts;
``initial_state`` rebuilds the state at the first trace event so a recorded trace can be replayed;
``final_state`` and ``trace_events`` give the end state and the events in compact form;
``write_snapshot`` writes torch's layout back (memory_viz opens it); ``summarize`` totals it up.
Never imports torch.
"""

from __future__ import annotations

import toolkit._compiled  # noqa: F401  (first: chooses the compiled or the .py copy of the hot modules)

from toolkit.snapshot.normalize import denormalize_snapshot, is_normalized, normalize_snapshot
from toolkit.snapshot._rounding import RoundingRules
from toolkit.snapshot.schema import (
    Block,
    BlockState,
    Platform,
    Frame,
    Pool,
    Segment,
    SegmentType,
    Snapshot,
    SnapshotError,
    TraceAction,
    TraceEntry,
)
from toolkit.snapshot._state import (
    InferredBlock,
    Reconstruction,
    SeedBlock,
    SegmentSeed,
    TraceEvent,
    final_state,
    initial_state,
    reconstruct_initial_state,
    trace_events,
)
from toolkit.snapshot._storage import load_snapshot, write_snapshot
from toolkit.snapshot._summary import summarize

__all__ = [
    "Block",
    "BlockState",
    "Platform",
    "Frame",
    "InferredBlock",
    "Pool",
    "Reconstruction",
    "RoundingRules",
    "SeedBlock",
    "Segment",
    "SegmentSeed",
    "SegmentType",
    "Snapshot",
    "SnapshotError",
    "TraceAction",
    "TraceEntry",
    "TraceEvent",
    "denormalize_snapshot",
    "final_state",
    "initial_state",
    "is_normalized",
    "load_snapshot",
    "normalize_snapshot",
    "reconstruct_initial_state",
    "summarize",
    "trace_events",
    "write_snapshot",
]

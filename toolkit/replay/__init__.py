"""Replay a recorded allocator snapshot through the simulated device, under its own conf or another.

Pure: never imports torch. ``replay()`` gives a per-event timeline; ``replay_steps()`` turns one pass into a
``Run`` plus allocator states for the inspector.
"""

from __future__ import annotations

import toolkit._compiled  # noqa: F401  (first: chooses the compiled or the .py copy of the hot modules)

from toolkit.replay._fidelity import Fidelity
from toolkit.replay._replayer import (
    TIMELINE_COLUMNS,
    RecordedSegmentAddresses,
    ReplayDivergenceError,
    ReplayResult,
    guess_torch_version,
    recorded_conf,
    replay,
    replay_events,
    replay_steps,
)
from toolkit.replay.sweep import sweep_replays

__all__ = [
    "Fidelity",
    "TIMELINE_COLUMNS",
    "RecordedSegmentAddresses",
    "ReplayDivergenceError",
    "ReplayResult",
    "guess_torch_version",
    "recorded_conf",
    "replay",
    "replay_events",
    "replay_steps",
    "sweep_replays",
]

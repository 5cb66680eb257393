"""Simulated caching allocators (CUDA and Ascend NPU), written in plain Python: ``SimDevice`` and its errors.

The hot modules are also compiled from the same files by Cython when the install can (toolkit/_compiled.py).

Everything here is simulated and labelled so (``snapshot()["simulated"] is True``). Importing this
package never imports torch.
"""

from __future__ import annotations

import toolkit._compiled  # noqa: F401  (first: chooses the compiled or the .py copy of the hot modules)

from toolkit.sim.device import DEFAULT_CAPACITY_BYTES, DEFAULT_CONTEXT_BYTES, SimDevice
from toolkit.sim.oom import OomReport, SimOutOfMemoryError

__all__ = ["DEFAULT_CAPACITY_BYTES", "DEFAULT_CONTEXT_BYTES", "OomReport", "SimDevice", "SimOutOfMemoryError"]

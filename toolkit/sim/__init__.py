"""Simulated caching allocators (CUDA and Ascend NPU), pure Python: ``SimDevice`` and its errors.

Everything here is simulated and labelled so (``snapshot()["simulated"] is True``). Importing this
package never imports torch.
"""

from __future__ import annotations

from toolkit.sim.device import DEFAULT_CAPACITY_BYTES, DEFAULT_CONTEXT_BYTES, SimDevice
from toolkit.sim.oom import OomReport, SimOutOfMemoryError

__all__ = ["DEFAULT_CAPACITY_BYTES", "DEFAULT_CONTEXT_BYTES", "OomReport", "SimDevice", "SimOutOfMemoryError"]

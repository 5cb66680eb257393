"""The Ascend memory stack below torch_npu: runtime (``runtime``), driver devmm heaps (``devmm``) and the
fixed non-torch consumers (``consumers``). Pure Python, simulated; rules cite their upstream source lines
(docs/ascend-memory-stack.md lists them)."""

from __future__ import annotations

from toolkit.sim.ascend.devmm import Devmm, DriverOutOfMemory, HeapStats, PhysicalMemory
from toolkit.sim.ascend.runtime import AscendRuntime

__all__ = ["AscendRuntime", "Devmm", "DriverOutOfMemory", "HeapStats", "PhysicalMemory"]

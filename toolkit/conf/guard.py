"""Is it too late to change the allocator conf in *this* process?

The caching allocators of PyTorch (CUDA) and torch_npu parse their conf string once, when the device
allocator is first initialised (docs/allocator.md §1.2; torch_npu's own test_large_segment_size.py says
re-setting the variable "won't trigger re-parsing since the allocator is already initialized"). After that,
writing ``PYTORCH_NPU_ALLOC_CONF`` only affects processes started later (vLLM's EngineCore and workers in
the default multiprocess mode), never an engine running inside this kernel.

Detection must not import torch itself (that alone can be the first step towards initialising a device),
so it only looks at modules that are already in ``sys.modules``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any


@dataclass(frozen=True, slots=True)
class AllocatorState:
    """What this process has already done to its device allocators."""

    torch_imported: bool
    torch_npu_imported: bool
    cuda_initialized: bool
    npu_initialized: bool

    @property
    def initialized_platforms(self) -> tuple[str, ...]:
        return tuple(p for p, on in (("npu", self.npu_initialized), ("cuda", self.cuda_initialized)) if on)


def _call_bool(module: ModuleType | None, *path: str) -> bool:
    """Call ``module.a.b()`` if it exists; any failure counts as "not initialised"."""
    obj: Any = module
    for part in path:
        obj = getattr(obj, part, None)
        if obj is None:
            return False
    try:
        return bool(obj())
    except Exception:  # a half-imported or broken build must not break the check
        return False


def inspect_allocators(modules: Mapping[str, ModuleType] | None = None) -> AllocatorState:
    """Report which device allocators this process has initialised, without importing anything.

    ``torch.cuda.is_initialized()`` and ``torch_npu.npu.is_initialized()`` only read a flag; they do
    not initialise the device.
    """
    mods = sys.modules if modules is None else modules
    torch = mods.get("torch")
    torch_npu = mods.get("torch_npu")
    return AllocatorState(
        torch_imported=torch is not None,
        torch_npu_imported=torch_npu is not None,
        cuda_initialized=_call_bool(torch, "cuda", "is_initialized"),
        npu_initialized=_call_bool(torch_npu, "npu", "is_initialized")
        or _call_bool(torch, "npu", "is_initialized"),
    )


def engine_runs_in_process(environ: Mapping[str, str]) -> bool:
    """vLLM V1 runs the engine in this process only with ``VLLM_ENABLE_V1_MULTIPROCESSING=0``."""
    return environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1").strip() == "0"


def too_late_message(platform: str, in_process: bool) -> str:
    """The one-line explanation shown when the conf can no longer reach an allocator."""
    device = "torch.npu" if platform == "npu" else "torch.cuda"
    if in_process:
        return (
            f"{device} is already initialised in this kernel, and VLLM_ENABLE_V1_MULTIPROCESSING=0 runs the "
            "engine here: its allocator read the conf at its first allocation and will not re-read it. "
            "Restart the kernel and set the conf before anything touches the device, or unset "
            "VLLM_ENABLE_V1_MULTIPROCESSING so the engine runs in its own process."
        )
    return (
        f"{device} is already initialised in this kernel: the new conf does not apply to this kernel's own "
        "allocator, only to engine processes started from now on (vLLM's default multiprocess mode)."
    )

"""Out-of-memory errors with the real CUDA and NPU message texts (docs/allocator.md §2.14).

Sources: ``DeviceCachingAllocator::malloc`` in ``c10/cuda/CUDACachingAllocator.cpp`` (2.8–2.10 template)
and in torch_npu ``NPUCachingAllocator.cpp`` (master text: no space before "If");
``NpuWorkspaceAllocator::malloc`` in ``NPUWorkspaceAllocator.cpp`` for the workspace variant.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.core.units import format_size


class SimOutOfMemoryError(RuntimeError):
    """Raised by the simulated device like ``torch.OutOfMemoryError``; carries the numbers of the message."""

    def __init__(self, message: str, report: OomReport) -> None:
        super().__init__(message)
        self.report = report
        # the numbers as attributes too: err.alloc_bytes, err.device_free_bytes, ...
        for name in OomReport.__dataclass_fields__:
            setattr(self, name, getattr(report, name))


@dataclass(frozen=True, slots=True)
class OomReport:
    """The numbers behind an OOM message (bytes are ints)."""

    platform: str
    device: int
    requested_bytes: int  # what the caller asked for
    rounded_bytes: int  # block size after rounding (the trace ``oom`` entry's size)
    alloc_bytes: int  # device allocation that failed ("Tried to allocate")
    total_bytes: int
    device_free_bytes: int
    allowed_bytes: int | None  # per-process fraction limit, when set
    allocated_bytes: int
    active_bytes: int
    reserved_bytes: int
    process_bytes: int  # memory this process holds on the device (reserved + workspace + context)
    source: str = "caching_allocator"  # or "workspace_allocator"


def cuda_oom_message(r: OomReport, conf_var: str = "PYTORCH_CUDA_ALLOC_CONF") -> str:
    """``CUDA out of memory. Tried to allocate ...`` (no private pools in the simulator).

    ``proc_info`` lists only this process (NVML's "Including non-PyTorch memory" line).
    """
    allowed = f"{format_size(r.allowed_bytes)} allowed; " if r.allowed_bytes is not None else ""
    proc = f"Including non-PyTorch memory, this process has {format_size(r.process_bytes)} memory in use. "
    return (
        f"CUDA out of memory. Tried to allocate {format_size(r.alloc_bytes)}. GPU {r.device} has a total "
        f"capacity of {format_size(r.total_bytes)} of which {format_size(r.device_free_bytes)} is free. "
        f"{proc}{allowed}Of the allocated memory {format_size(r.allocated_bytes)} is allocated by PyTorch, "
        f"and {format_size(r.reserved_bytes - r.allocated_bytes)} is reserved by PyTorch but unallocated. "
        f"If reserved but unallocated memory is large try setting {conf_var}=expandable_segments:True to "
        "avoid fragmentation.  See documentation for Memory Management  "
        "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
    )


def npu_oom_message(r: OomReport) -> str:
    """``NPU out of memory. Tried to allocate ...`` (torch_npu master text)."""
    allowed = f"{format_size(r.allowed_bytes)} allowed; " if r.allowed_bytes is not None else ""
    return (
        f"NPU out of memory. Tried to allocate {format_size(r.alloc_bytes)} (NPU {r.device}; "
        f"{format_size(r.total_bytes)} total capacity; {format_size(r.allocated_bytes)} already allocated; "
        f"{format_size(r.active_bytes)} current active; {format_size(r.device_free_bytes)} free; "
        f"{allowed}{format_size(r.reserved_bytes)} reserved in total by PyTorch)."
        "If reserved memory is >> allocated memory try setting max_split_size_mb to avoid fragmentation."
    )


def npu_workspace_oom_message(r: OomReport) -> str:
    """The NPU workspace allocator's own OOM text (note: no space before "(NPU", as upstream)."""
    return (
        f"NPU out of memory. NPUWorkspaceAllocator tried to allocate {format_size(r.requested_bytes)}"
        f"(NPU {r.device}; {format_size(r.total_bytes)} total capacity; "
        f"{format_size(r.device_free_bytes)} free)"
    )

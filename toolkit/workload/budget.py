"""vLLM's KV-cache budgeting (docs/allocator.md §6), as pure arithmetic on measured snapshots.

The engine measures the device the way vLLM's ``MemorySnapshot`` does at three points (engine creation,
before and after the profiling pass) and this module turns those numbers into the KV-cache size, with
the formula vllm-ascend's ``NPUWorker.determine_available_memory`` uses (the older vLLM one)::

    requested            = total * gpu_memory_utilization                 (init_device)
    torch_peak_increase  = allocated_bytes.all.peak during profile_run - allocated at profile start
    non_torch_increase   = non_torch(after profile, after empty_cache) - non_torch(at engine creation)
    non_kv_cache_memory  = non_torch_increase + torch_peak_increase + weights_memory
    available_kv_cache   = requested - non_kv_cache_memory
    num_blocks           = available_kv_cache // page_size // num_layers     (kv_cache_utils.get_num_blocks)

``non_torch = (total - free) - memory_reserved``. Consequences the model reproduces: the activation
headroom left for serving is the profiling peak plus ``(1 - gpu_memory_utilization) * total``; memory
allocated between engine creation and the profiling pass that is neither weights nor non-torch (the model
runner's persistent buffers) is in no term, so it eats into that headroom.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.core.errors import ToolkitError
from toolkit.core.units import GiB


class KvCacheBudgetError(ToolkitError, RuntimeError):
    """vLLM would refuse to start: no room for the KV cache one max-length sequence needs."""


@dataclass(frozen=True, slots=True)
class DeviceSnapshot:
    """vLLM's ``MemorySnapshot`` fields (bytes)."""

    total_bytes: int
    free_bytes: int
    reserved_bytes: int  # memory_reserved()
    allocated_bytes: int  # allocated_bytes.all.current
    allocated_peak_bytes: int  # allocated_bytes.all.peak

    @property
    def used_bytes(self) -> int:
        return self.total_bytes - self.free_bytes

    @property
    def non_torch_bytes(self) -> int:
        return self.used_bytes - self.reserved_bytes


@dataclass(frozen=True, slots=True)
class KvBudget:
    """The outcome of the profiling pass, as vLLM logs it."""

    total_bytes: int
    requested_bytes: int
    weights_bytes: int
    torch_peak_increase_bytes: int
    non_torch_increase_bytes: int
    available_kv_cache_bytes: int
    page_bytes: int  # one block of one layer
    num_layers: int
    num_blocks: int
    block_size: int

    @property
    def non_kv_cache_bytes(self) -> int:
        return self.non_torch_increase_bytes + self.torch_peak_increase_bytes + self.weights_bytes

    @property
    def kv_cache_bytes(self) -> int:
        return self.num_blocks * self.page_bytes * self.num_layers

    @property
    def kv_cache_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def summary(self) -> str:
        """vllm-ascend's startup log line, in GiB."""
        g = lambda n: f"{n / GiB:.2f}"  # noqa: E731
        return (f"Available KV cache memory: {g(self.available_kv_cache_bytes)} GiB ({self.num_blocks} blocks, "
                f"{self.kv_cache_tokens} tokens); weights {g(self.weights_bytes)} GiB, peak activation "
                f"{g(self.torch_peak_increase_bytes)} GiB, non-torch {g(self.non_torch_increase_bytes)} GiB")


def kv_budget(*, init: DeviceSnapshot, before_profile: DeviceSnapshot, profile_peak_allocated_bytes: int,
              after_profile: DeviceSnapshot, weights_bytes: int, gpu_memory_utilization: float,
              page_bytes: int, num_layers: int, block_size: int, max_model_len: int) -> KvBudget:
    """KV-cache size from the three snapshots (see the module docstring for the formula)."""
    requested = int(init.total_bytes * gpu_memory_utilization)
    torch_peak_increase = profile_peak_allocated_bytes - before_profile.allocated_peak_bytes
    non_torch_increase = after_profile.non_torch_bytes - init.non_torch_bytes
    available = requested - (non_torch_increase + torch_peak_increase + weights_bytes)
    num_blocks = max(0, available // page_bytes // num_layers)
    blocks_needed = -(-max_model_len // block_size)
    if num_blocks < blocks_needed:
        need = blocks_needed * page_bytes * num_layers
        raise KvCacheBudgetError(
            f"To serve at least one request with the model's max seq len ({max_model_len}), "
            f"{need / GiB:.2f} GiB KV cache is needed, which is larger than the available KV cache memory "
            f"({max(available, 0) / GiB:.2f} GiB). Try increasing gpu_memory_utilization or decreasing "
            f"max_model_len when initializing the engine.")
    return KvBudget(total_bytes=init.total_bytes, requested_bytes=requested, weights_bytes=weights_bytes,
                    torch_peak_increase_bytes=torch_peak_increase, non_torch_increase_bytes=non_torch_increase,
                    available_kv_cache_bytes=available, page_bytes=page_bytes, num_layers=num_layers,
                    num_blocks=num_blocks, block_size=block_size)

"""memory_stats(): torch's key names, sorted, and its arithmetic (docs/allocator.md §4)."""

from __future__ import annotations

from toolkit.sim import SimDevice

MiB = 1 << 20
POOL_METRICS = ["active", "active_bytes", "allocated_bytes", "allocation", "inactive_split",
                "inactive_split_bytes", "requested_bytes", "reserved_bytes", "segment"]
# Module.cpp memoryStats: 9 pool statistics x {all, small_pool, large_pool} x 4 fields, 2 device-level
# statistics x 4 fields, and 6 scalars; torch.cuda.memory_stats flattens with "." and sorts.
EXPECTED_CUDA_KEYS = sorted(
    [f"{m}.{p}.{f}" for m in POOL_METRICS for p in ("all", "small_pool", "large_pool")
     for f in ("current", "peak", "allocated", "freed")]
    + [f"{m}.{f}" for m in ("oversize_allocations", "oversize_segments")
       for f in ("current", "peak", "allocated", "freed")]
    + ["num_alloc_retries", "num_ooms", "num_sync_all_streams", "num_device_alloc", "num_device_free",
       "max_split_size"]
)


def test_memory_stats_keys_are_torchs_sorted() -> None:
    cuda = SimDevice("cuda", "", context_bytes=0)
    keys = list(cuda.memory_stats())
    assert keys == EXPECTED_CUDA_KEYS and len(keys) == 122
    assert "allocated_bytes.all.current" in keys and "allocated.all.current" not in keys
    npu = list(SimDevice("npu", "", context_bytes=0).memory_stats())
    assert npu == sorted(EXPECTED_CUDA_KEYS + ["num_oom_rejections"])
    assert cuda.memory_stats()["max_split_size"] == -1  # SIZE_MAX cast to int64


def test_stat_arithmetic_current_peak_allocated_freed() -> None:
    dev = SimDevice("cuda", "", context_bytes=0, torch_version="2.7")
    a = dev.malloc(3 * MiB)
    b = dev.malloc(1000)
    dev.free(a)
    st = dev.memory_stats()
    assert st["allocated_bytes.large_pool.current"] == 0
    assert st["allocated_bytes.large_pool.peak"] == 3 * MiB
    assert st["allocated_bytes.large_pool.allocated"] == 3 * MiB
    assert st["allocated_bytes.large_pool.freed"] == 3 * MiB
    assert st["allocated_bytes.small_pool.current"] == 1024
    assert st["allocated_bytes.all.current"] == 1024 and st["allocated_bytes.all.peak"] == 3 * MiB + 1024
    assert st["requested_bytes.all.peak"] == 3 * MiB + 1000
    assert st["allocation.all.allocated"] == 2 and st["allocation.all.freed"] == 1
    assert st["segment.all.current"] == 2 and st["reserved_bytes.all.current"] == 22 * MiB
    assert st["num_device_alloc"] == 2 and st["num_device_free"] == 0
    assert (dev.memory_allocated(), dev.max_memory_allocated()) == (1024, 3 * MiB + 1024)
    assert (dev.memory_reserved(), dev.max_memory_reserved()) == (22 * MiB, 22 * MiB)
    dev.reset_peak_memory_stats()
    assert dev.max_memory_allocated() == 1024
    assert dev.memory_stats()["allocated_bytes.large_pool.peak"] == 0
    dev.reset_accumulated_memory_stats()
    st = dev.memory_stats()
    assert st["allocated_bytes.all.allocated"] == 0 and st["allocated_bytes.all.freed"] == 0
    assert st["allocated_bytes.all.current"] == 1024 and st["num_device_alloc"] == 0
    dev.free(b)
    st = dev.memory_stats()
    assert st["allocated_bytes.all.freed"] == 1024 and st["allocated_bytes.all.allocated"] == 0


def test_all_peak_is_the_peak_of_the_sum() -> None:
    """all.peak is not small.peak + large.peak: the pools peak at different times."""
    dev = SimDevice("cuda", "", context_bytes=0)
    a = dev.malloc(4 * MiB)
    dev.free(a)
    b = dev.malloc(1000)
    st = dev.memory_stats()
    assert st["allocated_bytes.all.peak"] == 4 * MiB
    assert st["allocated_bytes.small_pool.peak"] + st["allocated_bytes.large_pool.peak"] == 4 * MiB + 1024
    assert b


def test_mem_get_info_and_non_torch_memory() -> None:
    dev = SimDevice("npu", "", capacity_bytes=64 << 30, context_bytes=MiB * 700, external_bytes=MiB * 300)
    dev.malloc(5 * MiB)
    free, total = dev.mem_get_info()
    assert total == 64 << 30
    assert total - free == 20 * MiB + 700 * MiB + 300 * MiB
    assert dev.non_torch_bytes() == 1000 * MiB  # vLLM's "non-torch" = (total - free) - reserved
    dev.external_bytes = 0
    assert dev.non_torch_bytes() == 700 * MiB

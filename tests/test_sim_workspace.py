"""The NPU workspace allocator and the device-level memory the simulator adds (context, other processes)."""

from __future__ import annotations

import pytest

from toolkit.sim import SimDevice, SimOutOfMemoryError

MiB, GiB = 1 << 20, 1 << 30


def test_workspace_grows_per_stream_and_stays_outside_torch_stats() -> None:
    # the workspace allocator's own accounting; with the driver layer the replaced 4 MiB block would stay
    # in devmm's cache (tests/test_sim_ascend_driver.py covers that)
    dev = SimDevice("npu", "", capacity_bytes=8 * GiB, context_bytes=GiB, driver=False)
    first = dev.workspace(3 * MiB)
    assert dev.workspace_bytes == 4 * MiB  # (3 MiB + 32 B) rounded up to 2 MiB
    assert dev.workspace(MiB) == first  # a smaller request reuses the block
    dev.workspace(10 * MiB)  # a bigger one replaces it
    assert dev.workspace_bytes == 12 * MiB
    dev.workspace(2 * MiB - 32, stream=1)  # exactly 2 MiB with the pad
    assert dev.workspace_bytes == 14 * MiB
    assert dev.memory_reserved() == 0 and dev.memory_stats()["reserved_bytes.all.peak"] == 0
    free, total = dev.mem_get_info()
    assert total - free == GiB + 14 * MiB
    assert dev.non_torch_bytes() == GiB + 14 * MiB  # context + workspace: vLLM's "non-torch" memory


def test_empty_cache_releases_the_workspace() -> None:
    dev = SimDevice("npu", "", context_bytes=0)
    dev.workspace(100 * MiB)
    dev.empty_cache()
    assert dev.workspace_bytes == 0


def test_caching_allocator_retry_empties_the_workspace() -> None:
    dev = SimDevice("npu", "", capacity_bytes=200 * MiB, context_bytes=0)
    dev.workspace(100 * MiB)  # 102 MiB
    dev.malloc(90 * MiB)  # 92 MiB segment: 194 MiB used
    dev.malloc(50 * MiB)  # needs 52: the last-resort retry frees the workspace first
    assert dev.workspace_bytes == 0
    assert dev.memory_stats()["num_alloc_retries"] == 1


def test_workspace_oom_message() -> None:
    dev = SimDevice("npu", "", capacity_bytes=200 * MiB, context_bytes=0)
    dev.malloc(150 * MiB)
    with pytest.raises(SimOutOfMemoryError) as err:
        dev.workspace(100 * MiB)
    assert str(err.value) == (
        "NPU out of memory. NPUWorkspaceAllocator tried to allocate 100.00 MiB(NPU 0; 200.00 MiB total "
        "capacity; 48.00 MiB free)"
    )
    assert err.value.source == "workspace_allocator"


def test_workspace_is_npu_only() -> None:
    with pytest.raises(ValueError, match="NPU only"):
        SimDevice("cuda", "").workspace(MiB)


def test_context_and_external_memory_shrink_what_the_allocator_can_get() -> None:
    dev = SimDevice("cuda", "", capacity_bytes=GiB, context_bytes=500 * MiB, external_bytes=400 * MiB)
    dev.malloc(100 * MiB)
    with pytest.raises(SimOutOfMemoryError, match="of which 24.00 MiB is free"):
        dev.malloc(30 * MiB)
    dev.external_bytes = 0  # the other process exited
    dev.malloc(30 * MiB)
    with pytest.raises(ValueError):
        SimDevice("cuda", "", capacity_bytes=0)

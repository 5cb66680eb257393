"""Giving memory back: release-and-retry, oversize release, GC, empty_cache, OOM (docs/allocator.md §2.10-2.14)."""

from __future__ import annotations

import pytest

from toolkit.sim import SimDevice, SimOutOfMemoryError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def actions(dev: SimDevice) -> list[tuple[str, int]]:
    return [(e["action"], e["size"]) for e in dev.snapshot()["device_traces"][0]]


def test_release_cached_blocks_and_retry_counts_a_retry() -> None:
    dev = SimDevice("cuda", "", capacity_bytes=100 * MiB, context_bytes=0, torch_version="2.7")
    a, b = dev.malloc(30 * MiB), dev.malloc(30 * MiB)
    dev.free(a)
    dev.free(b)
    dev.record_history()
    dev.malloc(50 * MiB)  # cached 30s do not fit; 60 + 50 > 100: release everything cached, retry
    st = dev.memory_stats()
    assert st["num_alloc_retries"] == 1
    assert st["num_sync_all_streams"] == 1
    assert dev.memory_reserved() == 50 * MiB
    assert actions(dev) == [("segment_free", 30 * MiB), ("segment_free", 30 * MiB),
                            ("segment_alloc", 50 * MiB), ("alloc", 50 * MiB)]


def test_release_available_frees_largest_oversize_blocks_first() -> None:
    dev = SimDevice("cuda", "max_split_size_mb:32", capacity_bytes=200 * MiB, context_bytes=0, torch_version="2.7")
    held = [dev.malloc(n * MiB) for n in (80, 40, 40)]
    for p in held:
        dev.free(p)
    dev.record_history()
    dev.malloc(100 * MiB)  # 160 cached + 100 > 200: free 80 then 40 (>= 100), keep the other 40
    assert dev.memory_stats()["num_alloc_retries"] == 0  # no release-all was needed
    assert actions(dev) == [("segment_free", 80 * MiB), ("segment_free", 40 * MiB),
                            ("segment_alloc", 100 * MiB), ("alloc", 100 * MiB)]
    assert dev.memory_reserved() == 140 * MiB


def test_release_available_single_block_big_enough() -> None:
    dev = SimDevice("cuda", "max_split_size_mb:32", capacity_bytes=200 * MiB, context_bytes=0, torch_version="2.7")
    dev.free(dev.malloc(120 * MiB))
    dev.record_history()
    dev.malloc(100 * MiB)  # 120 >= 100 + 20: not reusable; 120 + 100 > 200: release that one block
    assert actions(dev) == [("segment_free", 120 * MiB), ("segment_alloc", 100 * MiB), ("alloc", 100 * MiB)]


def test_garbage_collection_frees_blocks_older_than_average() -> None:
    dev = SimDevice("cuda", "garbage_collection_threshold:0.5", capacity_bytes=1000 * MiB, context_bytes=0,
                    torch_version="2.7")
    dev.set_per_process_memory_fraction(0.5)  # allowed 500 MiB, GC above 250 MiB
    a, b, c = (dev.malloc(100 * MiB) for _ in range(3))
    ticker = dev.malloc(30 * MiB)  # 300 > 250 already, but nothing is free yet: GC finds nothing
    dev.free(a)  # becomes old: the large pool's search clock ticks on every large malloc
    for _ in range(10):  # each malloc reuses the ticker's exact-size block (best fit), ageing `a`
        dev.free(ticker)
        ticker = dev.malloc(30 * MiB)
    dev.free(ticker)
    dev.free(b)  # young
    dev.record_history()
    dev.malloc(120 * MiB)  # no fit; 330 > 250: target 80 MiB; ages a=11, b=1, ticker=1: only `a` goes
    assert actions(dev)[:2] == [("segment_free", 100 * MiB), ("segment_alloc", 120 * MiB)]
    assert dev.block_at(a) is None and dev.block_at(b) is not None
    assert dev.memory_reserved() == 350 * MiB
    assert c


def test_fraction_limits_reserved_memory() -> None:
    dev = SimDevice("cuda", "", capacity_bytes=1000 * MiB, context_bytes=0, torch_version="2.7")
    dev.set_per_process_memory_fraction(0.1)
    dev.malloc(60 * MiB)
    with pytest.raises(SimOutOfMemoryError) as err:
        dev.malloc(60 * MiB)
    assert err.value.allowed_bytes == 100 * MiB
    assert "100.00 MiB allowed; " in str(err.value)
    with pytest.raises(ValueError, match="fraction"):
        dev.set_per_process_memory_fraction(1.5)


def test_empty_cache_returns_only_whole_free_segments() -> None:
    dev = SimDevice("cuda", "", context_bytes=0, torch_version="2.7")
    keep = dev.malloc(5 * MiB)  # its segment has a 15 MiB free tail that cannot be returned
    dev.free(dev.malloc(30 * MiB))
    dev.free(dev.malloc(1000))
    assert dev.memory_reserved() == 20 * MiB + 30 * MiB + 2 * MiB
    dev.empty_cache()
    st = dev.memory_stats()
    assert dev.memory_reserved() == 20 * MiB
    assert st["inactive_split_bytes.all.current"] == 15 * MiB
    assert st["segment.all.current"] == 1 and st["num_device_free"] == 2
    dev.free(keep)
    dev.empty_cache()
    assert dev.memory_reserved() == 0


def test_cuda_oom_message_and_side_effects() -> None:
    dev = SimDevice("cuda", "", capacity_bytes=GiB, context_bytes=100 * MiB, torch_version="2.7")
    dev.record_history()
    keep = dev.malloc(600 * MiB)
    dev.free(dev.malloc(5 * MiB))  # a 20 MiB segment, whole and free again
    part = dev.malloc(3 * MiB)  # reuses it: 17 MiB free but split off, so it cannot be released
    with pytest.raises(SimOutOfMemoryError) as err:
        dev.malloc(320 * MiB)  # 720 MiB used + 320 > 1 GiB
    e = err.value
    assert isinstance(e, RuntimeError)
    assert str(e) == (
        "CUDA out of memory. Tried to allocate 320.00 MiB. GPU 0 has a total capacity of 1024.00 MiB of "
        "which 304.00 MiB is free. Including non-PyTorch memory, this process has 720.00 MiB memory in use. "
        "Of the allocated memory 603.00 MiB is allocated by PyTorch, and 17.00 MiB is reserved by PyTorch but "
        "unallocated. If reserved but unallocated memory is large try setting "
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for "
        "Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
    )
    assert (e.alloc_bytes, e.device_free_bytes, e.allocated_bytes, e.reserved_bytes) == (
        320 * MiB, 304 * MiB, 603 * MiB, 620 * MiB)
    st = dev.memory_stats()
    assert st["num_ooms"] == 1 and st["num_alloc_retries"] == 1
    oom = dev.snapshot()["device_traces"][0][-1]
    assert oom["action"] == "oom" and oom["device_free"] == 304 * MiB and oom["size"] == 320 * MiB
    assert keep and part
    # 2.10+ names PYTORCH_ALLOC_CONF in the hint
    new = SimDevice("cuda", "", capacity_bytes=GiB, context_bytes=0, torch_version="2.10")
    with pytest.raises(SimOutOfMemoryError, match="try setting PYTORCH_ALLOC_CONF=expandable_segments:True"):
        new.malloc(2 * GiB)


def test_oom_reports_the_segment_size_not_the_tensor_size() -> None:
    dev = SimDevice("cuda", "", capacity_bytes=10 * MiB, context_bytes=0)
    with pytest.raises(SimOutOfMemoryError, match=r"Tried to allocate 20\.00 MiB\.") as err:
        dev.malloc(3 * MiB)
    assert err.value.requested_bytes == 3 * MiB and err.value.rounded_bytes == 3 * MiB


def test_npu_oom_message() -> None:
    dev = SimDevice("npu", "", capacity_bytes=GiB, context_bytes=200 * MiB)
    dev.malloc(700 * MiB)  # +32 B pad -> a 700 MiB + 512 B block in a 702 MiB segment
    with pytest.raises(SimOutOfMemoryError) as err:
        dev.malloc(200 * MiB)  # needs a 202 MiB segment; 1024 - 200 (context) - 702 = 122 MiB free
    assert str(err.value) == (
        "NPU out of memory. Tried to allocate 202.00 MiB (NPU 0; 1024.00 MiB total capacity; "
        "700.00 MiB already allocated; 700.00 MiB current active; 122.00 MiB free; "
        "702.00 MiB reserved in total by PyTorch).If reserved memory is >> allocated memory try setting "
        "max_split_size_mb to avoid fragmentation."
    )
    assert err.value.allocated_bytes == 700 * MiB + 512
    assert dev.memory_stats()["num_ooms"] == 1

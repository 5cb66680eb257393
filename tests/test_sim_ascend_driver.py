"""[simulated] The Ascend driver layer (toolkit.sim.ascend) and the NPU device on top of it.

Expectations come from the sources' own rules (hicann/driver devmm SVM v2, hicann/runtime, torch_npu),
cited per test, and from accounting invariants: physical used = mapped chunks + fixed consumers, never
above capacity; every byte torch frees is either cached by the driver or given back.
"""

from __future__ import annotations

import pytest

from toolkit.sim import SimDevice, SimOutOfMemoryError
from toolkit.sim.ascend import AscendRuntime
from toolkit.sim.ascend.devmm import HUGE_CACHE_THRES_BYTES, NORMAL_CACHE_THRES_BYTES

MiB = 1 << 20
GiB = 1 << 30


def runtime(capacity: int = 8 * GiB, fixed: int = 0) -> AscendRuntime:
    return AscendRuntime(capacity, lambda: fixed)


def check_physical(rt: AscendRuntime, fixed: int) -> None:
    """Physical used = chunks mapped in heaps (live + cached) + primary heaps + handles + fixed <= capacity."""
    heaps = rt.heaps()
    assert rt.used_bytes == sum(h.mapped_bytes for h in heaps) + rt.phys.handle_bytes + fixed
    assert rt.used_bytes <= rt.phys.capacity_bytes
    assert rt.cached_bytes == sum(h.cached_bytes for h in heaps)


def test_thresholds_are_the_drivers() -> None:
    # devmm_virt_com_heap.h:34-35
    assert HUGE_CACHE_THRES_BYTES == 36 * MiB and NORMAL_CACHE_THRES_BYTES == 18 * MiB


def test_alloc_2m_free_2m_keeps_it_mapped_in_the_cache() -> None:
    # devmm_virt_interface.h:190-192: "alloc 2M success, free 2M success, alloc 2G will fail because of
    # cache heap": after the free the 2 MiB stay mapped in the heap (is_cache) ...
    rt = runtime()
    va = rt.malloc(2 * MiB)
    assert va is not None
    rt.free(va)
    assert rt.cached_bytes == 2 * MiB and rt.used_bytes == 2 * MiB
    # ... and the next request of that size gets the same chunk back (cache first: devmm_virt_com_heap.c:1048-1054)
    assert rt.malloc(2 * MiB) == va and rt.cached_bytes == 0
    check_physical(rt, 0)


def test_cached_memory_is_not_given_to_a_large_request() -> None:
    # The same statement read physically: while chunks sit in the cache, a request above 36 MiB maps new
    # pages (no trim on physical exhaustion: devmm_virt_com_heap.c:1478-1510) and fails when none are left.
    rt = runtime(capacity=1 * GiB)
    keep = rt.malloc(2 * MiB)  # a live chunk keeps the heap alive (it is not idle, so not destroyed)
    small = [rt.malloc(20 * MiB) for _ in range(40)]
    for va in small:
        rt.free(va)
    cached = rt.cached_bytes
    assert cached > 0
    _, total = rt.mem_get_info()
    free = total - rt.used_bytes
    assert rt.malloc(free + 2 * MiB) is None  # the cached bytes would have covered it
    assert rt.cached_bytes == cached
    assert keep is not None
    check_physical(rt, 0)


def test_chunk_above_threshold_is_released_at_once() -> None:
    # devmm_virt_com_heap.c:1369-1375: a whole chunk above need_cache_thres goes back to the OS
    rt = runtime()
    va = rt.malloc(40 * MiB)
    assert rt.free(va) == 40 * MiB and rt.used_bytes == 0 and rt.cached_bytes == 0


def test_above_512_mib_goes_to_an_uncached_primary_heap() -> None:
    # devmm_svm.c:354-361, devmm_svm.h:46: > 512 MiB from the base heap; freed at once
    rt = runtime()
    va = rt.malloc(600 * MiB)
    heaps = rt.heaps()
    assert len(heaps) == 1 and heaps[0].primary and heaps[0].mapped_bytes == 600 * MiB
    rt.free(va)
    assert rt.used_bytes == 0 and rt.heaps() == []


def test_split_piece_keeps_parent_total_and_only_whole_chunks_are_released() -> None:
    # devmm_alloc_from_mapped_node keeps data.total (devmm_virt_com_heap.c:803); a piece (size != total)
    # never goes straight back (devmm_virt_com_heap.c:1369): it merges into its chunk in the cache
    rt = runtime()
    keep = rt.malloc(2 * MiB)
    va = rt.malloc(20 * MiB)
    rt.free(va)
    piece = rt.malloc(4 * MiB)  # carved out of the cached 20 MiB chunk
    assert piece == va and rt.cached_bytes == 16 * MiB and rt.used_bytes == 22 * MiB
    assert rt.free(piece) == 0  # merges back; below the shrink threshold, nothing is released
    assert rt.cached_bytes == 20 * MiB
    assert keep is not None


def test_shrink_only_past_min_2t_t_plus_128m() -> None:
    # devmm_need_shrink_cache (devmm_virt_com_heap.c:556-564) with T = 36 MiB (nothing live that counts:
    # devmm_get_cache_thres :1188-1210): shrinking starts at min(72 MiB, 164 MiB) = 72 MiB of cache and
    # stops before the cache would drop to T or below (:619-621)
    rt = runtime()
    keep = rt.malloc(40 * MiB)  # live but above the threshold: does not raise T
    vas = [rt.malloc(20 * MiB) for _ in range(4)]
    rt.free(vas[0])
    rt.free(vas[1])
    assert rt.cached_bytes == 40 * MiB  # 40 < 72: kept
    rt.free(vas[2])
    assert rt.cached_bytes == 60 * MiB  # 60 < 72: kept
    rt.free(vas[3])  # 80 >= 72: release whole chunks while the rest stays above 36 MiB
    assert rt.cached_bytes == 40 * MiB
    assert keep is not None
    check_physical(rt, 0)


def test_idle_heap_is_destroyed_when_another_heap_exists() -> None:
    # devmm_virt_interface.c:1162-1168 with DEVMM_POOL_DESTROY_THREADHOLD = 1 and the idle test
    # alloced == freed + cached (:1528-1539): a heap holding only cache is dropped, cache and all
    rt = runtime()
    big = rt.malloc(600 * MiB)  # a primary heap in the same list: heap_cnt > 1
    vas = [rt.malloc(30 * MiB) for _ in range(2)]
    rt.free(vas[0])
    assert rt.cached_bytes == 30 * MiB  # the heap still has a live chunk
    rt.free(vas[1])
    assert rt.cached_bytes == 0 and rt.used_bytes == 600 * MiB
    assert big is not None


def test_huge_first_falls_back_to_normal_pages_and_small_requests_use_normal_pages() -> None:
    # npu_driver_mem.cc:1038-1057: > 1 MiB huge pages first; <= 1 MiB normal pages
    rt = runtime()
    va = rt.malloc(MiB)
    assert [h.page for h in rt.heaps()] == ["normal"]
    rt.free(va)
    rt2 = AscendRuntime(4 * GiB, lambda: 0)
    rt2.malloc(8 * MiB)
    assert rt2.heaps()[0].page == "huge" and rt2.num_huge_fallbacks == 0


def test_physical_handles_have_no_cache() -> None:
    # aclrtMallocPhysical -> halMemCreate (npu_driver_mem.cc:374-398): no devmm heap
    rt = runtime()
    assert rt.malloc_physical(20 * MiB)
    rt.free_physical(20 * MiB)
    assert rt.used_bytes == 0 and rt.heaps() == []


# -- the simulated NPU on top of the driver ----------------------------------------------------------------
def npu(conf: str = "", capacity: int = 8 * GiB, **kw: object) -> SimDevice:
    return SimDevice("npu", conf, capacity_bytes=capacity, context_bytes=GiB, **kw)


def test_cuda_has_no_driver_and_npu_has_one_by_default() -> None:
    assert SimDevice("cuda").driver is None
    assert npu().driver is not None and npu(driver=False).driver is None
    with pytest.raises(ValueError):
        SimDevice("cuda", driver=True)


def test_empty_cache_of_20mib_segments_leaves_used_above_reserved() -> None:
    # the shared note's probe, 20 MiB case; with nothing else in the heap the cache is capped by the
    # shrink rule (72 MiB trigger, stop above 36 MiB: devmm_virt_com_heap.c:556-564, :619-621)
    dev = npu()
    addrs = [dev.malloc(20 * MiB - 32) for _ in range(100)]
    for a in addrs:
        dev.free(a)
    dev.empty_cache()
    assert dev.memory_reserved() == 0
    cached = dev.driver_cached_bytes
    assert 36 * MiB < cached < 72 * MiB
    assert dev.device_used_bytes == GiB + cached
    assert dev.non_torch_bytes() == GiB + cached
    dev.check_invariants()


def test_every_byte_torch_frees_is_cached_or_released() -> None:
    dev = npu()
    rt = dev.driver
    assert rt is not None
    keep = dev.malloc(MiB)  # small pool: a live 2 MiB segment in the first heap
    addrs = [dev.malloc(n * MiB) for n in (3, 12, 20, 30, 48, 100, 600)]
    for a in addrs:
        dev.free(a)
    reserved_before = dev.memory_reserved()
    mapped_before = rt.mapped_bytes
    released_before = rt.devmm.released_bytes
    cached_before = dev.driver_cached_bytes
    dev.empty_cache()
    freed_by_torch = reserved_before - dev.memory_reserved()
    released = rt.devmm.released_bytes - released_before
    cache_growth = dev.driver_cached_bytes - cached_before
    assert freed_by_torch > 0 and released > 0 and cache_growth > 0
    assert freed_by_torch == released + cache_growth
    assert rt.mapped_bytes == mapped_before - released
    assert rt.mapped_bytes == dev.memory_reserved() + dev.driver_cached_bytes + dev.workspace_bytes
    assert keep
    dev.check_invariants()


def test_expandable_segments_return_to_baseline() -> None:
    # the shared note's control: expandable pages are physical handles, unmapped and freed by empty_cache
    dev = npu("expandable_segments:True")
    addrs = [dev.malloc(20 * MiB - 32) for _ in range(100)]
    for a in addrs:
        dev.free(a)
    dev.empty_cache()
    assert dev.driver_cached_bytes == 0 and dev.device_used_bytes == GiB


def test_600mib_tensors_return_to_baseline() -> None:
    dev = npu()
    addrs = [dev.malloc(600 * MiB) for _ in range(5)]
    for a in addrs:
        dev.free(a)
    dev.empty_cache()
    assert dev.device_used_bytes == GiB and dev.driver_cached_bytes == 0


def test_oom_when_the_driver_cannot_map_while_its_cache_holds_memory() -> None:
    # torch's OOM-retry frees its cached segments into devmm's cache; with 400 MiB of live <= 36 MiB
    # chunks in the heap the threshold T is 600 MiB (devmm_virt_com_heap.c:1188-1210), so nothing is
    # shrunk, and a request above 36 MiB cannot use the cache: the retry fails where it would succeed
    # without the driver layer
    results = {}
    for driver in (True, False):
        dev = npu(capacity=3 * GiB, driver=driver)
        addrs = [dev.malloc(20 * MiB - 32) for _ in range(40)]
        for a in addrs[::2]:
            dev.free(a)
        try:
            dev.malloc(1400 * MiB)
            results[driver] = "ok"
        except SimOutOfMemoryError as exc:
            results[driver] = str(exc)
        assert dev.memory_stats()["num_alloc_retries"] == 1
        assert dev.device_used_bytes <= dev.capacity_bytes
        dev.check_invariants()
        if driver:
            assert dev.driver_cached_bytes == 400 * MiB
            assert dev.memory_reserved() == 400 * MiB
            assert dev.non_torch_bytes() == GiB + 400 * MiB
    assert results[False] == "ok"
    msg = results[True]
    assert msg.startswith("NPU out of memory. Tried to allocate 1.37 GiB (NPU 0; 3.00 GiB total capacity;")
    assert "reserved in total by PyTorch)." in msg


def test_workspace_blocks_go_through_the_driver() -> None:
    # NPUWorkspaceAllocator.cpp:141-144 (HUGE_ONLY): the replaced 4 MiB block stays cached in devmm
    dev = npu()
    dev.workspace(3 * MiB)
    dev.workspace(10 * MiB)
    assert dev.workspace_bytes == 12 * MiB and dev.driver_cached_bytes == 4 * MiB
    assert dev.non_torch_bytes() == GiB + 16 * MiB


def test_page_size_1g_segments_use_uncached_giant_pages() -> None:
    # NPUCachingAllocator.cpp:3003-3005 (HUGE1G_ONLY) -> MEM_PAGE_GIANT -> base heap (devmm_svm.c:361)
    dev = npu("page_size:1g")
    a = dev.malloc(30 * MiB)
    assert dev.memory_reserved() == GiB
    dev.free(a)
    dev.empty_cache()
    assert dev.driver_cached_bytes == 0 and dev.device_used_bytes == GiB


def test_old_run_files_load_without_driver_cached_bytes() -> None:
    from toolkit.core.records import MemorySample

    s = MemorySample(request_index=0, request_id="r", rank=0, started_at_ns=0, duration_ns=0, driver_cached_bytes=5)
    old = s.to_dict()
    del old["driver_cached_bytes"]
    assert MemorySample.from_dict(old).driver_cached_bytes == 0
    assert MemorySample.from_dict(s.to_dict()).driver_cached_bytes == 5

"""Expandable segments: page mapping, growable best fit, unmapping, NPU alignment (docs/allocator.md §3)."""

from __future__ import annotations

import pytest

from toolkit.sim import SimDevice, SimOutOfMemoryError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def exp(platform: str = "cuda", extra: str = "", **kw: object) -> SimDevice:
    kw.setdefault("context_bytes", 0)
    conf = "expandable_segments:True" + ("," + extra if extra else "")
    dev = SimDevice(platform, conf, **kw)  # type: ignore[arg-type]
    dev.record_history()
    return dev


def trace(dev: SimDevice, *kinds: str) -> list[tuple[str, int]]:
    return [(e["action"], e["size"]) for e in dev.snapshot()["device_traces"][0] if not kinds or e["action"] in kinds]


def test_maps_whole_pages_and_grows_the_same_segment() -> None:
    dev = exp(torch_version="2.7")
    a = dev.malloc(5 * MiB)  # one 20 MiB page
    b = dev.malloc(25 * MiB)  # the 15 MiB free tail + one more page, contiguous with a
    dev.malloc(KiB)  # small pool: a 2 MiB page in its own segment
    assert trace(dev, "segment_map") == [("segment_map", 20 * MiB), ("segment_map", 20 * MiB),
                                         ("segment_map", 2 * MiB)]
    assert b == a + 5 * MiB
    st = dev.memory_stats()
    assert st["reserved_bytes.all.current"] == 42 * MiB
    assert st["segment.all.current"] == 0  # mapping never counts as a segment (spec 3.3)
    assert st["num_device_alloc"] == 3
    segs = dev.snapshot()["segments"]
    assert [s["is_expandable"] for s in segs] == [True, True]
    assert sorted(s["total_size"] for s in segs) == [2 * MiB, 40 * MiB]  # one dict per mapped run


def test_page_sizes_follow_the_conf() -> None:
    dev = exp(extra="large_segment_size_mb:64", torch_version="2.11")
    dev.malloc(5 * MiB)
    assert trace(dev, "segment_map") == [("segment_map", 64 * MiB)]
    npu = exp("npu", "page_size:1g")
    npu.malloc(5 * MiB)
    npu.malloc(KiB)
    assert trace(npu, "segment_map") == [("segment_map", GiB), ("segment_map", 2 * MiB)]
    npu = exp("npu", "segment_size_mb:40", torch_version="7.3.0")
    npu.malloc(5 * MiB)
    assert trace(npu, "segment_map") == [("segment_map", 40 * MiB)]


def test_always_splits_and_excludes_inactive_split() -> None:
    dev = exp(torch_version="2.7")
    a = dev.malloc(19 * MiB + 512 * KiB)  # 0.5 MiB left in the page: split anyway (>= 512 B)
    blocks = dev.snapshot()["segments"][0]["blocks"]
    assert [(b["size"], b["state"]) for b in blocks] == [(19 * MiB + 512 * KiB, "active_allocated"),
                                                        (512 * KiB, "inactive")]
    dev.malloc(4 * MiB)
    dev.free(a)
    st = dev.memory_stats()
    assert st["inactive_split.all.current"] == 0 and st["inactive_split_bytes.all.current"] == 0


def test_growable_best_fit_prefers_a_hole_over_the_tail() -> None:
    """A free tail can grow into unmapped space, so best fit treats it as huge (spec 3.6)."""
    dev = exp(torch_version="2.7")
    dev.malloc(4 * MiB)
    hole = dev.malloc(7 * MiB)
    dev.malloc(3 * MiB)  # leaves a 6 MiB free tail before the unmapped space
    dev.free(hole)  # a 7 MiB hole
    assert dev.malloc(5 * MiB) == hole  # not the (smaller) 6 MiB tail
    plain = SimDevice("cuda", "", context_bytes=0, torch_version="2.7")
    plain.malloc(4 * MiB)
    hole = plain.malloc(7 * MiB)
    tail_block = plain.malloc(3 * MiB)
    plain.free(hole)
    assert plain.malloc(5 * MiB) == tail_block + 3 * MiB  # without expandable: smallest block wins


def test_empty_cache_unmaps_free_pages_only() -> None:
    dev = exp(torch_version="2.7")
    a = dev.malloc(30 * MiB)  # pages 0-1 (40 MiB mapped)
    b = dev.malloc(30 * MiB)  # 10 MiB tail of page 1 + pages 2-3
    dev.malloc(10 * MiB)
    dev.free(a)  # [0, 30) free: page 0 entirely free, page 1 partly used
    dev.empty_cache()
    assert trace(dev, "segment_unmap") == [("segment_unmap", 20 * MiB)]
    assert dev.memory_reserved() == 60 * MiB
    blocks = [(blk["size"], blk["state"]) for s in dev.snapshot()["segments"] for blk in s["blocks"]]
    assert blocks[0] == (10 * MiB, "inactive")  # the mapped free fragment of page 1 stays
    dev.free(b)  # [20, 60) free: pages 1 and 2 go; page 3 still holds the 10 MiB block
    dev.empty_cache()
    assert dev.memory_reserved() == 20 * MiB


def test_everything_freed_returns_the_va_reservation() -> None:
    dev = exp(torch_version="2.7")
    ptrs = [dev.malloc(n) for n in (5 * MiB, 25 * MiB, 1000, 7 * MiB)]
    for p in ptrs:
        dev.free(p)
    dev.empty_cache()
    assert dev.memory_reserved() == 0
    assert dev.snapshot()["segments"] == []
    assert dev.memory_stats()["num_device_free"] == 2
    dev.check_invariants()


def test_oom_retry_unmaps_cached_pages_then_succeeds() -> None:
    dev = exp(capacity_bytes=100 * MiB, torch_version="2.7")
    small = dev.malloc(KiB)
    dev.free(small)  # a cached 2 MiB small-pool page
    big = dev.malloc(60 * MiB)
    dev.free(big)  # 60 MiB mapped and free in the large segment
    dev.malloc(90 * MiB)  # 60 free + 40 more mapped would be 102 > 100: unmap all cached pages, retry
    assert dev.memory_stats()["num_alloc_retries"] == 1
    assert trace(dev, "segment_unmap", "segment_map")[-3:] == [
        ("segment_unmap", 60 * MiB), ("segment_unmap", 2 * MiB), ("segment_map", 100 * MiB)]
    assert dev.memory_reserved() == 100 * MiB
    with pytest.raises(SimOutOfMemoryError):
        dev.malloc(30 * MiB)


def test_npu_base_addr_alignment_leaves_a_front_fragment() -> None:
    dev = exp("npu")
    dev.malloc(3 * MiB)  # 3 MiB + 512 B block at the page start
    b = dev.malloc(3 * MiB)
    assert b % (16 * KiB) == 0
    blocks = dev.snapshot()["segments"][0]["blocks"]
    assert [(x["size"], x["state"]) for x in blocks[:3]] == [
        (3 * MiB + 512, "active_allocated"), (16 * KiB - 512, "inactive"), (3 * MiB + 512, "active_allocated")]
    unaligned = exp("npu", "base_addr_aligned_kb:0")
    first = unaligned.malloc(3 * MiB)
    assert unaligned.malloc(3 * MiB) == first + 3 * MiB + 512
    small = exp("npu")
    small.malloc(1000)
    assert small.malloc(1000) % (16 * KiB) != 0  # below 2 MiB: no alignment


def test_streams_get_their_own_expandable_segments() -> None:
    dev = exp(torch_version="2.7")
    dev.malloc(5 * MiB, stream=0)
    dev.malloc(5 * MiB, stream=3)
    assert sorted(s["stream"] for s in dev.snapshot()["segments"]) == [0, 3]
    assert dev.memory_reserved() == 40 * MiB

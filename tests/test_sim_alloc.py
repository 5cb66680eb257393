"""Best fit, splitting, merging and the oversize rules of the simulated allocator (docs/allocator.md §2.6-2.9)."""

from __future__ import annotations

import pytest

from toolkit.sim import SimDevice

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def cuda(conf: str = "", **kw: object) -> SimDevice:
    kw.setdefault("context_bytes", 0)
    kw.setdefault("torch_version", "2.7")
    return SimDevice("cuda", conf, **kw)  # type: ignore[arg-type]


def blocks(dev: SimDevice) -> list[tuple[int, int, str]]:
    """(segment index, block size, state) for every block, segments in address order."""
    out = []
    for i, seg in enumerate(dev.snapshot()["segments"]):
        out += [(i, b["size"], b["state"]) for b in seg["blocks"]]
    return out


def test_large_pool_split_only_when_more_than_1mib_remains() -> None:
    dev = cuda()
    a = dev.malloc(5 * MiB)  # 20 MiB segment split into 5 + 15
    assert blocks(dev) == [(0, 5 * MiB, "active_allocated"), (0, 15 * MiB, "inactive")]
    dev.free(a)
    assert blocks(dev) == [(0, 20 * MiB, "inactive")]  # merged back
    b = dev.malloc(19 * MiB)  # remaining exactly 1 MiB: not split (strictly greater is required)
    assert blocks(dev) == [(0, 20 * MiB, "active_allocated")]
    assert dev.memory_allocated() == 20 * MiB  # the whole block counts as allocated
    dev.free(b)
    dev.malloc(19 * MiB - 512)  # remaining 1 MiB + 512: split
    assert blocks(dev) == [(0, 19 * MiB - 512, "active_allocated"), (0, MiB + 512, "inactive")]


def test_small_pool_splits_down_to_512_bytes() -> None:
    dev = cuda()
    dev.malloc(1000)
    assert blocks(dev) == [(0, 1024, "active_allocated"), (0, 2 * MiB - 1024, "inactive")]
    dev.malloc(MiB)
    rest = 2 * MiB - 1024 - MiB
    dev.malloc(rest - 512)  # leaves exactly 512: still split in the small pool
    assert [b[1] for b in blocks(dev)] == [1024, MiB, rest - 512, 512]
    dev.malloc(1)  # takes the last 512 bytes exactly: no split
    assert [b[2] for b in blocks(dev)] == ["active_allocated"] * 4
    assert dev.memory_stats()["inactive_split.all.current"] == 0


def test_best_fit_smallest_block_then_address_or_registration() -> None:
    """Equal-size free blocks: lowest address (<= 2.9, NPU) or oldest segment (recent CUDA)."""
    for tie_break, expect_older in (("address", False), ("registration", True)):
        dev = cuda(tie_break=tie_break)
        dev.malloc(8 * MiB)  # segment 1: 8 MiB + a 12 MiB tail
        a = dev.malloc(12 * MiB)  # fills the tail exactly
        dev.malloc(8 * MiB)  # segment 2 (lower address: driver addresses decrease)
        b = dev.malloc(12 * MiB)
        assert b < a
        dev.free(a)
        dev.free(b)  # two free 12 MiB blocks
        got = dev.malloc(11 * MiB)
        assert got == (a if expect_older else b)


def test_best_fit_prefers_smallest_sufficient_block() -> None:
    dev = cuda()
    a, b, c, d = dev.malloc(4 * MiB), dev.malloc(4 * MiB), dev.malloc(6 * MiB), dev.malloc(4 * MiB)
    dev.free(a)  # a 4 MiB hole
    dev.free(c)  # a 6 MiB hole (and a 2 MiB tail)
    assert dev.malloc(3 * MiB) == a  # smallest block that fits
    assert dev.malloc(5 * MiB) == c
    assert b and d


def test_streams_never_share_free_blocks() -> None:
    dev = cuda()
    a = dev.malloc(5 * MiB, stream=0)
    b = dev.malloc(5 * MiB, stream=7)  # stream 0 has 15 MiB free, but stream 7 gets its own segment
    assert dev.memory_reserved() == 40 * MiB
    seg_streams = sorted(s["stream"] for s in dev.snapshot()["segments"])
    assert seg_streams == [0, 7]
    dev.free(a)
    c = dev.malloc(5 * MiB, stream=0)
    assert c == a and b != a


def test_oversize_blocks_are_not_split_nor_given_to_normal_requests() -> None:
    dev = cuda("max_split_size_mb:64")
    big = dev.malloc(100 * MiB)
    stats = dev.memory_stats()
    assert stats["oversize_allocations.current"] == 1 and stats["oversize_segments.current"] == 1
    assert stats["max_split_size"] == 64 * MiB
    dev.free(big)
    small = dev.malloc(10 * MiB)  # < max_split_size: the cached 100 MiB block is off limits
    assert dev.memory_reserved() == 110 * MiB and small != big
    again = dev.malloc(90 * MiB)  # oversize: reuse allowed while waste < 20 MiB, and never split
    assert again == big and dev.memory_allocated() == 110 * MiB
    dev.free(again)
    dev.malloc(70 * MiB)  # 100 >= 70 + 20: too wasteful, a new 70 MiB segment
    assert dev.memory_reserved() == 180 * MiB


def test_max_non_split_rounding_widens_oversize_reuse() -> None:
    dev = cuda("max_split_size_mb:64,max_non_split_rounding_mb:40")
    big = dev.malloc(100 * MiB)
    dev.free(big)
    assert dev.malloc(70 * MiB) == big  # 100 < 70 + 40
    assert dev.memory_reserved() == 100 * MiB


def test_free_merges_neighbours_and_tracks_inactive_split() -> None:
    dev = cuda()
    a, b, c = (dev.malloc(4 * MiB) for _ in range(3))
    st = dev.memory_stats()
    assert st["inactive_split.all.current"] == 1 and st["inactive_split_bytes.all.current"] == 8 * MiB
    dev.free(b)  # a hole between a and c
    st = dev.memory_stats()
    assert st["inactive_split.all.current"] == 2 and st["inactive_split_bytes.all.current"] == 12 * MiB
    dev.free(c)  # merges with the hole and the tail
    assert [x[1:] for x in blocks(dev)] == [(4 * MiB, "active_allocated"), (16 * MiB, "inactive")]
    assert dev.memory_stats()["inactive_split.all.current"] == 1
    dev.free(a)
    st = dev.memory_stats()
    assert st["inactive_split.all.current"] == 0 and st["inactive_split_bytes.all.current"] == 0
    assert blocks(dev) == [(0, 20 * MiB, "inactive")]


def test_requested_size_is_kept_like_upstream() -> None:
    """A free remainder keeps the requested size of the block it was carved from (upstream object reuse)."""
    dev = cuda()
    a = dev.malloc(8 * MiB)
    dev.free(a)
    dev.malloc(3 * MiB)
    tail = dev.snapshot()["segments"][0]["blocks"][1]
    assert tail["state"] == "inactive" and tail["requested_size"] == 8 * MiB


def test_bad_calls_raise_clear_errors() -> None:
    dev = cuda()
    assert dev.malloc(0) == 0
    dev.free(0)  # freeing a null pointer is a no-op, as in torch
    with pytest.raises(ValueError, match="negative"):
        dev.malloc(-1)
    a = dev.malloc(100)
    dev.free(a)
    with pytest.raises(ValueError, match="invalid device pointer"):
        dev.free(a)
    with pytest.raises(ValueError, match="invalid device pointer"):
        dev.free(a + 512)
    with pytest.raises(ValueError, match="platform"):
        SimDevice("rocm")  # type: ignore[arg-type]


def test_conf_strings_are_validated_by_toolkit_conf() -> None:
    from toolkit.conf import ConfError

    with pytest.raises(ConfError, match="expandable_segments"):
        SimDevice("cuda", "expandable_segment:True")
    with pytest.raises(ValueError, match="not simulated"):
        SimDevice("cuda", "backend:cudaMallocAsync")
    with pytest.raises(ConfError):
        SimDevice("npu", "expandable_segments:True,max_split_size_mb:100")  # exclusive on NPU


def test_segment_address_callable_places_segments() -> None:
    wanted = iter([0x10_0000_0000, 0x20_0000_0000])
    dev = cuda(segment_address=lambda size, stream: next(wanted))
    assert dev.malloc(5 * MiB) == 0x10_0000_0000
    assert dev.malloc(100) == 0x20_0000_0000
    with pytest.raises(ValueError, match="multiple of 512"):
        cuda(segment_address=lambda size, stream: 123).malloc(5 * MiB)
    # the free-set keys hold 64-bit pointers: a segment past the end of the address space is refused
    with pytest.raises(ValueError, match="beyond the 64-bit address space"):
        cuda(segment_address=lambda size, stream: 2**64 - 10 * MiB).malloc(5 * MiB)  # a 20 MiB segment
    assert cuda(segment_address=lambda size, stream: 2**64 - 20 * MiB).malloc(5 * MiB) == 2**64 - 20 * MiB
    # ... and so is a seeded one (every segment goes through the same check)
    with pytest.raises(ValueError, match="beyond the 64-bit address space"):
        cuda().add_segment(2**64 - 4096, 2 * MiB, "large", 0)

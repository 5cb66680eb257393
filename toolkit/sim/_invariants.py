"""Structural and statistical invariants of a simulated device, checked by tests after every step.

Per segment the blocks tile it exactly (PyTorch's ``segsum`` idea); every free block is in its free set
and nothing else is; the running statistics equal what the blocks say (allocated + inactive ==
reserved, segment counts, inactive split pieces).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolkit.sim._pools import PTR_MASK, free_key, unmapped_key

if TYPE_CHECKING:
    from toolkit.sim.device import SimDevice


def check_invariants(dev: SimDevice) -> None:
    """Raise AssertionError naming the first broken invariant."""
    seen: set[int] = set()
    expect_free: dict[int, set[int]] = {id(dev._small): set(), id(dev._large): set()}
    expect_unmapped: dict[int, set[int]] = {id(dev._small): set(), id(dev._large): set()}
    per_pool = {
        True: dict(alloc_b=0, alloc_n=0, active_b=0, active_n=0, req=0, mapped=0, seg=0, split_n=0, split_b=0),
        False: dict(alloc_b=0, alloc_n=0, active_b=0, active_n=0, req=0, mapped=0, seg=0, split_n=0, split_b=0),
    }
    for address, seg in dev._segments.items():
        assert address == seg.address, f"segment key {address:#x} != address {seg.address:#x}"
        b = dev._by_ptr.get(seg.address)
        assert b is not None and b.prev is None, f"segment {address:#x}: no head block at its address"
        covered = 0
        expected_ptr = seg.address
        prev = None
        split = b.next is not None
        acc = per_pool[seg.pool.is_small]
        if not seg.expandable:
            acc["seg"] += 1
        while b is not None:
            assert b.ptr == expected_ptr, f"segment {address:#x}: gap/overlap at {expected_ptr:#x}"
            assert b.prev is prev, f"block {b.ptr:#x}: broken prev link"
            assert dev._by_ptr.get(b.ptr) is b, f"block {b.ptr:#x}: not indexed by address"
            assert b.seg is seg and b.pool is seg.pool, f"block {b.ptr:#x}: wrong segment/pool"
            assert b.size > 0 and b.size % 512 == 0, f"block {b.ptr:#x}: size {b.size} not a positive multiple of 512"
            seen.add(b.ptr)
            if not b.mapped:
                assert seg.expandable and not b.allocated, f"block {b.ptr:#x}: unmapped outside an expandable segment"
                assert b.key == unmapped_key(b.stream, b.ptr), f"block {b.ptr:#x}: stale unmapped key"
                expect_unmapped[id(b.pool)].add(b.key)
            else:
                acc["mapped"] += b.size
                if b.allocated or b.event_count:
                    acc["active_b"] += b.size
                    acc["active_n"] += 1
                    acc["req"] += b.requested
                    if b.allocated:
                        acc["alloc_b"] += b.size
                        acc["alloc_n"] += 1
                else:
                    k = free_key(b.stream, b.size, b.seg.regbits >> 64, b.ptr)
                    assert b.key == k, f"block {b.ptr:#x}: stale free-set key"
                    expect_free[id(b.pool)].add(k)
                    if split and not seg.expandable:
                        acc["split_n"] += 1
                        acc["split_b"] += b.size
                if prev is not None and not seg.expandable:
                    both_free = not (b.allocated or b.event_count or prev.allocated or prev.event_count)
                    assert not both_free, f"segment {address:#x}: adjacent free blocks were not merged"
            covered += b.size
            expected_ptr += b.size
            prev = b
            b = b.next
        assert covered == seg.size, f"segment {address:#x}: blocks sum to {covered}, segment is {seg.size}"
    assert seen == set(dev._by_ptr), "blocks indexed by address that belong to no segment"
    for pool in (dev._small, dev._large):
        assert set(pool.free) == expect_free[id(pool)], f"{pool.name} pool: free set != free blocks"
        assert len(pool.free) == len(expect_free[id(pool)]), f"{pool.name} pool: duplicate free keys"
        assert set(pool.unmapped) == expect_unmapped[id(pool)], f"{pool.name} pool: unmapped set mismatch"
        for k in pool.free:
            assert dev._by_ptr[k & PTR_MASK].key == k
        st = pool.stats
        acc = per_pool[pool.is_small]
        _eq(st.allocated_bytes_cur, acc["alloc_b"], f"{pool.name}: allocated_bytes")
        _eq(st.allocation_cur, acc["alloc_n"], f"{pool.name}: allocation")
        _eq(st.active_bytes_cur, acc["active_b"], f"{pool.name}: active_bytes")
        _eq(st.active_cur, acc["active_n"], f"{pool.name}: active")
        _eq(st.requested_bytes_cur, acc["req"], f"{pool.name}: requested_bytes")
        _eq(st.reserved_bytes_cur, acc["mapped"], f"{pool.name}: reserved_bytes")
        _eq(st.segment_cur, acc["seg"], f"{pool.name}: segment")
        _eq(st.inactive_split_cur, acc["split_n"], f"{pool.name}: inactive_split")
        _eq(st.inactive_split_bytes_cur, acc["split_b"], f"{pool.name}: inactive_split_bytes")
        for metric in ("allocated_bytes", "reserved_bytes", "active_bytes", "segment", "inactive_split_bytes"):
            cur = st.get(metric, "current")
            assert st.get(metric, "peak") >= cur, f"{pool.name}: {metric} peak below current"
            assert st.get(metric, "allocated") - st.get(metric, "freed") <= st.get(metric, "allocated"), metric
    a = dev._all
    for metric in ("allocated_bytes", "reserved_bytes", "active_bytes", "requested_bytes", "segment",
                   "allocation", "active", "inactive_split", "inactive_split_bytes"):
        total = dev._small.stats.get(metric, "current") + dev._large.stats.get(metric, "current")
        _eq(a.get(metric, "current"), total, f"all: {metric}")
        assert a.get(metric, "peak") >= a.get(metric, "current"), f"all: {metric} peak below current"
    _eq(dev._reserved_total, a.reserved_bytes_cur, "total reserved vs reserved_bytes.all.current")
    inactive = sum(dev._by_ptr[k & PTR_MASK].size for p in (dev._small, dev._large) for k in p.free)
    _eq(a.active_bytes_cur + inactive, a.reserved_bytes_cur, "active + inactive == reserved")
    _eq(sum(len(q) for q in dev._events.values()), dev._num_events, "outstanding event count")
    if dev._rt is not None:
        _check_driver(dev)


def _check_driver(dev: SimDevice) -> None:
    """The Ascend driver layer: physical used = mapped chunks (live + cached) + fixed, within capacity;
    every torch segment and workspace block is a live driver allocation; expandable pages are handles."""
    rt = dev._rt
    assert rt is not None
    heaps = rt.heaps()
    phys = rt.phys
    _eq(phys.heap_bytes + phys.primary_bytes, sum(h.mapped_bytes for h in heaps), "driver: mapped heap bytes")
    _eq(rt.used_bytes, phys.mapped_bytes + dev.context_bytes + dev.external_bytes, "driver: used = mapped + fixed")
    assert rt.used_bytes <= dev.capacity_bytes, f"driver: used {rt.used_bytes} above capacity {dev.capacity_bytes}"
    segs = [seg for seg in dev._segments.values() if not seg.expandable]
    _eq(len(dev._seg_va), len(segs), "driver: one driver allocation per segment")
    _eq(len(dev._ws_va), len(dev._ws.blocks), "driver: one driver allocation per workspace block")
    owned = rt.devmm._owner
    for seg in segs:
        assert dev._seg_va.get(seg.address) in owned, f"segment {seg.address:#x}: no live driver allocation"
    mapped_exp = sum(b.size for b in dev._by_ptr.values() if b.seg.expandable and b.mapped)
    _eq(phys.handle_bytes, mapped_exp, "driver: physical handles == mapped expandable bytes")
    for h in heaps:
        assert h.cached_bytes >= 0 and h.mapped_bytes >= h.cached_bytes, f"heap {h.start:#x}: cache above mapped"


def _eq(actual: int, expected: int, what: str) -> None:
    assert actual == expected, f"{what}: stats say {actual}, blocks say {expected}"

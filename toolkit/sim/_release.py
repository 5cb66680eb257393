"""Giving cached memory back to the device: whole segments, oversize blocks, GC (docs/allocator.md §2.11–2.13).

Mixin of :class:`toolkit.sim.device.SimDevice`; uses its attributes (``_by_ptr``, pools, stats, trace).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolkit.sim._pools import PTR_MASK, ceiling, search_key

if TYPE_CHECKING:
    from toolkit.sim._blocks import Block
    from toolkit.sim._pools import BlockPool


class ReleaseMixin:
    def _release_block(self: SimDeviceT, b: Block) -> None:
        """``release_block``: cudaFree a whole free non-expandable segment."""
        st = self._stats
        st.num_device_free += 1
        if self._trace is not None:
            self._trace.append(("segment_free", b.ptr, b.size, b.stream, next(self._clock)))
        size = b.size
        pool = b.pool
        self._reserved_total -= size
        pool.stats.on_reserved(-size, -1)
        if size >= self._mss:
            st.oversize_segments.decrease()
        pool.free.remove(b.key)
        del self._by_ptr[b.ptr]
        del self._segments[b.seg.address]
        self._addresses.give_back(b.ptr, size)
        if self._rt is not None:  # aclrtFree: devmm caches the chunk or gives it back (toolkit.sim.ascend.devmm)
            self._rt.free(self._seg_va.pop(b.ptr))

    def _release_available_cached_blocks(self: SimDeviceT, pool: BlockPool, stream: int, size: int) -> bool:
        """Free oversize cached blocks, one big enough or several largest first (only with max_split_size)."""
        mss = self._mss
        if self.settings.max_split_unlimited:
            return False
        key_size = max(size, mss)
        fr = pool.free
        lo = search_key(stream, key_size)
        by_ptr = self._by_ptr
        ge = ceiling(fr, lo)
        if ge is not None:
            b = by_ptr[ge & PTR_MASK]
            if b.stream == stream and not b.seg.expandable and b.prev is None and b.next is None:
                self._release_block(b)
                return True
        # No single block is large enough: free the largest same-stream oversize blocks in turn.
        chosen = []
        planned = 0
        for k in fr.irange(maximum=lo, inclusive=(True, False), reverse=True):
            b = by_ptr[k & PTR_MASK]
            if planned >= key_size or b.size < mss or b.stream != stream:
                break
            if not b.seg.expandable and b.prev is None and b.next is None:
                planned += b.size
                chosen.append(b)
        for b in chosen:  # released after the walk: releasing mutates the list being walked
            self._release_block(b)
        return planned >= key_size

    def _release_cached_blocks(self: SimDeviceT) -> None:
        """``release_cached_blocks``: sync events, free whole free segments, unmap free expandable pages."""
        self._synchronize_and_free_events()
        by_ptr = self._by_ptr
        for pool in (self._large, self._small):
            to_unmap = []
            for k in list(pool.free):
                b = by_ptr[k & PTR_MASK]
                if b.seg.expandable:
                    to_unmap.append(b)
                elif b.prev is None and b.next is None:
                    self._release_block(b)
            for b in to_unmap:
                self._unmap_block(b)
                if b.prev is None and b.next is None:
                    self._release_expandable_segment(b)

    def _garbage_collect(self: SimDeviceT) -> None:
        """``garbage_collect_cached_blocks``: free whole segments older than average until under threshold."""
        allowed = self._allowed
        assert allowed is not None
        threshold = int(self.settings.gc_threshold * allowed)
        if self._reserved_total <= threshold:
            return
        target = self._reserved_total - threshold
        pool = self._large
        now = pool.gc_calls
        by_ptr = self._by_ptr
        total_age = 0
        count = 0
        for k in pool.free:
            b = by_ptr[k & PTR_MASK]
            if b.prev is None and b.next is None:
                total_age += now - b.gc_base
                count += 1
        if count == 0:
            return
        reclaimed = 0
        freed = True
        while reclaimed < target and freed and count > 0:
            average = total_age / count
            freed = False
            for k in list(pool.free):
                b = by_ptr[k & PTR_MASK]
                age = now - b.gc_base
                if b.prev is None and b.next is None and not b.seg.expandable and age >= average:
                    freed = True
                    reclaimed += b.size
                    total_age -= age
                    count -= 1
                    self._release_block(b)


if TYPE_CHECKING:
    from toolkit.sim.device import SimDevice as SimDeviceT

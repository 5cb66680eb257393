"""Expandable segments: per-stream VA reservations whose pages are mapped on demand (docs/allocator.md §3).

Mixin of :class:`toolkit.sim.device.SimDevice`. Pages: 2 MiB (small pool), the large segment size
(20 MiB default, ``large_segment_size_mb``) or 1 GiB (NPU ``page_size:1g``) for the large pool. Mapping
changes ``reserved_bytes`` but never the ``segment`` counts; blocks of expandable segments are excluded
from ``inactive_split``. Pages are unmapped only by ``empty_cache`` / the last-resort OOM retry.
Source: ``ExpandableSegment``, ``find_expandable_block``, ``map_block``, ``unmap_block`` in
``c10/cuda/CUDACachingAllocator.cpp`` (same structure in torch_npu).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeGuard

from toolkit.sim._blocks import Block
from toolkit.sim.constants import EXTRA_LARGE_BUFFER_BYTES
from toolkit.sim._pools import PTR_MASK, unmapped_key

if TYPE_CHECKING:
    from toolkit.sim.device import SimDevice as SimDeviceT
    from toolkit.sim._pools import BlockPool


def _allocatable(b: Block | None) -> TypeGuard[Block]:
    return b is not None and not b.allocated and not b.event_count and not b.stream_uses


def _growable_size(b: Block) -> int:
    """Best-fit size of an expandable block: itself plus the unmapped space right after it."""
    nx = b.next
    return b.size + (nx.size if nx is not None and not nx.mapped else 0)


class ExpandableMixin:
    def _pick_expandable(self: SimDeviceT, pool: BlockPool, stream: int, b: Block) -> Block | None:
        """Adjust a best-fit candidate that lies in an expandable segment (§3.6)."""
        by_ptr = self._by_ptr
        following = pool.free.irange(minimum=b.key, inclusive=(False, True))
        if self._expandable:
            # prefer a block that cannot absorb growth over the tail block of a segment
            cur, grow = b, _growable_size(b)
            for k in following:
                nb = by_ptr[k & PTR_MASK]
                if not cur.seg.expandable or nb.stream != stream:
                    break
                g = _growable_size(nb)
                if g >= grow:
                    break
                cur, grow = nb, g
            return cur
        # expandable segments were switched off: only non-expandable blocks may be used
        for k in following:
            nb = by_ptr[k & PTR_MASK]
            if nb.stream != stream:
                return None
            if not nb.seg.expandable:
                return nb
        return None

    def _find_expandable_block(self: SimDeviceT, pool: BlockPool, stream: int, size: int) -> Block:
        """Lowest-address free/unmapped run of ``size`` bytes in this stream's segments, or a new segment."""
        by_ptr = self._by_ptr
        lo = unmapped_key(stream, 0)
        hi = unmapped_key(stream + 1, 0)
        for k in pool.unmapped.irange(lo, hi, inclusive=(True, False)):
            c = by_ptr[k & PTR_MASK]
            if _allocatable(c.prev):
                c = c.prev  # a free mapped block right before the hole can be reused
            total = 0
            x: Block | None = c
            while total < size and _allocatable(x):
                assert x is not None
                total += x.size
                x = x.next
            if total >= size:
                return c
        page = self.settings.small_page_bytes if pool.is_small else self.settings.large_page_bytes
        cap = self.capacity_bytes
        va_size = page * -(-(cap + cap // 8) // page)  # room for 1 1/8 of device memory
        # A trace never records a reservation's base, but its first pages are mapped at it (lowest
        # address first): a replay's segment_address callable passes the recorded first map; without
        # one the simulator's own address model decides.
        address = self._new_address(va_size, stream, page)
        seg = self._new_segment(address, va_size, stream, pool, page_bytes=page)
        u = Block(address, va_size, stream, pool, seg, mapped=False)
        by_ptr[address] = u
        u.key = unmapped_key(stream, address)
        pool.unmapped.add(u.key)
        return u

    def _try_allocate_expandable(self: SimDeviceT, pool: BlockPool, stream: int, size: int) -> Block | None:
        """Map pages until a free block of ``size`` bytes exists; returns it out of the free set."""
        c: Block | None = self._find_expandable_block(pool, stream, size)
        assert c is not None
        if not c.mapped:
            c = self._map_block(c, min(c.size, size))
            if c is None:
                return None
        while c.size < size:
            nx = c.next
            assert nx is not None and not nx.mapped
            c = self._map_block(nx, min(size - c.size, nx.size))
            if c is None:
                return None
        pool.free.remove(c.key)
        return c

    def _map_block(self: SimDeviceT, u: Block, nbytes: int) -> Block | None:
        """Map the pages covering the first ``nbytes`` of unmapped block ``u`` (all or nothing)."""
        seg = u.seg
        page = seg.page_bytes
        off = u.ptr - seg.address
        begin = off // page
        end = -(-(off + nbytes) // page)
        mapped = (end - begin) * page
        if mapped == 0:
            return None
        rt = self._rt
        if rt is not None:
            # aclrtMallocPhysical per page (NPUCachingAllocator.cpp:414-422): no devmm heap, no cache
            if not rt.malloc_physical(mapped, page >= EXTRA_LARGE_BUFFER_BYTES):
                return None
        elif self.device_used_bytes + mapped > self.capacity_bytes:
            return None
        pool = u.pool
        pool.unmapped.remove(u.key)
        u.mapped = True
        if mapped < u.size:
            r = Block(u.ptr + mapped, u.size - mapped, u.stream, pool, seg, mapped=False)
            nx = u.next
            r.prev = u
            r.next = nx
            if nx is not None:
                nx.prev = r
            u.next = r
            self._by_ptr[r.ptr] = r
            r.key = unmapped_key(r.stream, r.ptr)
            pool.unmapped.add(r.key)
            u.size = mapped
        mapped_ptr = u.ptr
        self._try_merge(u, u.prev)
        self._try_merge(u, u.next)
        self._insert_free(u)
        self._reserved_total += mapped
        pool.stats.on_reserved(mapped, 0)
        self._stats.num_device_alloc += 1
        if self._trace is not None:
            self._trace.append(("segment_map", mapped_ptr, mapped, u.stream, next(self._clock)))
        return u

    def _unmap_block(self: SimDeviceT, b: Block) -> None:
        """Unmap the whole pages inside free mapped block ``b``; fragments stay mapped and free (§3.4)."""
        seg = b.seg
        page = seg.page_bytes
        off = b.ptr - seg.address
        first = -(-off // page)
        last = (off + b.size) // page
        if first >= last:
            return
        pool = b.pool
        by_ptr = self._by_ptr
        ptr = seg.address + first * page
        nbytes = (last - first) * page
        pool.free.remove(b.key)
        before = ptr - b.ptr
        if before > 0:
            f = Block(b.ptr, before, b.stream, pool, seg)
            p = b.prev
            f.prev = p
            f.next = b
            if p is not None:
                p.next = f
            b.prev = f
            by_ptr[f.ptr] = f  # replaces b's entry: b moves to ptr below
            self._insert_free(f)
        else:
            del by_ptr[b.ptr]
        after = b.size - before - nbytes
        if after > 0:
            f = Block(ptr + nbytes, after, b.stream, pool, seg)
            nx = b.next
            f.prev = b
            f.next = nx
            if nx is not None:
                nx.prev = f
            b.next = f
            by_ptr[f.ptr] = f
            self._insert_free(f)
        b.ptr = ptr
        b.size = nbytes
        b.mapped = False
        by_ptr[ptr] = b
        self._try_merge(b, b.prev)
        self._try_merge(b, b.next)
        b.key = unmapped_key(b.stream, b.ptr)
        pool.unmapped.add(b.key)
        self._reserved_total -= nbytes
        pool.stats.on_reserved(-nbytes, 0)
        if self._rt is not None:  # aclrtUnmapMem + aclrtFreePhysical: the pages go back at once
            self._rt.free_physical(nbytes, page >= EXTRA_LARGE_BUFFER_BYTES)
        self._stats.num_device_free += 1
        if self._trace is not None:
            self._trace.append(("segment_unmap", ptr, nbytes, b.stream, next(self._clock)))

    def _release_expandable_segment(self: SimDeviceT, b: Block) -> None:
        """A fully unmapped expandable segment gives its VA reservation back."""
        b.pool.unmapped.remove(b.key)
        del self._by_ptr[b.ptr]
        seg = b.seg
        del self._segments[seg.address]
        self._addresses.give_back(seg.address, seg.size)

    def _try_merge(self: SimDeviceT, dst: Block, src: Block | None) -> int:
        """``try_merge_blocks``: absorb free neighbour ``src`` (same mapped state) into ``dst``."""
        if src is None or src.allocated or src.event_count or src.stream_uses or dst.mapped != src.mapped:
            return 0
        pool = src.pool
        if src.mapped:
            pool.free.remove(src.key)
        else:
            pool.unmapped.remove(src.key)
        by_ptr = self._by_ptr
        if src is dst.prev:
            del by_ptr[dst.ptr]
            dst.ptr = src.ptr
            by_ptr[dst.ptr] = dst
            p = src.prev
            dst.prev = p
            if p is not None:
                p.next = dst
        else:
            del by_ptr[src.ptr]
            n = src.next
            dst.next = n
            if n is not None:
                n.prev = dst
        dst.size += src.size
        return src.size

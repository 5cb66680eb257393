"""Seeding the state that existed before a trace began (segments and blocks at recorded addresses).

Mixin of :class:`toolkit.sim.device.SimDevice`. Recording usually starts mid-run; ``toolkit.replay``
rebuilds that state with ``toolkit.snapshot.initial_state`` and seeds it here segment by segment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from toolkit.sim._blocks import Block, Segment
from toolkit.sim.constants import (
    EXTRA_LARGE_BUFFER_BYTES,
    MIN_BLOCK_BYTES,
    ROUND_LARGE_BYTES,
)
from toolkit.sim._pools import PTR_MASK, unmapped_key

if TYPE_CHECKING:
    from toolkit.sim.device import SimDevice as SimDeviceT
    from toolkit.sim._pools import BlockPool


class SeedingMixin:
    def add_segment(
        self: SimDeviceT,
        address: int,
        size: int,
        pool: str = "large",
        stream: int = 0,
        blocks: list[tuple[Any, ...]] | None = None,
        *,
        expandable: bool = False,
        va_base: int | None = None,
        va_bytes: int | None = None,
    ) -> None:
        """Seed a segment that existed before a trace began (at the recorded address).

        ``blocks``: ``(offset, size, allocated[, requested])`` tuples tiling the segment in address
        order; ``allocated`` may be a bool or a snapshot state (pending frees count as allocated).
        Default: one free block covering the segment. ``expandable=True`` seeds one mapped run of an
        expandable segment: it is carved out of the same stream's VA reservation that contains it, or a
        new reservation of ``va_bytes`` (default 1 1/8 of the capacity) starting at ``va_base``
        (default ``address``; unmapped pages below the first run matter: new pages go lowest first).
        """
        if pool not in ("small", "large"):
            raise ValueError(f"pool must be 'small' or 'large', got {pool!r}")
        if size <= 0 or size % MIN_BLOCK_BYTES or address <= 0 or address % MIN_BLOCK_BYTES:
            raise ValueError(f"segment {address:#x}+{size}: address and size must be positive multiples of 512")
        if self.device_used_bytes + size > self.capacity_bytes:
            raise ValueError(f"segment {address:#x}+{size} does not fit in the device capacity")
        parsed = _parse_seed_blocks(address, size, blocks)
        bp = self._small if pool == "small" else self._large
        if expandable:
            seg, prev, after = self._carve_expandable_run(address, size, bp, stream, va_base, va_bytes)
        else:
            for other in self._segments.values():
                if address < other.address + other.size and other.address < address + size:
                    raise ValueError(f"segment {address:#x}+{size} overlaps segment {other.address:#x}+{other.size}")
            seg = self._new_segment(address, size, stream, bp)
            prev = after = None
            bp.stats.on_reserved(0, 1)
            if size >= self._mss:
                self._stats.oversize_segments.increase()
        self._addresses.avoid(seg.address, seg.size)
        rt = self._rt
        if rt is not None:  # the seeded memory came from the driver as well
            if expandable:
                ok = rt.malloc_physical(size, seg.page_bytes >= EXTRA_LARGE_BUFFER_BYTES)
            else:
                va = rt.torch_segment_malloc(size, self.settings.page_1g and pool == "large")
                ok = va is not None
                if va is not None:
                    self._seg_va[seg.address] = va
            if not ok:
                raise ValueError(f"segment {address:#x}+{size}: the simulated driver cannot map it")
        self._reserved_total += size
        bp.stats.on_reserved(size, 0)
        count_split = len(parsed) > 1 and not expandable
        for ptr, bsize, allocated, requested in parsed:
            b = Block(ptr, bsize, stream, bp, seg)
            b.requested = requested
            b.prev = prev
            if prev is not None:
                prev.next = b
            prev = b
            self._by_ptr[ptr] = b
            if allocated:
                b.allocated = True
                bp.stats.on_alloc(bsize, requested)
                if bsize >= self._mss:
                    self._stats.oversize_allocations.increase()
            else:
                self._insert_free(b)
                if count_split:
                    bp.stats.on_inactive_split(1, bsize)
        if after is not None:
            assert prev is not None
            prev.next = after
            after.prev = prev

    def _carve_expandable_run(
        self: SimDeviceT,
        address: int,
        size: int,
        pool: BlockPool,
        stream: int,
        va_base: int | None,
        va_bytes: int | None,
    ) -> tuple[Segment, Block | None, Block | None]:
        """Make ``[address, address + size)`` a mapped hole in an unmapped block; returns its neighbours."""
        unmapped = None
        for k in pool.unmapped.irange(unmapped_key(stream, 0), unmapped_key(stream, address), inclusive=(True, True)):
            u = self._by_ptr[k & PTR_MASK]
            if u.ptr <= address and address + size <= u.ptr + u.size:
                unmapped = u
        if unmapped is None:
            page = self.settings.small_page_bytes if pool.is_small else self.settings.large_page_bytes
            base = address if va_base is None else va_base
            if base > address or (address - base) % ROUND_LARGE_BYTES:
                raise ValueError(f"va_base {base:#x} must be at or below {address:#x}, 2 MiB aligned to it")
            if (address - base) % page or size % page:
                page = ROUND_LARGE_BYTES  # the recording used another page size: keep its geometry
            cap = self.capacity_bytes
            va = va_bytes if va_bytes is not None else page * -(-(cap + cap // 8) // page)
            va = max(-(-va // page) * page, -(-(address + size - base) // page) * page)
            for other in self._segments.values():
                if base < other.address + other.size and other.address < base + va:
                    raise ValueError(f"expandable run {address:#x}+{size} overlaps segment {other.address:#x}")
            seg = self._new_segment(base, va, stream, pool, page_bytes=page)
            unmapped = Block(base, va, stream, pool, seg, mapped=False)
            self._by_ptr[base] = unmapped
            unmapped.key = unmapped_key(stream, base)
            pool.unmapped.add(unmapped.key)
        u = unmapped
        seg = u.seg
        if (address - seg.address) % seg.page_bytes or size % seg.page_bytes:
            raise ValueError(f"expandable run {address:#x}+{size} is not aligned to {seg.page_bytes}-byte pages")
        pool.unmapped.remove(u.key)
        del self._by_ptr[u.ptr]
        prev, after = u.prev, u.next
        if address > u.ptr:  # unmapped space before the run
            before = Block(u.ptr, address - u.ptr, stream, pool, seg, mapped=False)
            before.prev = prev
            if prev is not None:
                prev.next = before
            self._by_ptr[before.ptr] = before
            before.key = unmapped_key(stream, before.ptr)
            pool.unmapped.add(before.key)
            prev = before
        end = u.ptr + u.size
        if address + size < end:  # unmapped space after the run
            tail = Block(address + size, end - address - size, stream, pool, seg, mapped=False)
            tail.next = after
            if after is not None:
                after.prev = tail
            self._by_ptr[tail.ptr] = tail
            tail.key = unmapped_key(stream, tail.ptr)
            pool.unmapped.add(tail.key)
            after = tail
        return seg, prev, after


def _parse_seed_blocks(address: int, size: int, blocks: list[tuple[Any, ...]] | None) -> list[tuple[int, int, bool, int]]:
    """Validate seed block tuples; returns (ptr, size, allocated, requested) tiling the segment."""
    specs = blocks if blocks is not None else [(0, size, False)]
    offset = 0
    parsed = []
    for spec in specs:
        off, bsize, state = int(spec[0]), int(spec[1]), spec[2]
        requested = int(spec[3]) if len(spec) > 3 else (bsize if state not in (False, "inactive") else 0)
        if off != offset or bsize <= 0 or bsize % MIN_BLOCK_BYTES:
            raise ValueError(f"segment {address:#x}: blocks must tile it in order with sizes multiple of 512")
        parsed.append((address + off, bsize, state in (True, "active_allocated", "active_pending_free"), requested))
        offset += bsize
    if offset != size:
        raise ValueError(f"segment {address:#x}: blocks cover {offset} of {size} bytes")
    return parsed

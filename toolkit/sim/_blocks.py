"""Blocks and segments: the allocator's data model (docs/allocator.md §2.2).

A segment is one device allocation (or one expandable virtual-address reservation) carved into an
address-ordered doubly linked list of blocks. Plain ``__slots__`` classes: the simulator creates and
links millions of them, so they stay small and attribute access stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toolkit.sim._pools import BlockPool


class Segment:
    """One device allocation (``expandable=False``) or one expandable VA reservation."""

    __slots__ = ("address", "size", "stream", "pool", "reg", "regbits", "expandable", "page_bytes")

    def __init__(
        self,
        address: int,
        size: int,
        stream: int,
        pool: BlockPool,
        reg: int,
        expandable: bool = False,
        page_bytes: int = 0,
    ) -> None:
        self.address = address
        self.size = size  # bytes of the allocation (expandable: of the VA reservation)
        self.stream = stream
        self.pool = pool
        self.reg = reg  # registration order (newer CUDA best-fit tie-break)
        self.regbits = 0  # reg << 64 when the tie-break uses it, else 0 (see pools.free_key)
        self.expandable = expandable
        self.page_bytes = page_bytes  # expandable only: mapping granularity


class Block:
    """A contiguous piece of a segment: allocated, free (cached), pending free, or unmapped."""

    __slots__ = (
        "ptr",
        "size",
        "requested",
        "stream",
        "pool",
        "seg",
        "allocated",
        "mapped",
        "prev",
        "next",
        "event_count",
        "stream_uses",
        "gc_base",
        "key",
    )

    def __init__(self, ptr: int, size: int, stream: int, pool: BlockPool, seg: Segment, mapped: bool = True) -> None:
        self.ptr = ptr
        self.size = size
        self.requested = 0  # request of the last allocation served by this block (kept when freed)
        self.stream = stream
        self.pool = pool
        self.seg = seg
        self.allocated = False
        self.mapped = mapped
        self.prev: Block | None = None
        self.next: Block | None = None
        self.event_count = 0  # outstanding cross-stream events (pending free while > 0)
        self.stream_uses: dict[int, None] | None = None  # extra streams (ordered set) from record_stream
        self.gc_base = 0  # pool GC clock when (re)inserted into the free set
        self.key = 0  # current key in the pool's free (or unmapped) set

    @property
    def is_split(self) -> bool:
        return self.prev is not None or self.next is not None

    @property
    def state(self) -> str:
        """Snapshot vocabulary: ``active_allocated`` / ``active_pending_free`` / ``inactive``."""
        if self.allocated:
            return "active_allocated"
        if self.event_count or self.stream_uses:
            return "active_pending_free"
        return "inactive"

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Block(ptr={self.ptr:#x}, size={self.size}, {self.state}, mapped={self.mapped})"

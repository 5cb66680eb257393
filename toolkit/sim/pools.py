"""Free sets of one pool (small or large), ordered as the allocator's best-fit search needs.

Keys are single ints so that the sorted list compares machine-word-like integers instead of tuples:
``free`` orders by (stream, size, registration, ptr) — ``BlockComparatorSize`` — and ``unmapped`` by
(stream, ptr) — ``BlockComparatorAddress``. Field widths: ptr 64 bits, registration 32, size 64.
"""

from __future__ import annotations

from bisect import bisect_left

from sortedcontainers import SortedList

from toolkit.sim.stats import PoolStats

PTR_BITS = 64
REG_BITS = 32
SIZE_SHIFT = PTR_BITS + REG_BITS  # 96
STREAM_SHIFT = SIZE_SHIFT + 64  # 160
PTR_MASK = (1 << PTR_BITS) - 1


def free_key(stream: int, size: int, reg: int, ptr: int) -> int:
    """Best-fit key (stream, size, reg, ptr) packed into one int."""
    return (((stream << 64) | size) << SIZE_SHIFT) | (reg << PTR_BITS) | ptr


def search_key(stream: int, size: int) -> int:
    """Smallest key of (stream, size, *): the lower bound of a best-fit search."""
    return ((stream << 64) | size) << SIZE_SHIFT


def unmapped_key(stream: int, ptr: int) -> int:
    return (stream << PTR_BITS) | ptr


def ceiling(sl: SortedList, value: int) -> int | None:
    """Smallest element >= value, or None (``std::set::lower_bound``).

    Uses SortedList's documented-in-source layout (``_maxes`` / ``_lists``, stable since 2.0) to avoid
    building the positional index, which would make every later add/remove slower.
    """
    maxes = sl._maxes
    pos = bisect_left(maxes, value)
    if pos == len(maxes):
        return None
    sub = sl._lists[pos]
    return sub[bisect_left(sub, value)]


class BlockPool:
    """One pool's free blocks (``free``), unmapped expandable ranges (``unmapped``) and GC clock."""

    __slots__ = ("is_small", "name", "free", "unmapped", "gc_calls", "stats")

    def __init__(self, is_small: bool, stats: PoolStats) -> None:
        self.is_small = is_small
        self.stats = stats  # this pool's stat type (small_pool / large_pool)
        self.name = "small" if is_small else "large"
        self.free = SortedList()
        self.unmapped = SortedList()
        self.gc_calls = 0  # get_free_block calls while GC is active (block age = gc_calls - gc_base)

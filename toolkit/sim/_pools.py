"""Free sets of one pool (small or large), ordered as the allocator's best-fit search needs.

Keys are single ints so that the sorted list compares machine-word-like integers instead of tuples:
``free`` orders by (stream, size, registration, ptr) — ``BlockComparatorSize`` — and ``unmapped`` by
(stream, ptr) — ``BlockComparatorAddress``. Field widths: ptr 64 bits, registration 32, size 64.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain

try:  # the compiled twin reads the @cython.locals below (docs/performance.md); plain Python ignores them
    import cython
except ImportError:  # pragma: no cover - Cython not installed
    from toolkit import _cyshim as cython  # type: ignore[no-redef]

if not cython.compiled:  # compiled, _pools.pxd defines these three as inline C loops (same algorithm)
    from bisect import bisect_left as lower_bound, bisect_right as upper_bound, insort as insort_right

from toolkit.sim._stats import PoolStats

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


KEYSET_LOAD = 1000  # sortedcontainers' DEFAULT_LOAD_FACTOR: sublists hold 500..2000 keys


class KeySet:
    """A sorted set of int keys, in sublists of at most ``2 * KEYSET_LOAD`` with their maxima beside them.

    The layout and the split / join rules are sortedcontainers' ``SortedList`` (sortedlist.py ``add``,
    ``_expand``, ``_delete``, ``irange``), which the simulator used before; it is its own class because
    the allocator's hot path edits the sublists in place (``SimDevice.malloc`` takes a block's slot for
    its split remainder, ``key_replace_up`` a merged neighbour's), which SortedList only allowed through
    its private attributes, and because the compiled twin types it (``_pools.pxd``: the lists are read at
    a fixed offset, ``_len`` is a C integer). Only what the allocator needs: add, remove, membership,
    iteration in order and ``irange``.
    """

    __slots__ = ("_lists", "_maxes", "_len")

    def __init__(self, keys: Iterable[int] = ()) -> None:
        self._lists: list[list[int]] = []
        self._maxes: list[int] = []
        self._len = 0
        for k in keys:
            key_add(self, k)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[int]:
        return chain.from_iterable(self._lists)

    @cython.locals(pos=cython.Py_ssize_t, sub=list)
    def __contains__(self, key: object) -> bool:
        if not isinstance(key, int):
            return False
        pos = lower_bound(self._maxes, key)
        if pos == len(self._maxes):
            return False
        sub = self._lists[pos]
        return sub[lower_bound(sub, key)] == key

    def __repr__(self) -> str:
        return f"KeySet({list(self)!r})"

    def add(self, key: int) -> None:
        key_add(self, key)

    def remove(self, key: int) -> None:
        key_remove(self, key)

    @cython.locals(lo_pos=cython.Py_ssize_t, lo_idx=cython.Py_ssize_t, hi_pos=cython.Py_ssize_t,
                   hi_idx=cython.Py_ssize_t, p=cython.Py_ssize_t, i=cython.Py_ssize_t, maxes=list, lists=list, sub=list)
    def irange(self, minimum: int | None = None, maximum: int | None = None,
               inclusive: tuple[bool, bool] = (True, True), reverse: bool = False) -> Iterator[int]:
        """Keys between ``minimum`` and ``maximum`` in order (``SortedList.irange``: same bounds and flags).

        A generator: the set must not change while it is iterated (the allocator never does that)."""
        maxes = self._maxes
        lists = self._lists
        if not maxes:
            return
        if minimum is None:  # first (pos, idx) inside the range
            lo_pos = lo_idx = 0
        elif inclusive[0]:
            lo_pos = lower_bound(maxes, minimum)
            if lo_pos == len(maxes):
                return
            lo_idx = lower_bound(lists[lo_pos], minimum)
        else:
            lo_pos = upper_bound(maxes, minimum)
            if lo_pos == len(maxes):
                return
            lo_idx = upper_bound(lists[lo_pos], minimum)
        if maximum is None:  # first (pos, idx) past the range
            hi_pos = len(maxes) - 1
            hi_idx = len(lists[hi_pos])
        else:
            hi_pos = upper_bound(maxes, maximum) if inclusive[1] else lower_bound(maxes, maximum)
            if hi_pos == len(maxes):
                hi_pos -= 1
                hi_idx = len(lists[hi_pos])
            elif inclusive[1]:
                hi_idx = upper_bound(lists[hi_pos], maximum)
            else:
                hi_idx = lower_bound(lists[hi_pos], maximum)
        if lo_pos > hi_pos:
            return
        if reverse:
            for p in range(hi_pos, lo_pos - 1, -1):
                sub = lists[p]
                for i in range((hi_idx if p == hi_pos else len(sub)) - 1, (lo_idx if p == lo_pos else 0) - 1, -1):
                    yield sub[i]
        else:
            for p in range(lo_pos, hi_pos + 1):
                sub = lists[p]
                for i in range(lo_idx if p == lo_pos else 0, hi_idx if p == hi_pos else len(sub)):
                    yield sub[i]


@cython.locals(ks=KeySet, pos=cython.Py_ssize_t, maxes=list, sub=list)
def ceiling(ks: KeySet, value: int) -> int | None:
    """Smallest key >= value, or None (``std::set::lower_bound``)."""
    maxes = ks._maxes
    pos = lower_bound(maxes, value)
    if pos == len(maxes):
        return None
    sub = ks._lists[pos]
    return sub[lower_bound(sub, value)]


def _split(lists: list[list[int]], maxes: list[int], pos: int) -> None:
    """Split the over-long sublist ``lists[pos]`` in two of ``KEYSET_LOAD`` and the rest (``SortedList._expand``)."""
    sub = lists[pos]
    half = sub[KEYSET_LOAD:]
    del sub[KEYSET_LOAD:]
    maxes[pos] = sub[-1]
    lists.insert(pos + 1, half)
    maxes.insert(pos + 1, half[-1])


@cython.locals(ks=KeySet, pos=cython.Py_ssize_t, maxes=list, lists=list, sub=list)
def key_add(ks: KeySet, key: int) -> None:
    """Insert ``key`` (not present); a sublist longer than twice the load splits in two (``_expand``)."""
    maxes = ks._maxes
    lists = ks._lists
    ks._len += 1
    if not maxes:
        lists.append([key])
        maxes.append(key)
        return
    pos = upper_bound(maxes, key)
    if pos == len(maxes):
        pos -= 1
        sub = lists[pos]
        sub.append(key)
        maxes[pos] = key
    else:
        sub = lists[pos]
        insort_right(sub, key)
    if len(sub) > KEYSET_LOAD << 1:
        _split(lists, maxes, pos)


@cython.locals(ks=KeySet, pos=cython.Py_ssize_t, idx=cython.Py_ssize_t, maxes=list, sub=list)
def key_remove(ks: KeySet, key: int) -> None:
    """Delete ``key``; ValueError when it is not there (``SortedList.remove``)."""
    maxes = ks._maxes
    pos = lower_bound(maxes, key)
    if pos < len(maxes):
        sub = ks._lists[pos]
        idx = lower_bound(sub, key)
        if sub[idx] == key:
            key_delete_at(ks, pos, idx)
            return
    raise ValueError(f"{key} not in the key set")


@cython.locals(ks=KeySet, pos=cython.Py_ssize_t, idx=cython.Py_ssize_t, prev=cython.Py_ssize_t, maxes=list,
               lists=list, sub=list, joined=list)
def key_delete_at(ks: KeySet, pos: int, idx: int) -> None:
    """Delete the key at ``_lists[pos][idx]``; a sublist shorter than half the load joins its neighbour
    (sortedcontainers' ``SortedList._delete``, whose sublist layout this keeps)."""
    maxes = ks._maxes
    lists = ks._lists
    sub = lists[pos]
    del sub[idx]
    ks._len -= 1
    if len(sub) > KEYSET_LOAD >> 1:
        maxes[pos] = sub[-1]
    elif len(lists) > 1:
        if not pos:
            pos += 1
        prev = pos - 1
        joined = lists[prev]
        joined.extend(lists[pos])
        maxes[prev] = joined[-1]
        del lists[pos]
        del maxes[pos]
        if len(joined) > KEYSET_LOAD << 1:
            _split(lists, maxes, prev)
    elif sub:
        maxes[pos] = sub[-1]
    else:
        del lists[pos]
        del maxes[pos]


@cython.locals(ks=KeySet, pos=cython.Py_ssize_t, idx=cython.Py_ssize_t, maxes=list, lists=list, sub=list)
def key_replace_up(ks: KeySet, old: int, new: int) -> None:
    """Remove ``old`` (present) and add ``new > old``: in place when ``new`` sorts into ``old``'s slot.

    A freed block that absorbs a free neighbour keeps the neighbour's place in the free set whenever no
    other key lies between the two (no bisect of the insert, no memmove).
    """
    maxes = ks._maxes
    pos = lower_bound(maxes, old)
    lists = ks._lists
    sub = lists[pos]
    idx = lower_bound(sub, old)
    if idx + 1 < len(sub):
        if new < sub[idx + 1]:
            sub[idx] = new
            return
    elif pos + 1 == len(lists) or new < lists[pos + 1][0]:
        sub[idx] = new
        maxes[pos] = new
        return
    key_delete_at(ks, pos, idx)
    key_add(ks, new)


class BlockPool:
    """One pool's free blocks (``free``), unmapped expandable ranges (``unmapped``) and GC clock."""

    __slots__ = ("is_small", "name", "free", "unmapped", "gc_calls", "stats")

    def __init__(self, is_small: bool, stats: PoolStats) -> None:
        self.is_small = is_small
        self.stats = stats  # this pool's stat type (small_pool / large_pool)
        self.name = "small" if is_small else "large"
        self.free = KeySet()
        self.unmapped = KeySet()
        self.gc_calls = 0  # get_free_block calls while GC is active (block age = gc_calls - gc_base)

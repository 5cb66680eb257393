"""Free sets of one pool (small or large), ordered as the allocator's best-fit search needs.

Keys are single ints so that the sorted list compares machine-word-like integers instead of tuples:
``free`` orders by (stream, size, registration, ptr) — ``BlockComparatorSize`` — and ``unmapped`` by
(stream, ptr) — ``BlockComparatorAddress``. Field widths: ptr 64 bits, registration 32, size 64.
"""

from __future__ import annotations

from sortedcontainers import SortedList

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


@cython.locals(pos=cython.Py_ssize_t, maxes=list, sub=list)
def ceiling(sl: SortedList, value: int) -> int | None:
    """Smallest element >= value, or None (``std::set::lower_bound``).

    Uses SortedList's documented-in-source layout (``_maxes`` / ``_lists``, stable since 2.0) to avoid
    building the positional index, which would make every later add/remove slower.
    """
    maxes = sl._maxes
    pos = lower_bound(maxes, value)
    if pos == len(maxes):
        return None
    sub = sl._lists[pos]
    return sub[lower_bound(sub, value)]


class KeySet(SortedList):
    """A ``SortedList`` of packed int keys whose layout the device's hot path edits in place.

    ``SimDevice.malloc`` / ``free`` insert and delete keys straight in ``_lists`` / ``_maxes`` (and keep
    ``_len``) when the touched sublist stays between half and twice the load factor, and call
    ``add`` / ``remove`` otherwise (splits and merges). That is only sound while the positional index
    (``_index``) is empty, so positional access is refused: the allocator never needs it (best fit is
    a lower bound, the releases are ``irange`` walks).
    """

    def _build_index(self) -> None:
        raise TypeError("KeySet has no positional index (the simulator's hot path edits its sublists in place)")


# KeySet in-place edit bounds: SortedList splits a sublist longer than 2 x load and merges one shorter
# than load / 2 (sortedcontainers sortedlist.py ``_expand`` / ``_delete``); inside them only
# ``_lists``, ``_maxes`` and ``_len`` change.
KEYSET_ADD_MAX = SortedList.DEFAULT_LOAD_FACTOR << 1  # insert in place while the sublist is shorter
KEYSET_DEL_MIN = (SortedList.DEFAULT_LOAD_FACTOR >> 1) + 1  # delete in place while it is longer


@cython.locals(pos=cython.Py_ssize_t, maxes=list, sub=list)
def key_add(ks: KeySet, key: int) -> None:
    """``ks.add(key)`` without the method-call chain when no sublist splits (the allocator's hot path)."""
    maxes = ks._maxes
    if maxes:
        pos = upper_bound(maxes, key)
        if pos == len(maxes):
            sub = ks._lists[pos - 1]
            if len(sub) < KEYSET_ADD_MAX:
                sub.append(key)
                maxes[pos - 1] = key
                ks._len += 1
                return
        else:
            sub = ks._lists[pos]
            if len(sub) < KEYSET_ADD_MAX:
                insort_right(sub, key)
                ks._len += 1
                return
    else:  # the empty set: SortedList.add's own else branch
        ks._lists.append([key])
        maxes.append(key)
        ks._len += 1
        return
    ks.add(key)


@cython.locals(pos=cython.Py_ssize_t, idx=cython.Py_ssize_t, maxes=list, sub=list)
def key_remove(ks: KeySet, key: int) -> None:
    """``ks.remove(key)`` (key must be present) without the call chain when no sublists merge."""
    maxes = ks._maxes
    pos = lower_bound(maxes, key)
    sub = ks._lists[pos]
    if len(sub) > KEYSET_DEL_MIN or (len(maxes) == 1 and len(sub) > 1):
        idx = lower_bound(sub, key)
        if sub[idx] == key:
            del sub[idx]
            maxes[pos] = sub[-1]
            ks._len -= 1
            return
    elif len(maxes) == 1 and len(sub) == 1 and sub[0] == key:  # the set empties: SortedList._delete's last branch
        del ks._lists[0]
        del maxes[0]
        ks._len -= 1
        return
    ks.remove(key)


@cython.locals(pos=cython.Py_ssize_t, idx=cython.Py_ssize_t, maxes=list, lists=list, sub=list)
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
    key_remove(ks, old)
    key_add(ks, new)


class BlockPool:
    """One pool's free blocks (``free``), unmapped expandable ranges (``unmapped``) and GC clock."""

    __slots__ = ("is_small", "name", "free", "unmapped", "gc_calls", "stats")

    def __init__(self, is_small: bool, stats: PoolStats) -> None:
        self.is_small = is_small
        self.stats = stats  # this pool's stat type (small_pool / large_pool)
        self.name = "small" if is_small else "large"
        self.free = KeySet()
        self.unmapped = SortedList()
        self.gc_calls = 0  # get_free_block calls while GC is active (block age = gc_calls - gc_base)

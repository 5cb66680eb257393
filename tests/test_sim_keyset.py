"""The free sets' KeySet (toolkit/sim/_pools.py) against a plain sorted list, through splits and joins.

KeySet keeps sortedcontainers' sublist layout (sublists of KEYSET_LOAD/2 .. 2*KEYSET_LOAD keys); the
allocator's hot path edits it in place, so every edit path is checked here: add, remove, delete at a
known slot, replace-up, the lookups (ceiling, membership, irange with every flag) and the layout itself.
"""

from __future__ import annotations

import bisect
import random

import pytest

from toolkit.sim._pools import KEYSET_LOAD, KeySet, ceiling, key_add, key_delete_at, key_remove, key_replace_up


def _check_layout(ks: KeySet, ref: list[int]) -> None:
    assert list(ks) == ref and len(ks) == len(ref)
    assert ks._maxes == [sub[-1] for sub in ks._lists]
    assert all(sub for sub in ks._lists)
    assert all(len(sub) <= 2 * KEYSET_LOAD for sub in ks._lists)
    if len(ks._lists) > 1:  # only a lone sublist may be short: a shorter one joins its neighbour
        assert all(len(sub) > KEYSET_LOAD >> 1 for sub in ks._lists)


def _irange_ref(ref: list[int], lo: int | None, hi: int | None, inc: tuple[bool, bool], rev: bool) -> list[int]:
    out = [k for k in ref if (lo is None or (k >= lo if inc[0] else k > lo)) and
           (hi is None or (k <= hi if inc[1] else k < hi))]
    return out[::-1] if rev else out


def test_keyset_follows_a_sorted_list_through_splits_and_joins() -> None:
    rng = random.Random(7)
    ks, ref = KeySet(), []
    for step in range(30_000):
        r = rng.random()
        grow = step < 15_000
        if not ref or r < (0.7 if grow else 0.3):
            k = rng.randrange(1 << 170)  # keys as wide as the allocator's (stream, size, reg, ptr)
            if k in ks:
                continue
            key_add(ks, k)
            bisect.insort(ref, k)
        elif r < 0.85:
            k = ref.pop(rng.randrange(len(ref)))
            key_remove(ks, k)
        elif r < 0.95:
            i = rng.randrange(len(ref))
            old = ref[i]
            new = old + rng.randrange(1, 1 << 100)
            if new in ks:
                continue
            key_replace_up(ks, old, new)
            ref.pop(i)
            bisect.insort(ref, new)
        else:
            i = rng.randrange(len(ref))
            k = ref.pop(i)
            pos = bisect.bisect_left(ks._maxes, k)
            key_delete_at(ks, pos, bisect.bisect_left(ks._lists[pos], k))
        if step % 997 == 0:
            _check_layout(ks, ref)
            probe = rng.randrange(1 << 170)
            j = bisect.bisect_left(ref, probe)
            assert ceiling(ks, probe) == (ref[j] if j < len(ref) else None)
            assert (probe in ks) == (j < len(ref) and ref[j] == probe)
            if ref:
                assert ref[j if j < len(ref) else -1] in ks
    assert len(ks._lists) > 2, "the split path was not exercised"
    _check_layout(ks, ref)
    while ref:  # empty it again: the joins down to one sublist and the last key
        key_remove(ks, ref.pop(rng.randrange(len(ref))))
    _check_layout(ks, ref)
    assert ks._lists == [] and ks._maxes == [] and not ks


def test_keyset_grew_past_one_sublist() -> None:
    ks = KeySet(range(0, 10 * KEYSET_LOAD, 2))
    assert len(ks._lists) > 2, "the split path was not exercised"
    _check_layout(ks, list(range(0, 10 * KEYSET_LOAD, 2)))


@pytest.mark.parametrize("reverse", [False, True])
def test_irange_matches_sortedlist_semantics(reverse: bool) -> None:
    rng = random.Random(11)
    ref = sorted(rng.sample(range(100_000), 5000))
    ks = KeySet(ref)
    bounds = [None, -1, 0, ref[0], ref[17], ref[2500], ref[-1], 50_000, 100_001]
    for lo in bounds:
        for hi in bounds:
            for inc in ((True, True), (True, False), (False, True), (False, False)):
                got = list(ks.irange(lo, hi, inclusive=inc, reverse=reverse))
                assert got == _irange_ref(ref, lo, hi, inc, reverse), (lo, hi, inc)
    assert list(KeySet().irange(1, 5)) == []


def test_remove_of_a_missing_key_is_a_valueerror() -> None:
    ks = KeySet([1, 5, 9])
    with pytest.raises(ValueError, match="not in the key set"):
        ks.remove(4)
    with pytest.raises(ValueError, match="not in the key set"):
        ks.remove(10)
    ks.remove(5)
    assert list(ks) == [1, 9] and repr(ks) == "KeySet([1, 9])"

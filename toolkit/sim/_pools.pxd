# Compiled twin (docs/performance.md): KeySet and BlockPool become extension types with the same attributes.
cimport cython
from toolkit.sim._stats cimport PoolStats

cdef class KeySet:
    cdef public list _lists, _maxes
    cdef public Py_ssize_t _len

cdef class BlockPool:
    cdef public object is_small, name, gc_calls
    cdef public KeySet free, unmapped
    cdef public PoolStats stats

# The free-set edits are called from device.malloc/free as C functions (no Python call); still callable from Python.
cpdef ceiling(KeySet ks, value)
cpdef key_add(KeySet ks, key)
cpdef key_remove(KeySet ks, key)
cpdef key_delete_at(KeySet ks, Py_ssize_t pos, Py_ssize_t idx)
cpdef key_replace_up(KeySet ks, old, new)


# bisect_left / bisect_right / insort over one sorted list of keys, as C loops (plain Python: _pools.py imports
# the stdlib's). Called through the stdlib, each bisect is a Python call that boxes its index; these are not.
# Same algorithm as Modules/_bisectmodule.c (internal_bisect_left / internal_bisect_right).
@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline Py_ssize_t lower_bound(list a, object x) except -1:
    cdef Py_ssize_t lo = 0, hi = len(a), mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline Py_ssize_t upper_bound(list a, object x) except -1:
    cdef Py_ssize_t lo = 0, hi = len(a), mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if x < a[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


cdef inline int insort_right(list a, object x) except -1:
    a.insert(upper_bound(a, x), x)
    return 0

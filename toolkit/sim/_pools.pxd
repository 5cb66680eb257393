# Compiled twin (docs/performance.md): BlockPool becomes an extension type with the same attributes.
from toolkit.sim._stats cimport PoolStats

cdef class BlockPool:
    cdef public object is_small, name, free, unmapped, gc_calls
    cdef public PoolStats stats

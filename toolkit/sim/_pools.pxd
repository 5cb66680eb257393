# Compiled twin (docs/performance.md): BlockPool becomes an extension type with the same attributes.
from toolkit.sim._stats cimport PoolStats

cdef class BlockPool:
    cdef public object is_small, name, free, unmapped, gc_calls
    cdef public PoolStats stats

# The free-set edits are called from device.malloc/free as C functions (no Python call); still callable from Python.
cpdef ceiling(sl, value)
cpdef key_add(ks, key)
cpdef key_remove(ks, key)
cpdef key_replace_up(ks, old, new)

# Compiled twin (docs/performance.md): Segment and Block become extension types with the same attributes,
# so the hot path reads them at a fixed offset instead of through a dict lookup. The .py is unchanged.
from toolkit.sim._pools cimport BlockPool

cdef class Segment:
    cdef public object address, size, stream, reg, regbits, expandable, page_bytes
    cdef public BlockPool pool

cdef class Block:
    cdef public object ptr, size, requested, stream, allocated, mapped
    cdef public object event_count, stream_uses, gc_base, key
    cdef public BlockPool pool
    cdef public Segment seg
    cdef public Block prev, next

# Compiled twin (docs/performance.md): Segment and Block become extension types with the same attributes,
# so the hot path reads them at a fixed offset instead of through a dict lookup. The .py is unchanged.
cdef class Segment:
    cdef public object address, size, stream, pool, reg, regbits, expandable, page_bytes

cdef class Block:
    cdef public object ptr, size, requested, stream, pool, seg, allocated, mapped, prev, next
    cdef public object event_count, stream_uses, gc_base, key

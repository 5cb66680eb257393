# Compiled twin (docs/performance.md): the types device.py's @cython.locals name.
from toolkit.sim._blocks cimport Block, Segment
from toolkit.sim._pools cimport BlockPool, KeySet, ceiling, key_add, key_delete_at, key_remove, key_replace_up
from toolkit.sim._stats cimport AllPeaks, PoolStats

cdef class _DeviceCore:
    # every attribute SimDevice.__init__ sets with a leading underscore
    cdef public object _rt, _seg_va, _ws_va, _segment_address, _addresses, _ws_addresses, _stats, _all
    cdef public object _small, _large, _reg, _reserved_total, _ws, _events
    cdef public dict _by_ptr, _segments
    cdef public object _num_events, _trace, _clock, _pad, _divisions, _mss, _mnsr, _expandable
    cdef public object _regbits, _lazy_reclaim, _align, _allowed, _gc_active

from toolkit.sim._pools cimport lower_bound

cpdef _return_block(_DeviceCore self, Block b)
cpdef _fit(_DeviceCore self, BlockPool pool, stream, size, Block b, take)

# Compiled twin (docs/performance.md): the stat holders become extension types with the same attributes,
# their numbers C long longs (bytes and counts of one device stay far below 2**63), so the device's hot path
# updates them without allocating an int object per step. Python reads and writes them as ints.
cdef class AllPeaks:
    cdef public long long allocation, segment, active, inactive_split, allocated_bytes, reserved_bytes, active_bytes, inactive_split_bytes, requested_bytes

cdef class PoolStats:
    cdef public long long allocation_cur, allocation_peak, allocation_freed, allocation_base
    cdef public long long segment_cur, segment_peak, segment_freed, segment_base
    cdef public long long active_cur, active_peak, active_freed, active_base
    cdef public long long inactive_split_cur, inactive_split_peak, inactive_split_freed, inactive_split_base
    cdef public long long allocated_bytes_cur, allocated_bytes_peak, allocated_bytes_freed, allocated_bytes_base
    cdef public long long reserved_bytes_cur, reserved_bytes_peak, reserved_bytes_freed, reserved_bytes_base
    cdef public long long active_bytes_cur, active_bytes_peak, active_bytes_freed, active_bytes_base
    cdef public long long inactive_split_bytes_cur, inactive_split_bytes_peak, inactive_split_bytes_freed, inactive_split_bytes_base
    cdef public long long requested_bytes_cur, requested_bytes_peak, requested_bytes_freed, requested_bytes_base
    cdef public PoolStats other
    cdef public AllPeaks peaks
    # called by the device as C methods (no attribute lookup, no Python call)
    cpdef on_alloc(self, long long size, long long requested)
    cpdef on_inactive_split(self, long long count, long long nbytes)
    cpdef on_reserved(self, nbytes, segments)

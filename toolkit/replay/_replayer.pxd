# Compiled twin (docs/performance.md): the types replay_events' @cython.locals name (device.pxd cimports them).
from cpython cimport array
from toolkit.sim.device cimport Block, PoolStats


# One timeline row (event, allocated, reserved, inactive split, segments) appended to the flat int64 array
# as five C stores; plain Python packs it with struct and calls array.frombytes (the same bytes).
cdef inline int put_row(array.array rows, long long i, long long a, long long r, long long s, long long g) except -1:
    cdef Py_ssize_t n = len(rows)
    cdef long long* p
    array.resize_smart(rows, n + 5)
    p = rows.data.as_longlongs + n
    p[0] = i
    p[1] = a
    p[2] = r
    p[3] = s
    p[4] = g
    return 0

# Compiled twin (docs/performance.md): the types replay_events' @cython.locals name (device.pxd cimports them).
from toolkit.sim.device cimport Block, PoolStats

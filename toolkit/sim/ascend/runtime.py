"""The Ascend runtime calls torch_npu makes for device memory, routed to the simulated driver.

* ``aclrtMallocAlign32(size, policy)`` -> ``rtMalloc`` -> ``halMemAlloc`` on huge or normal pages
  (hicann/runtime ``src/runtime/driver/npu_driver_mem.cc``, commit 681ef7610df13c8128982901142a2c869ddbb53e):
  devmm heaps with their cache (``toolkit.sim.ascend.devmm``).
* ``aclrtMallocPhysical`` / ``aclrtFreePhysical`` -> ``halMemCreate`` / ``halMemRelease``
  (npu_driver_mem.cc:374-398): a physical handle, no heap and no cache. Expandable segments use these;
  ``aclrtReserveMemAddress`` / ``aclrtMapMem`` / ``aclrtUnmapMem`` only move virtual addresses.
* ``aclrtGetMemInfo``: free = capacity - everything mapped (cached chunks included) - fixed consumers.

And torch_npu's choice of policy (Ascend/pytorch master 9e73e708ab9350d203475609f36f8a43f6a0c2ab):
segments ``ACL_MEM_MALLOC_HUGE_FIRST``, or ``HUGE1G_ONLY`` for large-pool segments with ``page_size:1g``
(``NPUCachingAllocator.cpp:3003-3005``), falling back to ``HUGE_FIRST`` when 1 GiB pages fail
(``AclInterface.cpp``, ``AclrtMallocAlign32``); workspace blocks ``HUGE_ONLY`` (``NPUWorkspaceAllocator.cpp:141-144``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from toolkit.sim.ascend.devmm import Devmm, DriverOutOfMemory, HeapStats, PhysicalMemory

Policy = Literal["HUGE_FIRST", "HUGE_ONLY", "NORMAL_ONLY", "HUGE1G_ONLY"]

# HUGE_PAGE_MEM_CRITICAL_VALUE = 1M: src/runtime/driver/npu_driver_base.hpp:249. HUGE_FIRST asks for huge
# pages only above it (npu_driver_mem.cc:1038-1057).
HUGE_PAGE_CRITICAL_BYTES = 1 << 20


class AscendRuntime:
    """One device's runtime + driver memory, in bytes. Addresses are the driver's virtual addresses.

    Args:
        capacity_bytes: device HBM (``aclrtGetMemInfo`` total).
        fixed_bytes: () -> bytes used outside devmm's heaps (ACL context, HCCL buffers, other processes).
        giant_capacity_bytes: 1 GiB pages reserved on the host (None: as much as the device has).
    """

    def __init__(self, capacity_bytes: int, fixed_bytes: Callable[[], int],
                 giant_capacity_bytes: int | None = None) -> None:
        self.phys = PhysicalMemory(capacity_bytes, fixed_bytes, giant_capacity_bytes)
        self.devmm = Devmm(self.phys)
        self.num_malloc_failures = 0
        self.num_huge_fallbacks = 0  # HUGE_FIRST requests served on normal pages
        self.num_giant_fallbacks = 0  # HUGE1G_ONLY requests retried as HUGE_FIRST by torch_npu

    # -- aclrtMallocAlign32 / aclrtFree ---------------------------------------------------------------------
    def malloc(self, size: int, policy: Policy = "HUGE_FIRST") -> int | None:
        """``aclrtMallocAlign32``: the address, or None on ACL_ERROR_RT_MEMORY_ALLOCATION."""
        d = self.devmm
        try:
            if policy == "HUGE1G_ONLY":  # MEM_PAGE_GIANT: npu_driver_mem.cc:976-978 -> base heap (devmm_svm.c:361)
                return d.alloc(size, "huge", giant=True)
            if policy == "HUGE_ONLY":  # npu_driver_mem.cc:1066-1068
                return d.alloc(size, "huge")
            if policy == "NORMAL_ONLY" or size <= HUGE_PAGE_CRITICAL_BYTES:  # npu_driver_mem.cc:1055-1057
                return d.alloc(size, "normal")
            try:  # HUGE_FIRST above 1 MiB: huge pages, then normal pages (npu_driver_mem.cc:1038-1054)
                return d.alloc(size, "huge")
            except DriverOutOfMemory:
                va = d.alloc(size, "normal")
                self.num_huge_fallbacks += 1
                return va
        except DriverOutOfMemory:
            self.num_malloc_failures += 1
            return None

    def torch_segment_malloc(self, size: int, page_1g: bool) -> int | None:
        """torch_npu's segment allocation: HUGE1G_ONLY with ``page_size:1g`` (large pool), falling back to
        HUGE_FIRST (``AclrtMallocAlign32`` in torch_npu ``AclInterface.cpp``), else HUGE_FIRST."""
        if page_1g:
            va = self.malloc(size, "HUGE1G_ONLY")
            if va is not None:
                return va
            self.num_giant_fallbacks += 1
        return self.malloc(size, "HUGE_FIRST")

    def free(self, va: int) -> int:
        """``aclrtFree``; returns the bytes the driver gave back (0: the chunk stays in devmm's cache)."""
        return self.devmm.free(va)

    # -- aclrtMallocPhysical / aclrtFreePhysical (expandable segments) --------------------------------------
    def malloc_physical(self, nbytes: int, huge1g: bool = False) -> bool:
        """``aclrtMallocPhysical`` -> ``halMemCreate`` (npu_driver_mem.cc:374-398): no devmm heap, no cache."""
        phys = self.phys
        if not phys.can_map(nbytes, huge1g):
            self.num_malloc_failures += 1
            return False
        phys.handle_bytes += nbytes
        if huge1g:
            phys.giant_bytes += nbytes
        return True

    def free_physical(self, nbytes: int, huge1g: bool = False) -> None:
        """``aclrtFreePhysical`` -> ``halMemRelease``: the pages go back at once."""
        self.phys.handle_bytes -= nbytes
        if huge1g:
            self.phys.giant_bytes -= nbytes

    # -- queries -------------------------------------------------------------------------------------------
    @property
    def used_bytes(self) -> int:
        """Device used as ``aclrtGetMemInfo`` reports it: mapped (cached included) + fixed."""
        return self.phys.used_bytes

    @property
    def mapped_bytes(self) -> int:
        return self.phys.mapped_bytes

    @property
    def cached_bytes(self) -> int:
        """Bytes in devmm's heap caches."""
        return self.devmm.cached_bytes

    def mem_get_info(self) -> tuple[int, int]:
        """``aclrtGetMemInfo(ACL_HBM_MEM)``: (free, total)."""
        cap = self.phys.capacity_bytes
        return max(cap - self.used_bytes, 0), cap

    def heaps(self) -> list[HeapStats]:
        return self.devmm.heaps()

    def advance(self, seconds: float) -> None:
        self.devmm.advance(seconds)

"""The Ascend driver's device-memory manager (devmm, SVM v2), as far as torch_npu's memory goes through it.

``aclrtMallocAlign32`` ends in ``halMemAlloc``, which carves device memory out of 1 GiB *heaps* of
virtual address space and maps physical pages into them. When a chunk of 36 MiB or less (huge-page
heaps; 18 MiB on normal-page heaps) is freed, devmm keeps it mapped in the heap's *cache* and hands it
out again to later requests; the physical memory stays in use. That is why, on Ascend, memory torch
frees can stay "used" although it is no longer "reserved" (docs/ascend-memory-stack.md).

Every rule below carries the file and line it came from. Sources: hicann/driver at commit
ef377e950a32b1641c108c59481e39e9643b7d63, directory ``src/ascend_hal/svm/v2/devmm/`` (paths below are
relative to it unless they start with ``src/``). Simplifications (stated, not hidden): one process, one
device, device HBM only; node bookkeeping memory, read-only and DVPP heaps are not modelled.

Pure Python, no torch; touched only when torch_npu allocates or frees a whole segment.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

MiB = 1 << 20
GiB = 1 << 30

# -- constants ------------------------------------------------------------------------------------------
HEAP_BYTES = 1 * GiB  # DEVMM_HEAP_SIZE = 1 << 30: src/sdk_driver/svm/v2/command/ioctl/svm_define.h:117-118
# "if alloc size larger than half heap size, alloc mem form base heap": src/ascend_hal/svm/v2/common/
# devmm_svm.h:46 (DEVMM_LARGE_MEM_THRESHOLD_SIZE = 512M); devmm_svm.c:354-361, :407-412 (strictly greater)
LARGE_MEM_THRESHOLD_BYTES = HEAP_BYTES // 2
HUGE_CACHE_THRES_BYTES = 0x2400000  # 36 MiB, DEVMM_CACHE_MIN_THRES_SIZE: devmm_virt_com_heap.h:34
NORMAL_CACHE_THRES_BYTES = 0x1200000  # 18 MiB, DEVMM_CACHE_COMM_THRES_SIZE: devmm_virt_com_heap.h:35
SHRINK_HEADROOM_BYTES = 0x8000000  # "128M more": devmm_virt_com_heap.c:559-560
MAP_ALIGN_BYTES = 0x200000  # DEVMM_MAP_ALIGN_SIZE 2M: devmm_virt_com_heap.h:21; kernel page size of device
# heaps: devmm_virt_interface.c:1233-1238
HUGE_CHUNK_BYTES = 2 * MiB  # chunk (page) size of huge-page heaps = mgmt->huge_page_size: devmm_virt_interface.c:1209-1210
NORMAL_CHUNK_BYTES = 4096  # DEVMM_DEV_PAGE_SIZE for SUB_DEVICE_TYPE normal heaps: devmm_virt_interface.c:1213-1214
GIANT_PAGE_BYTES = 1 * GiB  # MEM_PAGE_GIANT (1G pages) physical granularity: devmm_virt_base_heap.c:191-193
SEG_THRES_BYTES = 4096  # DEVMM_SEG_THRES_SIZE: devmm_virt_com_heap.h:39
SEG_THRES_PERCENT = 20  # DEVMM_SEG_THRES_PERCENT: devmm_virt_com_heap.h:40
POOL_DESTROY_THRESHOLD = 1  # DEVMM_POOL_DESTROY_THREADHOLD: devmm_virt_interface.h:30; used at devmm_virt_interface.c:1114
PEAK_DECAY_SECONDS = 1  # "(cur_time - last_time) > 1": devmm_virt_com_heap.c:1234

PageKind = Literal["huge", "normal"]


class DriverOutOfMemory(Exception):
    """``halMemAlloc`` / ``halMemCreate`` could not get physical memory (DEVMM_OUT_OF_PHYS_MEM)."""


class PhysicalMemory:
    """Device HBM as the kernel sees it: one pool; every mapped byte is "used" in ``aclrtGetMemInfo``.

    ``fixed_bytes`` is memory held outside devmm's heaps (ACL context, HCCL buffers, other processes):
    a callable so the device can change it at any time without telling the driver.
    """

    __slots__ = (
        "capacity_bytes",
        "fixed_bytes",
        "giant_bytes",
        "giant_capacity_bytes",
        "handle_bytes",
        "heap_bytes",
        "primary_bytes",
    )

    def __init__(self, capacity_bytes: int, fixed_bytes: object, giant_capacity_bytes: int | None = None) -> None:
        self.capacity_bytes = int(capacity_bytes)
        self.fixed_bytes = fixed_bytes  # () -> int
        self.heap_bytes = 0  # mapped in 1 GiB heaps (live + cached)
        self.primary_bytes = 0  # whole "primary" heaps of allocations > 512 MiB or on 1 GiB pages
        self.handle_bytes = 0  # halMemCreate handles (aclrtMallocPhysical: expandable segments)
        self.giant_bytes = 0  # of the above, on 1 GiB pages
        # 1 GiB pages must be reserved on the host beforehand (torch_npu AclInterface.cpp warning text);
        # None: as many as the device has
        self.giant_capacity_bytes = giant_capacity_bytes

    @property
    def mapped_bytes(self) -> int:
        return self.heap_bytes + self.primary_bytes + self.handle_bytes

    @property
    def used_bytes(self) -> int:
        return self.mapped_bytes + self.fixed_bytes()  # type: ignore[operator]

    def can_map(self, nbytes: int, giant: bool = False) -> bool:
        if giant and self.giant_capacity_bytes is not None and self.giant_bytes + nbytes > self.giant_capacity_bytes:
            return False
        return self.used_bytes + nbytes <= self.capacity_bytes


class Node:
    """One rbtree node of a heap: a VA range inside one mapped chunk (``devmm_rbtree_node.data``)."""

    __slots__ = ("chunk", "seq", "size", "total", "va")

    def __init__(self, va: int, size: int, chunk: int, total: int, seq: int) -> None:
        self.va = va
        self.size = size
        self.chunk = chunk  # VA of the chunk's first node (DEVMM_NODE_FIRST_VA_FLG: devmm_virt_com_heap.h:44)
        self.total = total  # data.total: the mapped chunk's size, kept by every piece split from it
        self.seq = seq  # insertion order among equal sizes (multi_rbtree list order)


@dataclass(slots=True)
class HeapStats:
    """What ``Cached_size`` in the driver's allocation-failure log would show, per heap (for views)."""

    start: int
    page: PageKind
    primary: bool
    mapped_bytes: int
    allocated_bytes: int
    cached_bytes: int
    cache_threshold_bytes: int


class Heap:
    """A 1 GiB heap (``struct devmm_virt_com_heap``: devmm_virt_interface.h:170-217) or a primary heap."""

    def __init__(self, start: int, page: PageKind, size: int = HEAP_BYTES, primary: bool = False) -> None:
        self.start = start
        self.size = size
        self.page: PageKind = page
        self.primary = primary
        # need_cache_thres by heap type: devmm_virt_com_heap.c:1427-1448 (set at heap creation:
        # devmm_virt_interface.c:1501); primary heaps have no idle trees (devmm_virt_interface.c:763-771)
        self.need_cache_thres = 0 if primary else (HUGE_CACHE_THRES_BYTES if page == "huge" else NORMAL_CACHE_THRES_BYTES)
        self.chunk_size = HUGE_CHUNK_BYTES if page == "huge" else NORMAL_CHUNK_BYTES
        self.cur_cache = 0  # cur_cache_mem
        self.cur_alloc_cache = 0  # cur_alloc_cache_mem: live bytes of cache-eligible nodes
        self.peak_alloc_cache = 0  # peak_alloc_cache_mem
        self.peak_time = 0.0  # peak_alloc_cache_time
        self.cache_mem_thres = 0  # cache_mem_thres (0 at creation: devmm_virt_com_heap.c:61)
        self.sys_alloced = 0  # sys_mem_alloced
        self.sys_freed = 0  # sys_mem_freed
        self.free_va: list[list[int]] = [[start, size]]  # idle (unmapped) VA ranges, address order
        self.idle: dict[int, Node] = {}  # idle mapped nodes (the cache) by VA
        self.alloced: dict[int, Node] = {}  # allocated nodes by VA
        self.primary_bytes = 0  # physical bytes of a primary heap

    # -- accounting helpers (devmm_virt_com_heap.c:328-370) ------------------------------------------------
    def _add_alloc_cache(self, size: int) -> None:
        if size <= self.need_cache_thres:  # devmm_virt_com_heap.c:330
            self.cur_alloc_cache += size

    def _sub_alloc_cache(self, size: int) -> None:
        if size <= self.need_cache_thres:  # devmm_virt_com_heap.c:345-356
            self.cur_alloc_cache = max(self.cur_alloc_cache - size, 0)

    def _update_peak(self, now: float) -> None:
        if self.peak_alloc_cache < self.cur_alloc_cache:  # devmm_update_peak_cache_mem: devmm_virt_com_heap.c:1087-1093
            self.peak_time = now
            self.peak_alloc_cache = self.cur_alloc_cache

    @property
    def mapped_bytes(self) -> int:
        return self.primary_bytes if self.primary else self.sys_alloced - self.sys_freed

    @property
    def allocated_bytes(self) -> int:
        return sum(n.size for n in self.alloced.values())

    def is_idle(self) -> bool:
        """``devmm_virt_check_idle_heap``: all mapped memory is either released or cached (devmm_virt_interface.c:1528-1539)."""
        return self.sys_alloced == self.sys_freed + self.cur_cache

    # -- VA space ------------------------------------------------------------------------------------------
    def _take_va(self, size: int) -> int | None:
        """Best fit in the idle size tree: exact size, else the smallest larger (devmm_rbtree.c:104-119)."""
        best = None
        for r in self.free_va:
            if r[1] >= size and (best is None or r[1] < best[1]):
                best = r
        if best is None:
            return None
        va = best[0]
        best[0] += size
        best[1] -= size
        if best[1] == 0:
            self.free_va.remove(best)
        return va

    def _give_va(self, va: int, size: int) -> None:
        """``devmm_try_merge_idle_unmap_tree``: unmapped VA merges with its unmapped neighbours (devmm_virt_com_heap.c:525-531)."""
        fv = self.free_va
        i = 0
        while i < len(fv) and fv[i][0] < va:
            i += 1
        fv.insert(i, [va, size])
        if i + 1 < len(fv) and fv[i][0] + fv[i][1] == fv[i + 1][0]:
            fv[i][1] += fv[i + 1][1]
            del fv[i + 1]
        if i > 0 and fv[i - 1][0] + fv[i - 1][1] == fv[i][0]:
            fv[i - 1][1] += fv[i][1]
            del fv[i]

    # -- allocation ------------------------------------------------------------------------------------------
    def alloc_from_cache(self, size: int, seq: itertools.count, now: float) -> int | None:
        """``devmm_alloc_from_mapped_tree`` (devmm_virt_com_heap.c:1450-1476): only sizes <= the threshold."""
        if size > self.need_cache_thres:  # devmm_virt_com_heap.c:1460-1462
            return None
        best: Node | None = None
        for n in self.idle.values():  # best fit: exact, else smallest larger (devmm_rbtree.c:121-138)
            if n.size >= size and (best is None or (n.size, n.seq) < (best.size, best.seq)):
                best = n
        if best is None:
            return None
        del self.idle[best.va]
        if best.size > size:
            # the remainder stays cached after the allocated front: devmm_update_idle_mapped_node
            # (devmm_virt_com_heap.c:737-746); the new node keeps the parent's total (:803)
            rest = Node(best.va + size, best.size - size, best.chunk, best.total, next(seq))
            self.idle[rest.va] = rest
            best.size = size
        self.cur_cache -= size  # devmm_virt_com_heap.c:812
        self.alloced[best.va] = best
        self._add_alloc_cache(size)  # devmm_virt_com_heap.c:819
        self._update_peak(now)  # devmm_virt_com_heap.c:1131
        return best.va

    def alloc_from_va(self, size: int, phys: PhysicalMemory, seq: itertools.count, now: float) -> int | None:
        """``devmm_alloc_from_size_tree`` + ``devmm_alloc_from_unmapped_node`` (devmm_virt_com_heap.c:1478-1516, :917-978).

        Returns None when the heap has no VA left (DEVMM_OUT_OF_VIRT_MEM); raises DriverOutOfMemory when
        the pages cannot be mapped (DEVMM_OUT_OF_PHYS_MEM: :1508-1510). No cache is trimmed first.
        """
        # map_size = align_up(size, kernel page) because heap->map_size is 0 for these heaps
        # ("No extra cache will be generated": devmm_virt_interface.c:1502; devmm_virt_com_heap.c:824-845)
        map_size = -(-size // MAP_ALIGN_BYTES) * MAP_ALIGN_BYTES
        va = self._take_va(map_size)
        if va is None:
            return None
        if not phys.can_map(map_size):  # the map ioctl fails: devmm_map_node (devmm_virt_com_heap.c:767-784)
            self._give_va(va, map_size)
            raise DriverOutOfMemory(map_size)
        phys.heap_bytes += map_size
        self.sys_alloced += map_size  # devmm_virt_com_heap.c:778
        node = Node(va, map_size, va, map_size, next(seq))
        remain = map_size - size
        # split off the unrequested tail into the cache: devmm_node_needs_to_seg (devmm_virt_com_heap.c:713-735)
        if remain and map_size <= self.need_cache_thres and remain >= SEG_THRES_BYTES \
                and remain * 100 // map_size >= SEG_THRES_PERCENT:
            rest = Node(va + size, remain, va, map_size, next(seq))
            self.idle[rest.va] = rest
            self.cur_cache += remain  # devmm_virt_com_heap.c:710
            node.size = size
        self.alloced[va] = node
        self._add_alloc_cache(node.size)  # devmm_virt_com_heap.c:967
        self._update_peak(now)
        return va

    # -- free ----------------------------------------------------------------------------------------------
    def free(self, va: int, phys: PhysicalMemory, now: float) -> int:
        """``devmm_free_mem`` (devmm_virt_com_heap.c:1341-1392); returns the bytes given back to the kernel."""
        node = self.alloced.pop(va)
        size = node.size
        if size == node.total and node.total > self.need_cache_thres:
            # a whole chunk above the threshold goes straight back: devmm_virt_com_heap.c:1369-1375, :1303-1329
            self._release_chunk(node, phys)
            self._sub_alloc_cache(size)
            return node.total
        # otherwise it stays mapped in the cache: devmm_free_cache_mem_process (devmm_virt_com_heap.c:1244-1279)
        self._merge_idle(node)
        self._sub_alloc_cache(size)  # :1260
        self.idle[node.va] = node
        self.cur_cache += size  # :1262
        if node.size == node.total:  # merged back into a whole chunk: :1264-1271
            self._update_cache_thres(now)
            if node.size > self.need_cache_thres or self.cur_cache > self.cache_mem_thres:  # :1212-1226
                return self._shrink(phys)
        return 0

    def _merge_idle(self, node: Node) -> None:
        """``devmm_merge_mapped_free_node``: merge with idle neighbours of the same chunk only (devmm_virt_com_heap.c:1151-1186)."""
        if node.va != node.chunk:
            left = next((n for n in self.idle.values() if n.va + n.size == node.va), None)
            if left is not None and left.chunk == node.chunk:
                del self.idle[left.va]
                node.va = left.va
                node.size += left.size
        right = self.idle.get(node.va + node.size)
        if right is not None and right.chunk == node.chunk:  # a right node that starts a chunk is never merged
            del self.idle[right.va]
            node.size += right.size

    def _release_chunk(self, node: Node, phys: PhysicalMemory) -> None:
        """``devmm_free_phymem_to_os``: unmap the chunk, its VA returns to the idle size tree (devmm_virt_com_heap.c:505-531)."""
        phys.heap_bytes -= node.total
        self.sys_freed += node.total  # :518
        self._give_va(node.chunk, node.total)

    def _cache_thres(self) -> int:
        """``devmm_get_cache_thres`` (devmm_virt_com_heap.c:1188-1210): adaptive, never below the heap's need_cache_thres."""
        base = self.need_cache_thres
        half = (self.peak_alloc_cache + self.cur_alloc_cache) // 2
        twice = self.cur_alloc_cache * 2
        if half > base and twice > base:
            return min(half, twice)
        return base

    def _update_cache_thres(self, now: float) -> None:
        """``devmm_update_cache_thres``: the peak decays by 1/8 at most once a second (devmm_virt_com_heap.c:1228-1242)."""
        if now - self.peak_time > PEAK_DECAY_SECONDS:
            step = self.peak_alloc_cache // 8
            if self.peak_alloc_cache - step > self.cur_alloc_cache:
                self.peak_alloc_cache -= step
                self.peak_time = now
        self.cache_mem_thres = self._cache_thres()

    def _shrink(self, phys: PhysicalMemory) -> int:
        """``devmm_shrink_cache`` (devmm_virt_com_heap.c:635-686): only past min(2T, T + 128 MiB), smallest whole chunks first."""
        t = self.cache_mem_thres
        if self.cur_cache < 2 * t and self.cur_cache < t + SHRINK_HEADROOM_BYTES:  # devmm_need_shrink_cache :556-564
            return 0
        released = 0
        for _ in range(len(self.idle)):
            # devmm_rbtree_get_full_mapped_node: the first whole chunk in size order (devmm_rbtree.c:160-180)
            full = [n for n in self.idle.values() if n.size == n.total]
            if not full:
                break
            n = min(full, key=lambda x: (x.size, x.seq))
            if self.cur_cache - n.size <= t:  # devmm_check_node_allowed_free :619-621
                break
            del self.idle[n.va]
            self.cur_cache -= n.size
            self._release_chunk(n, phys)
            released += n.total
        return released

    def destroy(self, phys: PhysicalMemory) -> int:
        """``devmm_virt_destroy_heap``: the kernel drops the whole heap, cached chunks included (devmm_virt_interface.c:1438-1462)."""
        released = self.mapped_bytes
        if self.primary:
            phys.primary_bytes -= self.primary_bytes
        else:
            phys.heap_bytes -= released
        self.idle.clear()
        self.cur_cache = 0
        return released

    def stats(self) -> HeapStats:
        return HeapStats(self.start, self.page, self.primary, self.mapped_bytes, self.allocated_bytes, self.cur_cache,
                         self.cache_mem_thres)


class HeapList:
    """The heaps of one heap type (``struct devmm_heap_list``: devmm_virt_interface.h:233-240).

    Primary heaps (allocations > 512 MiB) are in the same list and count in ``heap_cnt``
    (devmm_virt_base_heap.c:171-177, :211-216).
    """

    def __init__(self, page: PageKind, base: int) -> None:
        self.page: PageKind = page
        self.heaps: list[Heap] = []  # list order: new heaps go to the head (devmm_virt_list_add: common/devmm_virt_list.h:41-44)
        self._next_va = base

    def _new_va(self, size: int) -> int:
        va = self._next_va
        self._next_va += -(-size // HEAP_BYTES) * HEAP_BYTES
        return va

    def alloc(self, size: int, phys: PhysicalMemory, seq: itertools.count, now: float) -> tuple[int, Heap]:
        """``devmm_alloc_from_normal_heap`` (devmm_virt_interface.c:1622-1655): cache of every heap first,
        then VA of every heap, then a new heap; a physical-memory failure ends the search at once (:1562-1565)."""
        chunk = HUGE_CHUNK_BYTES if self.page == "huge" else NORMAL_CHUNK_BYTES
        alloc_size = -(-size // chunk) * chunk  # align_up(bytesize, heap->chunk_size): devmm_virt_com_heap.c:1108
        normal = [h for h in self.heaps if not h.primary]  # primary heaps are skipped: devmm_virt_interface.c:1553
        for h in normal:  # DEVMM_IDLE_MAPPED_TREE pass: devmm_virt_interface.c:1583-1588
            va = h.alloc_from_cache(alloc_size, seq, now)
            if va is not None:
                return va, h
        for h in normal:  # DEVMM_IDLE_SIZE_TREE pass: devmm_virt_interface.c:1590
            va = h.alloc_from_va(alloc_size, phys, seq, now)
            if va is not None:
                return va, h
        h = Heap(self._new_va(HEAP_BYTES), self.page)  # devmm_alloc_com_heap + add to list: :1612-1619
        self.heaps.insert(0, h)
        va = h.alloc_from_va(alloc_size, phys, seq, now)
        assert va is not None
        return va, h

    def alloc_primary(self, size: int, phys: PhysicalMemory, giant: bool) -> tuple[int, Heap]:
        """``devmm_alloc_from_base_heap``: a heap of its own, VA rounded up to 1 GiB (devmm_virt_base_heap.c:223-249, :176);
        physical = the size, or whole 1 GiB pages on giant pages (:191-193). Never cached."""
        pbytes = -(-size // GIANT_PAGE_BYTES) * GIANT_PAGE_BYTES if giant else -(-size // MAP_ALIGN_BYTES) * MAP_ALIGN_BYTES
        if not phys.can_map(pbytes, giant):
            raise DriverOutOfMemory(pbytes)
        h = Heap(self._new_va(size), self.page, -(-size // HEAP_BYTES) * HEAP_BYTES, primary=True)
        h.primary_bytes = pbytes
        phys.primary_bytes += pbytes
        if giant:
            phys.giant_bytes += pbytes
        self.heaps.insert(0, h)  # devmm_virt_base_heap.c:213-214
        return h.start, h

    def free(self, heap: Heap, va: int, phys: PhysicalMemory, now: float, giant: bool = False) -> int:
        """Free ``va`` of ``heap`` (primary heaps: ``devmm_free_to_base_heap``, others ``devmm_free_to_normal_heap``:
        devmm_svm.c:325-329); then destroy idle heaps while more than one heap exists (devmm_virt_interface.c:1162-1168)."""
        if heap.primary:
            self.heaps.remove(heap)
            if giant:
                phys.giant_bytes -= heap.primary_bytes
            return heap.destroy(phys)
        released = heap.free(va, phys, now)
        if len(self.heaps) > POOL_DESTROY_THRESHOLD:
            for h in [h for h in self.heaps if not h.primary and h.is_idle()]:  # devmm_virt_free_idle_heaps :800-812
                self.heaps.remove(h)
                released += h.destroy(phys)
        return released


class Devmm:
    """The device side of devmm for one process: a huge-page and a normal-page heap list, and a clock.

    ``now`` (seconds) only drives the 1-second peak decay of the cache threshold; the simulator
    advances it explicitly (``advance``).
    """

    def __init__(self, phys: PhysicalMemory) -> None:
        self.phys = phys
        self.lists: dict[PageKind, HeapList] = {"huge": HeapList("huge", 1 << 44), "normal": HeapList("normal", 1 << 45)}
        self._owner: dict[int, tuple[HeapList, Heap, bool]] = {}  # va -> (list, heap, giant)
        self._seq = itertools.count()
        self.now = 0.0
        self.num_alloc = 0
        self.num_failed = 0
        self.released_bytes = 0  # bytes given back to the kernel by frees, shrinks and heap destruction

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def alloc(self, size: int, page: PageKind, *, giant: bool = False) -> int:
        """``halMemAlloc`` of device memory on ``page`` pages; raises DriverOutOfMemory (``devmm_alloc_managed``: devmm_svm.c:370-420)."""
        lst = self.lists[page]
        try:
            if giant or size > LARGE_MEM_THRESHOLD_BYTES:  # devmm_should_alloc_from_base: devmm_svm.c:354-361
                va, heap = lst.alloc_primary(size, self.phys, giant)
            else:
                va, heap = lst.alloc(size, self.phys, self._seq, self.now)
        except DriverOutOfMemory:
            self.num_failed += 1
            raise
        self._owner[va] = (lst, heap, giant)
        self.num_alloc += 1
        return va

    def free(self, va: int) -> int:
        """``halMemFree``; returns the bytes the kernel got back (0 when the chunk stays cached)."""
        lst, heap, giant = self._owner.pop(va)
        released = lst.free(heap, va, self.phys, self.now, giant)
        self.released_bytes += released
        return released

    @property
    def cached_bytes(self) -> int:
        """Bytes mapped in heap caches: used on the device, no longer allocated by anyone."""
        return sum(h.cur_cache for lst in self.lists.values() for h in lst.heaps)

    @property
    def allocated_bytes(self) -> int:
        return sum(h.allocated_bytes if not h.primary else h.primary_bytes for lst in self.lists.values() for h in lst.heaps)

    def heaps(self) -> list[HeapStats]:
        return [h.stats() for lst in self.lists.values() for h in lst.heaps]

    def can_serve(self, size: int, page: PageKind = "huge") -> bool:
        """Whether ``alloc(size)`` would succeed now (for ``SimDevice.would_release_for``); no state changes."""
        chunk = HUGE_CHUNK_BYTES if page == "huge" else NORMAL_CHUNK_BYTES
        a = -(-size // chunk) * chunk
        if a <= (HUGE_CACHE_THRES_BYTES if page == "huge" else NORMAL_CACHE_THRES_BYTES) and size <= LARGE_MEM_THRESHOLD_BYTES:
            for h in self.lists[page].heaps:
                if not h.primary and any(n.size >= a for n in h.idle.values()):
                    return True
        return self.phys.can_map(-(-a // MAP_ALIGN_BYTES) * MAP_ALIGN_BYTES)

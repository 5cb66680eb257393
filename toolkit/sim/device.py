"""``SimDevice``: a model of the CUDA and NPU caching allocators, block for block (plain Python; Cython compiles it when the install can).

It speaks torch's vocabulary (``malloc``/``free``/``empty_cache``/``memory_stats``/``snapshot``) so
code above it never branches on real vs simulated. The hot path (``malloc``/``free`` without
recording) is written out by hand: ints for bytes, packed-int keys in sorted sublists (``_pools.KeySet``), no
per-event copies. Rarely used paths live in mixins: ``release`` (GC, empty_cache), ``expandable``,
``events`` (streams), ``seeding`` (state before a trace), ``workspace`` (NPU workspace allocator).

Sources: ``DeviceCachingAllocator`` in ``c10/cuda/CUDACachingAllocator.cpp`` (2.7–2.11) and torch_npu
``NPUCachingAllocator.cpp``, as summarised in docs/allocator.md §2–5 (section numbers below).
"""

from __future__ import annotations

import itertools
import sys
from collections import OrderedDict, deque
from typing import Any, NoReturn

try:  # the compiled twin reads the @cython.locals below (docs/performance.md); plain Python ignores them
    import cython
except ImportError:  # pragma: no cover - Cython not installed
    from toolkit import _cyshim as cython  # type: ignore[no-redef]

from toolkit.sim._addresses import WORKSPACE_TOP_ADDRESS, DecreasingAddresses, SegmentAddressFn
from toolkit.sim.ascend.devmm import HeapStats
from toolkit.sim.ascend.runtime import AscendRuntime
from toolkit.sim._blocks import Block, Segment
from toolkit.sim.constants import (
    GiB,
    MiB,
    MIN_BLOCK_BYTES,
    ROUND_LARGE_BYTES,
    SIZE_MAX,
    SMALL_SIZE_BYTES,
)
from toolkit.sim._events import EventsMixin
from toolkit.sim._expandable import ExpandableMixin
from toolkit.sim.oom import OomReport, SimOutOfMemoryError, cuda_oom_message, npu_oom_message
from toolkit.sim._pools import PTR_MASK, BlockPool, KeySet, ceiling, key_add, key_delete_at, key_remove, key_replace_up

if not cython.compiled:  # compiled, device.pxd cimports the inline C loop of the same name from _pools.pxd
    from toolkit.sim._pools import lower_bound
from toolkit.sim._release import ReleaseMixin
from toolkit.sim.rounding import allocation_size, round_size
from toolkit.sim._seeding import SeedingMixin
from toolkit.sim.settings import Platform, SimSettings, TieBreak, parse_version, resolve_settings
from toolkit.sim.snapshot_out import (
    TraceTuple,
    allocator_settings,
    segment_dicts,
    trace_dicts,
    workspace_segment_dicts,
    workspace_trace_dicts,
)
from toolkit.sim._stats import AllPeaks, AllStats, DeviceStats, PoolStats
from toolkit.sim._workspace import WorkspaceCache, WorkspaceMixin

# Defaults of the simulated device (override per device). Capacity: an 80 GB GPU / a 64 GB Ascend 910B.
DEFAULT_CAPACITY_BYTES: dict[str, int] = {"cuda": 80 * GiB, "npu": 64 * GiB}
# Memory the runtime holds outside any allocator (CUDA/ACL context, libraries). An order of magnitude,
# not a measurement: set it from mem_get_info() of a fresh process on your machine.
DEFAULT_CONTEXT_BYTES: dict[str, int] = {"cuda": 512 * MiB, "npu": 1 * GiB}
ONE_EIB = 1 << 60
ADDRESS_SPACE_END = 1 << 64  # device pointers are 64-bit


def _parse_conf(conf: Any, platform: str, torch_version: str | None) -> Any:
    """A conf string goes through ``toolkit.conf.parse`` so invalid confs fail exactly as there."""
    if conf is None:
        conf = ""
    if isinstance(conf, str):
        from toolkit.conf import parse

        return parse(conf, platform=platform, version=torch_version)
    parsed_for = getattr(conf, "platform", platform)
    if parsed_for != platform:
        raise ValueError(f"conf was parsed for platform {parsed_for!r} but the device's platform is {platform!r}")
    return conf


class _DeviceCore:
    """The device's own attributes, set in ``SimDevice.__init__``. Empty as plain Python; in the compiled twin
    an extension type (device.pxd declares the same names) so that ``malloc`` / ``free`` read them at a fixed
    offset instead of through the instance dict (docs/performance.md)."""

    __slots__ = ()


@cython.locals(self=_DeviceCore, b=Block, p=Block, pp=Block, nx=Block, nn=Block, pool=BlockPool, seg=Segment, ps=PoolStats,
               orig=cython.longlong, req=cython.longlong, dn=cython.longlong, db=cython.longlong)
def _return_block(self: SimDevice, b: Block) -> None:
    """Return a block to its free set, merging with free neighbours (upstream's ``free_block``).

    A module function rather than a method so that the compiled ``free`` calls it as a C function
    (device.pxd); ``SimDevice._free_block`` is the mixins' entry to it."""
    if self._trace is not None:
        self._trace.append(("free_completed", b.ptr, b.requested, b.stream, next(self._clock)))
    orig = b.size
    req = b.requested
    pool = b.pool
    fr = pool.free
    by_ptr = self._by_ptr
    dn = db = 0
    gone = 0  # the key of a merged neighbour (the larger one when both merge)
    p = b.prev
    if p is not None and not p.allocated and not p.event_count and not p.stream_uses and p.mapped:
        gone = p.key
        del by_ptr[b.ptr]
        b.ptr = p.ptr
        by_ptr[p.ptr] = b
        pp = p.prev
        b.prev = pp
        if pp is not None:
            pp.next = b
        b.size += p.size
        dn -= 1
        db -= p.size
    nx = b.next
    if nx is not None and not nx.allocated and not nx.event_count and not nx.stream_uses and nx.mapped:
        if gone:
            if nx.key > gone:
                key_remove(fr, gone)
                gone = nx.key
            else:
                key_remove(fr, nx.key)
        else:
            gone = nx.key
        del by_ptr[nx.ptr]
        nn = nx.next
        b.next = nn
        if nn is not None:
            nn.prev = b
        b.size += nx.size
        dn -= 1
        db -= nx.size
    seg = b.seg
    k = (((b.stream << 64) | b.size) << 96) | seg.regbits | b.ptr
    b.key = k
    if gone:  # the merged block's key (larger: same stream, larger size) often takes the neighbour's slot
        key_replace_up(fr, gone, k)
    else:
        key_add(fr, k)
    b.gc_base = pool.gc_calls
    if b.prev is not None or b.next is not None:
        dn += 1
        db += b.size
    ps = pool.stats
    if (dn or db) and not seg.expandable:
        ps.on_inactive_split(dn, db)
    # on_free_completed(orig, req)
    ps.active_cur -= 1
    ps.active_freed += 1
    ps.active_bytes_cur -= orig
    ps.active_bytes_freed += orig
    ps.requested_bytes_cur -= req
    ps.requested_bytes_freed += req


@cython.locals(self=_DeviceCore, pool=BlockPool, b=Block, nx=Block)
def _fit(self: SimDevice, pool: BlockPool, stream: int, size: int, b: Block, take: bool) -> Block | None:
    """The best-fit candidate ``b`` under the expandable and oversize rules (§2.6, §3.6), or None.

    A module function so that the compiled ``malloc`` calls it as a C function (device.pxd)."""
    if b.seg.expandable:
        nx = b.next
        # only a block followed by unmapped space (or a disabled conf) can change the choice (§3.6)
        if (nx is not None and not nx.mapped) or not self._expandable:
            picked = self._pick_expandable(pool, stream, b)
            if picked is None:
                return None
            b = picked
    mss = self._mss
    if size < mss:
        if b.size >= mss:  # never hand an oversize block to a normal request
            return None
    elif b.size >= size + self._mnsr:  # oversize request: limited waste only
        return None
    if take:
        key_remove(pool.free, b.key)
    return b


class SimDevice(ReleaseMixin, ExpandableMixin, EventsMixin, SeedingMixin, WorkspaceMixin, _DeviceCore):
    """A simulated device with a caching allocator (CUDA or NPU platform); everything in bytes (ints).

    Example::

        dev = SimDevice("npu", "expandable_segments:True", capacity_bytes=64 * 2**30)
        a = dev.malloc(3 * 2**20)          # -> address
        dev.free(a); dev.empty_cache()
        dev.memory_stats()["reserved_bytes.all.current"]

    Args:
        platform: ``"cuda"`` or ``"npu"`` (NPU: +32 B request pad, NPU OOM text, workspace allocator).
        conf: allocator conf string (parsed by ``toolkit.conf.parse``) or an ``AllocConf``.
        capacity_bytes: device memory (``mem_get_info()[1]``).
        torch_version: selects version-dependent behaviour (best-fit tie-break, OOM hint, conf dialect).
        segment_address: ``(size_bytes, stream) -> address | None`` choosing where new segments go;
            None: driver-like decreasing addresses. For a new expandable VA reservation it is asked
            with the reservation's size. NPU workspace blocks always come from the simulator's own
            address model (traces never record them).
        context_bytes: runtime memory outside the allocators (counted in ``mem_get_info``).
        external_bytes: memory used by other processes / non-torch allocations.
        device: device index shown in messages and snapshots.
        tie_break: override the best-fit tie-break (``"address"`` or ``"registration"``).
        npu_pad_bytes: override the NPU pad (0 on Ascend950 with CANN >= 9.1).
        driver: model the Ascend runtime and driver below torch_npu (``toolkit.sim.ascend``): segments
            come from devmm heaps whose cache keeps freed chunks <= 36 MiB mapped, so device used and
            ``mem_get_info`` come from the driver. None: on for ``npu``; always off for ``cuda``.
        giant_page_bytes: 1 GiB pages reserved on the host for ``page_size:1g`` (None: unlimited).
    """

    def __init__(
        self,
        platform: Platform = "cuda",
        conf: Any = "",
        *,
        capacity_bytes: int | None = None,
        torch_version: str | None = None,
        segment_address: SegmentAddressFn | None = None,
        context_bytes: int | None = None,
        external_bytes: int = 0,
        device: int = 0,
        tie_break: TieBreak | None = None,
        npu_pad_bytes: int | None = None,
        driver: bool | None = None,
        giant_page_bytes: int | None = None,
    ) -> None:
        if platform not in ("cuda", "npu"):
            raise ValueError(f"platform must be 'cuda' or 'npu', got {platform!r}")
        self.platform: Platform = platform
        self.conf = _parse_conf(conf, platform, torch_version)
        self.torch_version = torch_version
        s = resolve_settings(platform, self.conf, torch_version, tie_break=tie_break, npu_pad_bytes=npu_pad_bytes)
        self.settings: SimSettings = s
        self.capacity_bytes = int(DEFAULT_CAPACITY_BYTES[platform] if capacity_bytes is None else capacity_bytes)
        self.context_bytes = int(DEFAULT_CONTEXT_BYTES[platform] if context_bytes is None else context_bytes)
        self.external_bytes = int(external_bytes)
        if self.capacity_bytes <= 0 or self.context_bytes < 0 or self.external_bytes < 0:
            raise ValueError("capacity_bytes must be > 0; context_bytes and external_bytes must be >= 0")
        self.device = int(device)
        if driver and platform != "npu":
            raise ValueError("driver=True models the Ascend driver: it needs platform='npu'")
        # the driver layer (docs/ascend-memory-stack.md): touched only on segment alloc/free
        self._rt: AscendRuntime | None = None
        if platform == "npu" and driver is not False:
            self._rt = AscendRuntime(self.capacity_bytes, self._fixed_bytes, giant_page_bytes)
        self._seg_va: dict[int, int] = {}  # torch segment address -> driver address
        self._ws_va: dict[int, int] = {}  # workspace block address -> driver address
        self._segment_address = segment_address
        self._addresses = DecreasingAddresses()
        # workspace blocks live in their own range above the segments, so that workspace activity (which
        # a trace does not record) never shifts segment addresses
        self._ws_addresses = DecreasingAddresses(WORKSPACE_TOP_ADDRESS)

        self._stats = DeviceStats(-1 if s.max_split_bytes == SIZE_MAX else s.max_split_bytes)
        self._all: AllStats = self._stats.all  # read-only view (sums of the pools)
        self._small = BlockPool(True, self._stats.small)
        self._large = BlockPool(False, self._stats.large)
        self._by_ptr: dict[int, Block] = {}  # every live block (allocated, free, pending, unmapped)
        self._segments: dict[int, Segment] = {}  # by segment (or VA reservation) address
        self._reg = itertools.count(1)
        self._reserved_total = 0  # total_allocated_memory: segments + mapped expandable bytes
        self._ws = WorkspaceCache()
        self._events: dict[int, deque[list[Any]]] = {}  # stream -> FIFO of [block, done]
        self._num_events = 0
        self._trace: deque[TraceTuple] | None = None
        self._clock = itertools.count(1)

        # hot-path copies of the settings
        self._pad = s.pad_bytes
        self._divisions = s.divisions
        self._mss = s.max_split_bytes
        self._mnsr = s.max_non_split_rounding_bytes
        self._expandable = s.expandable
        self._regbits = s.tie_break == "registration"
        self._lazy_reclaim = s.multi_stream_lazy_reclaim
        self._align = s.base_addr_aligned_bytes if (platform == "npu" and s.expandable) else 0
        self._allowed: int | None = None
        self._gc_active = False
        if s.memory_fraction is not None:
            self.set_per_process_memory_fraction(s.memory_fraction)

    # ------------------------------------------------------------------ configuration-like calls
    def set_per_process_memory_fraction(self, fraction: float) -> None:
        """``torch.cuda.set_per_process_memory_fraction``: cap reserved bytes at fraction x capacity."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"Invalid fraction value: {fraction}. Allowed range: 0~1")
        self._allowed = int(fraction * self.capacity_bytes)
        self._gc_active = self.settings.gc_threshold > 0.0

    # ------------------------------------------------------------------ hot path
    # malloc and free are written out by hand (docs/performance.md has the profile that says why): the
    # best-fit lookup, the split, the stats updates and the free-set edits are inlined for the common
    # case; rare cases (expandable candidates, sublist splits/merges) call the general code.
    @cython.locals(self=_DeviceCore, pool=BlockPool, block=Block, b=Block, rem=Block, nxt=Block, seg=Segment, ps=PoolStats,
                   o=PoolStats, pk=AllPeaks, fr=KeySet, pos=cython.Py_ssize_t, idx=cython.Py_ssize_t, maxes=list,
                   sub=list, c=cython.longlong, v=cython.longlong, bs=cython.longlong)
    def malloc(self, nbytes: int, stream: int = 0) -> int:
        """Allocate ``nbytes`` on ``stream``; returns the block address (0 for a 0-byte request).

        Raises SimOutOfMemoryError (a RuntimeError) with torch's message when nothing fits (§2.7).
        """
        if nbytes <= 0 or stream < 0:
            if stream < 0:
                raise ValueError(f"stream must be a non-negative int, got {stream}")
            if nbytes == 0:
                return 0
            raise ValueError(f"cannot allocate a negative number of bytes ({nbytes})")
        if self._events and (not self._lazy_reclaim or self._num_events > 512):
            self._process_events()
        if self._divisions:
            size = round_size(nbytes, self._divisions, self._pad)
        else:
            n = nbytes + self._pad
            size = MIN_BLOCK_BYTES if n < MIN_BLOCK_BYTES else (n + 511) & ~511
        pool = self._small if size <= SMALL_SIZE_BYTES else self._large
        # best fit (_get_free_block, inlined): the lower bound of (stream, size) in the free set
        if self._gc_active:
            pool.gc_calls += 1
        fr = pool.free
        lo = ((stream << 64) | size) << 96
        maxes = fr._maxes
        pos = lower_bound(maxes, lo)
        block = None
        taken = 0
        if pos != len(maxes):
            sub = fr._lists[pos]
            idx = lower_bound(sub, lo)
            k = sub[idx]
            if k >> 160 == stream:
                b = self._by_ptr[k & PTR_MASK]
                if b.seg.expandable:
                    block = _fit(self, pool, stream, size, b, True)
                elif b.size < self._mss if size < self._mss else b.size < size + self._mnsr:
                    block = b
                    taken = k  # still in the free set at sub[idx]: a split's remainder may take its slot
        if block is None:
            if self._lazy_reclaim and self._events:
                self._process_events()
                block = self._get_free_block(pool, stream, size)
            if block is None:
                block = self._malloc_slow(pool, stream, size, nbytes)
        if self._align and size >= ROUND_LARGE_BYTES and block.ptr % self._align:
            if taken:
                key_remove(fr, taken)
                taken = 0
            block = self._align_front(block, size)
        # split if the rules say so (§2.8), mark allocated, update stats, record the trace
        # (the stats updates are PoolStats.on_alloc / on_inactive_split written out: same arithmetic)
        ps = pool.stats
        o = ps.other
        pk = ps.peaks
        nxt = block.next
        already_split = block.prev is not None or nxt is not None
        seg = block.seg
        remaining = block.size - size
        if pool.is_small or self._expandable:
            split = remaining >= MIN_BLOCK_BYTES
        else:
            split = size < self._mss and remaining > SMALL_SIZE_BYTES
        if split:
            # The allocated front keeps this object; the remainder is a new free block that inherits
            # the old requested size (upstream keeps the old Block object as the remainder).
            rp = block.ptr + size
            rem = Block(rp, remaining, block.stream, pool, seg)
            rem.requested = block.requested
            rem.next = nxt
            if nxt is not None:
                nxt.prev = rem
            rem.prev = block
            block.next = rem
            block.size = size
            self._by_ptr[rp] = rem
            k = (((rem.stream << 64) | remaining) << 96) | seg.regbits | rp
            rem.key = k
            if taken and (sub[idx - 1] < k if idx else not pos or maxes[pos - 1] < k):
                sub[idx] = k  # the remainder (a smaller key) sorts into the taken block's slot
                if idx + 1 == len(sub):
                    maxes[pos] = k
            else:
                if taken:
                    key_delete_at(fr, pos, idx)
                key_add(fr, k)
            rem.gc_base = pool.gc_calls
            if not seg.expandable:
                if already_split:  # on_inactive_split(0, -size)
                    v = size
                    ps.inactive_split_bytes_cur -= v
                    ps.inactive_split_bytes_freed += v
                else:  # on_inactive_split(1, remaining)
                    c = ps.inactive_split_cur + 1
                    ps.inactive_split_cur = c
                    if c > ps.inactive_split_peak:
                        ps.inactive_split_peak = c
                    if c + o.inactive_split_cur > pk.inactive_split:
                        pk.inactive_split = c + o.inactive_split_cur
                    v = remaining
                    c = ps.inactive_split_bytes_cur + v
                    ps.inactive_split_bytes_cur = c
                    if c > ps.inactive_split_bytes_peak:
                        ps.inactive_split_bytes_peak = c
                    if c + o.inactive_split_bytes_cur > pk.inactive_split_bytes:
                        pk.inactive_split_bytes = c + o.inactive_split_bytes_cur
        else:
            if taken:  # still at fr._lists[pos][idx]: nothing changed the free set since the lookup
                key_delete_at(fr, pos, idx)
            if already_split and not seg.expandable:  # on_inactive_split(-1, -block.size)
                ps.inactive_split_cur -= 1
                ps.inactive_split_freed += 1
                v = block.size
                ps.inactive_split_bytes_cur -= v
                ps.inactive_split_bytes_freed += v
        block.allocated = True
        block.requested = nbytes
        bsize = block.size
        bs = bsize  # the stats below add C integers (compiled twin; plain Python: the same int)
        v = nbytes
        # on_alloc(bsize, nbytes)
        c = ps.allocation_cur + 1
        ps.allocation_cur = c
        if c > ps.allocation_peak:
            ps.allocation_peak = c
        if c + o.allocation_cur > pk.allocation:
            pk.allocation = c + o.allocation_cur
        c = ps.active_cur + 1
        ps.active_cur = c
        if c > ps.active_peak:
            ps.active_peak = c
        if c + o.active_cur > pk.active:
            pk.active = c + o.active_cur
        c = ps.allocated_bytes_cur + bs
        ps.allocated_bytes_cur = c
        if c > ps.allocated_bytes_peak:
            ps.allocated_bytes_peak = c
        if c + o.allocated_bytes_cur > pk.allocated_bytes:
            pk.allocated_bytes = c + o.allocated_bytes_cur
        c = ps.active_bytes_cur + bs
        ps.active_bytes_cur = c
        if c > ps.active_bytes_peak:
            ps.active_bytes_peak = c
        if c + o.active_bytes_cur > pk.active_bytes:
            pk.active_bytes = c + o.active_bytes_cur
        c = ps.requested_bytes_cur + v
        ps.requested_bytes_cur = c
        if c > ps.requested_bytes_peak:
            ps.requested_bytes_peak = c
        if c + o.requested_bytes_cur > pk.requested_bytes:
            pk.requested_bytes = c + o.requested_bytes_cur
        if bsize >= self._mss:
            self._stats.oversize_allocations.increase()
        if self._trace is not None:
            self._trace.append(("alloc", block.ptr, nbytes, block.stream, next(self._clock)))
        return block.ptr

    @cython.locals(self=_DeviceCore, pool=BlockPool)
    def _get_free_block(self, pool: BlockPool, stream: int, size: int, take: bool = True) -> Block | None:
        """Best fit (§2.6): the lower bound of (stream, size) in the free set, if the rules allow it.

        ``take=False`` only looks (no GC clock tick, the block stays in the free set).
        """
        if self._gc_active and take:
            pool.gc_calls += 1
        return self._best_fit(pool, stream, size, take)

    @cython.locals(self=_DeviceCore, pool=BlockPool)
    def _best_fit(self, pool: BlockPool, stream: int, size: int, take: bool) -> Block | None:
        """``_get_free_block`` after the GC clock tick."""
        k = ceiling(pool.free, ((stream << 64) | size) << 96)
        if k is None or k >> 160 != stream:
            return None
        return _fit(self, pool, stream, size, self._by_ptr[k & PTR_MASK], take)

    @cython.locals(self=_DeviceCore, b=Block, ps=PoolStats, v=cython.longlong)
    def free(self, address: int) -> None:
        """Free the block at ``address``; with recorded extra streams it stays pending (§2.9)."""
        if address == 0:
            return
        b = self._by_ptr.get(address)
        if b is None or not b.allocated:
            raise ValueError(f"invalid device pointer: {address:#x} (not an allocated block of this device)")
        b.allocated = False
        size = b.size
        v = size
        ps = b.pool.stats  # on_free_requested(size)
        ps.allocation_cur -= 1
        ps.allocation_freed += 1
        ps.allocated_bytes_cur -= v
        ps.allocated_bytes_freed += v
        if self._trace is not None:
            self._trace.append(("free_requested", address, b.requested, b.stream, next(self._clock)))
        if size >= self._mss:
            self._stats.oversize_allocations.decrease()
        if b.stream_uses:
            self._insert_events(b)
        else:
            _return_block(self, b)

    def _free_block(self, b: Block) -> None:
        """Return a block to its free set, merging with free neighbours (``free_block``; the mixins' entry)."""
        _return_block(self, b)

    @cython.locals(self=_DeviceCore, b=Block)
    def _insert_free(self, b: Block) -> None:
        """Put a mapped free block into its pool's free set (``insert_into_blocks``)."""
        k = (((b.stream << 64) | b.size) << 96) | b.seg.regbits | b.ptr
        b.key = k
        key_add(b.pool.free, k)
        b.gc_base = b.pool.gc_calls

    # ------------------------------------------------------------------ slow path
    def _malloc_slow(self, pool: BlockPool, stream: int, size: int, nbytes: int) -> Block:
        """No cached block fits: GC, device allocation, release oversize, release all, retry (§2.7)."""
        if self.platform == "cuda" and nbytes >= ONE_EIB:
            self._stats.num_ooms += 1
            raise SimOutOfMemoryError(
                "CUDA out of memory. Tried to allocate more than 1EB memory.",
                self._oom_report(nbytes, size, size),
            )
        s = self.settings
        alloc = allocation_size(size, s.large_segment_bytes, s.page_1g and not pool.is_small)
        if self._gc_active:
            self._garbage_collect()
        b = self._alloc_block(pool, stream, size, alloc, False)
        if b is None and self._release_available_cached_blocks(pool, stream, size):
            b = self._alloc_block(pool, stream, size, alloc, False)
        if b is None:
            if self.platform == "npu":
                self._empty_workspace()  # torch_npu empties the workspace cache before the last retry
            self._release_cached_blocks()
            b = self._alloc_block(pool, stream, size, alloc, True)
        if b is None:
            self._raise_oom(stream, nbytes, size, alloc)
        return b

    def would_release_for(self, nbytes: int, stream: int = 0) -> bool:
        """Whether ``malloc(nbytes, stream)`` now would give cached memory back by itself.

        True when no cached block fits and the new segment would trip garbage collection, the
        per-process fraction or the device capacity (so malloc runs GC / oversize release /
        release-and-retry). Lets a replay tell those releases apart from ``empty_cache()`` calls.
        """
        size = round_size(nbytes, self._divisions, self._pad)
        pool = self._small if size <= SMALL_SIZE_BYTES else self._large
        if self._get_free_block(pool, stream, size, take=False) is not None:
            return False
        s = self.settings
        alloc = allocation_size(size, s.large_segment_bytes, s.page_1g and not pool.is_small)
        allowed = self._allowed
        if allowed is not None:
            if self._gc_active and self._reserved_total > int(s.gc_threshold * allowed):
                return True
            if self._reserved_total + alloc > allowed:
                return True
        if self._rt is not None and not self._expandable:
            return not self._rt.devmm.can_serve(alloc)
        return self.device_used_bytes + alloc > self.capacity_bytes

    def _alloc_block(self, pool: BlockPool, stream: int, size: int, alloc: int, retry: bool) -> Block | None:
        """Obtain device memory for a new segment (or map expandable pages) (§2.10)."""
        st = self._stats
        if retry:
            st.num_alloc_retries += 1
        if self._allowed is not None and self._reserved_total + alloc > self._allowed:
            return None
        if self._expandable:
            return self._try_allocate_expandable(pool, stream, size)
        rt = self._rt
        if rt is not None:
            # aclrtMallocAlign32 (NPUCachingAllocator.cpp:3003-3013): devmm may serve it from its cache
            va = rt.torch_segment_malloc(alloc, self.settings.page_1g and not pool.is_small)
            if va is None:
                return None
        elif self.device_used_bytes + alloc > self.capacity_bytes:
            return None
        ptr = self._new_address(alloc, stream, ROUND_LARGE_BYTES)
        if rt is not None:
            assert va is not None  # the rt branch above returned on None
            self._seg_va[ptr] = va
        seg = self._new_segment(ptr, alloc, stream, pool)
        b = Block(ptr, alloc, stream, pool, seg)
        self._by_ptr[ptr] = b
        self._reserved_total += alloc
        pool.stats.on_reserved(alloc, 1)
        if alloc >= self._mss:
            st.oversize_segments.increase()
        st.num_device_alloc += 1
        if self._trace is not None:
            self._trace.append(("segment_alloc", ptr, alloc, stream, next(self._clock)))
        return b

    def _new_address(self, size: int, stream: int, align: int) -> int:
        if self._segment_address is not None:
            address = self._segment_address(size, stream)
            if address is not None:
                address = int(address)
                if address <= 0 or address % MIN_BLOCK_BYTES:
                    raise ValueError(f"segment_address returned {address:#x}: must be a positive multiple of 512")
                self._addresses.avoid(address, size)
                return address
        return self._addresses.take(size, align)

    def _new_segment(self, address: int, size: int, stream: int, pool: BlockPool, page_bytes: int = 0) -> Segment:
        if address + size > ADDRESS_SPACE_END:  # every segment comes here; the free-set keys hold a 64-bit pointer
            raise ValueError(f"segment {address:#x}+{size} ends beyond the 64-bit address space")
        seg = Segment(address, size, stream, pool, next(self._reg), page_bytes > 0, page_bytes)
        if self._regbits:
            seg.regbits = (seg.reg & 0xFFFF_FFFF) << 64
        self._segments[address] = seg
        return seg

    def _align_front(self, block: Block, size: int) -> Block:
        """NPU ``base_addr_aligned_kb``: leave a free front fragment so the block starts aligned (§2.8)."""
        align = self._align
        aligned = block.ptr + align - block.ptr % align
        offset = aligned - block.ptr
        if offset + size > block.size:
            return block
        nb = Block(aligned, block.size - offset, block.stream, block.pool, block.seg)
        nxt = block.next
        nb.next = nxt
        if nxt is not None:
            nxt.prev = nb
        nb.prev = block
        block.next = nb
        block.size = offset
        self._by_ptr[aligned] = nb
        self._insert_free(block)  # the front fragment stays free
        return nb

    def _raise_oom(self, stream: int, nbytes: int, size: int, alloc: int) -> NoReturn:
        report = self._oom_report(nbytes, size, alloc)
        if self._trace is not None:
            self._trace.append(("oom", report.device_free_bytes, size, stream, next(self._clock)))
        self._stats.num_ooms += 1
        if self.platform == "cuda":
            message = cuda_oom_message(report, self.settings.oom_conf_var)
        else:
            message = npu_oom_message(report)
        raise SimOutOfMemoryError(message, report)

    def _oom_report(self, nbytes: int, size: int, alloc: int, source: str = "caching_allocator") -> OomReport:
        a = self._all
        return OomReport(
            platform=self.platform,
            device=self.device,
            requested_bytes=nbytes,
            rounded_bytes=size,
            alloc_bytes=alloc,
            total_bytes=self.capacity_bytes,
            device_free_bytes=max(self.capacity_bytes - self.device_used_bytes, 0),
            allowed_bytes=self._allowed,
            allocated_bytes=a.allocated_bytes_cur,
            active_bytes=a.active_bytes_cur,
            reserved_bytes=a.reserved_bytes_cur,
            process_bytes=self._reserved_total + self._ws.reserved_bytes + self.context_bytes,
            source=source,
        )

    # ------------------------------------------------------------------ torch-like queries
    def empty_cache(self) -> None:
        """Return every cached whole segment (and free expandable pages) to the device (§2.13)."""
        if self.platform == "npu":
            self._empty_workspace()
        self._release_cached_blocks()

    @property
    def device_used_bytes(self) -> int:
        """Device-wide used memory: reserved + NPU workspace + context + external.

        With the Ascend driver layer: what the driver has mapped (its heap caches included) + context +
        external, as ``aclrtGetMemInfo`` reports it.
        """
        if self._rt is not None:
            return self._rt.used_bytes
        return self._reserved_total + self._ws.reserved_bytes + self.context_bytes + self.external_bytes

    def _fixed_bytes(self) -> int:
        """Memory outside devmm's heaps: the runtime context and other consumers (external)."""
        return self.context_bytes + self.external_bytes

    @property
    def driver(self) -> AscendRuntime | None:
        """The simulated Ascend runtime/driver below the allocator (None: not modelled)."""
        return self._rt

    @property
    def driver_cached_bytes(self) -> int:
        """Bytes the driver keeps mapped in its heap caches (used, but neither reserved nor workspace)."""
        return self._rt.cached_bytes if self._rt is not None else 0

    def driver_heaps(self) -> list[HeapStats]:
        """The driver's heaps now (for inspection next to ``snapshot()`` segments); [] without the driver."""
        return self._rt.heaps() if self._rt is not None else []

    def advance_clock(self, seconds: float) -> None:
        """Let simulated time pass for the driver (its cache threshold decays at most once a second)."""
        if self._rt is not None:
            self._rt.advance(seconds)

    def mem_get_info(self) -> tuple[int, int]:
        """``(free_bytes, total_bytes)`` like ``torch.cuda.mem_get_info``."""
        return max(self.capacity_bytes - self.device_used_bytes, 0), self.capacity_bytes

    def non_torch_bytes(self) -> int:
        """vLLM's "non-torch" memory: device used minus ``memory_reserved()``."""
        return self.device_used_bytes - self._all.reserved_bytes_cur

    def memory_stats(self) -> OrderedDict[str, int]:
        """The flattened, key-sorted ``memory_stats()`` dict with torch's key names."""
        return self._stats.as_flat_dict(include_oom_rejections=self.platform == "npu")

    def memory_allocated(self) -> int:
        return self._all.allocated_bytes_cur

    def max_memory_allocated(self) -> int:
        return self._all.allocated_bytes_peak

    def memory_reserved(self) -> int:
        return self._all.reserved_bytes_cur

    def max_memory_reserved(self) -> int:
        return self._all.reserved_bytes_peak

    @property
    def snapshot_segment_count(self) -> int:
        """Segments as ``_snapshot()`` lists them, expandable VA reservations included (``segment_count``,
        torch's ``segment.all.current``, never counts those: ``toolkit.sim._expandable``)."""
        return len(self._segments)

    def reset_peak_memory_stats(self) -> None:
        self._stats.reset_peak()

    def reset_accumulated_memory_stats(self) -> None:
        self._stats.reset_accumulated()

    @property
    def segment_count(self) -> int:
        """Number of non-expandable segments (``segment.all.current``)."""
        return self._all.segment_cur

    def block_at(self, address: int) -> Block | None:
        """The block starting at ``address`` (any state), for inspection and tests."""
        return self._by_ptr.get(address)

    # ------------------------------------------------------------------ recording and snapshots
    def record_history(self, enabled: bool | str | None = "all", max_entries: int = sys.maxsize) -> None:
        """Start (``"all"``/True) or stop (None/False) recording trace entries into a ring buffer.

        Like ``torch.cuda.memory._record_memory_history``: stopping clears the buffer.
        """
        if enabled in (None, False, "state"):
            self._trace = None
            return
        if enabled not in (True, "all"):
            raise ValueError(f"expected enabled to be 'all', True, None or False, got {enabled!r}")
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        old = self._trace or ()
        self._trace = deque(old, maxlen=None if max_entries >= sys.maxsize else max_entries)

    def snapshot(self) -> dict[str, Any]:
        """A dict with the layout of ``torch.cuda.memory._snapshot()`` (plus ``"simulated": True``)."""
        segments = segment_dicts(self._segments.values(), self._by_ptr, self.device)
        trace = list(trace_dicts(self._trace, self.platform))
        if self.platform == "npu":
            segments += workspace_segment_dicts(self._ws.blocks, self.device)
            if self._trace is not None:
                trace = workspace_trace_dicts(self._ws.blocks) + trace
        out: dict[str, Any] = {"segments": segments, "device_traces": [trace]}
        if self.platform == "cuda":
            version = parse_version(getattr(self.conf, "version", None) or self.torch_version)
            out["allocator_settings"] = allocator_settings(self.settings.conf_text, self.settings, version)
            out["external_annotations"] = []
        out["simulated"] = True
        out["simulator"] = {
            "platform": self.platform,
            "conf": self.settings.conf_text,
            "torch_version": self.torch_version,
            "capacity_bytes": self.capacity_bytes,
            "tie_break": self.settings.tie_break,
            # lets toolkit.snapshot tell workspace segments apart even without a trace
            "workspace_addresses": sorted(b.address for b in self._ws.blocks.values()) if self.platform == "npu" else [],
        }
        if self._rt is not None:  # the Ascend driver's heaps below the allocator (simulated; toolkit/sim/ascend)
            out["simulator"]["driver_heaps"] = [
                {"start": h.start, "page": h.page, "primary": h.primary, "mapped_bytes": h.mapped_bytes,
                 "allocated_bytes": h.allocated_bytes, "cached_bytes": h.cached_bytes,
                 "cache_threshold_bytes": h.cache_threshold_bytes} for h in self._rt.heaps()]
        return out

    def check_invariants(self) -> None:
        """Raise AssertionError if any structural or statistical invariant is broken (for tests)."""
        from toolkit.sim._invariants import check_invariants

        check_invariants(self)

    def __repr__(self) -> str:
        return (
            f"SimDevice(platform={self.platform!r}, conf={self.settings.conf_text!r}, "
            f"reserved={self.memory_reserved()}, allocated={self.memory_allocated()}) [simulated]"
        )


__all__ = ["SimDevice", "SimOutOfMemoryError"]

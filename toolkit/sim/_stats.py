"""Allocator statistics with torch's arithmetic and key names (docs/allocator.md §4.1).

torch keeps every pool statistic three times (``all``, ``small_pool``, ``large_pool``) with
``increase(n)``: current += n, peak = max(peak, current), allocated += n and ``decrease(n)``:
current -= n, freed += n. The simulator stores the two pools only and derives ``all`` (current,
allocated and freed are sums; only the ``all`` peak needs its own running maximum), and derives
``allocated`` from ``current - base + freed`` (``base``: current at the last accumulated-stats reset).
Same numbers as torch, about half the work per allocator step.
"""

from __future__ import annotations

from collections import OrderedDict

try:  # the compiled twin reads the @cython.locals below (docs/performance.md); plain Python ignores them
    import cython
except ImportError:  # pragma: no cover - Cython not installed
    from toolkit import _cyshim as cython  # type: ignore[no-redef]

POOL_METRICS = (
    "allocation",
    "segment",
    "active",
    "inactive_split",
    "allocated_bytes",
    "reserved_bytes",
    "active_bytes",
    "inactive_split_bytes",
    "requested_bytes",
)
FIELDS = ("current", "peak", "allocated", "freed")
_POOL_SLOTS = tuple(f"{m}_{f}" for m in POOL_METRICS for f in ("cur", "peak", "freed", "base"))


class AllPeaks:
    """Running maxima of the ``all`` pool statistics (the only ``all`` numbers that are not sums)."""

    __slots__ = POOL_METRICS
    allocation: int
    segment: int
    active: int
    inactive_split: int
    allocated_bytes: int
    reserved_bytes: int
    active_bytes: int
    inactive_split_bytes: int
    requested_bytes: int

    def __init__(self) -> None:
        for m in POOL_METRICS:
            setattr(self, m, 0)


class PoolStats:
    """The nine statistics of one pool (``small_pool`` or ``large_pool``); also maintains the ``all`` peaks."""

    __slots__ = (*_POOL_SLOTS, "other", "peaks")
    # the slots above, spelled out for type checkers (the device's hot path updates them inline)
    allocation_cur: int
    allocation_peak: int
    allocation_freed: int
    allocation_base: int
    segment_cur: int
    segment_peak: int
    segment_freed: int
    segment_base: int
    active_cur: int
    active_peak: int
    active_freed: int
    active_base: int
    inactive_split_cur: int
    inactive_split_peak: int
    inactive_split_freed: int
    inactive_split_base: int
    allocated_bytes_cur: int
    allocated_bytes_peak: int
    allocated_bytes_freed: int
    allocated_bytes_base: int
    reserved_bytes_cur: int
    reserved_bytes_peak: int
    reserved_bytes_freed: int
    reserved_bytes_base: int
    active_bytes_cur: int
    active_bytes_peak: int
    active_bytes_freed: int
    active_bytes_base: int
    inactive_split_bytes_cur: int
    inactive_split_bytes_peak: int
    inactive_split_bytes_freed: int
    inactive_split_bytes_base: int
    requested_bytes_cur: int
    requested_bytes_peak: int
    requested_bytes_freed: int
    requested_bytes_base: int

    def __init__(self, peaks: AllPeaks) -> None:
        for name in _POOL_SLOTS:
            setattr(self, name, 0)
        self.peaks = peaks
        self.other: PoolStats = self  # set to the other pool by DeviceStats

    def get(self, metric: str, field: str) -> int:
        cur = getattr(self, metric + "_cur")
        if field == "current":
            return cur
        if field == "peak":
            return getattr(self, metric + "_peak")
        freed = getattr(self, metric + "_freed")
        if field == "freed":
            return freed
        return cur - getattr(self, metric + "_base") + freed  # allocated

    def change(self, metric: str, amount: int) -> None:
        """Generic increase (amount > 0) or decrease (amount < 0) of one metric (cold paths)."""
        cur = getattr(self, metric + "_cur") + amount
        setattr(self, metric + "_cur", cur)
        if amount > 0:
            if cur > getattr(self, metric + "_peak"):
                setattr(self, metric + "_peak", cur)
            total = cur + getattr(self.other, metric + "_cur")
            if total > getattr(self.peaks, metric):
                setattr(self.peaks, metric, total)
        elif amount < 0:
            setattr(self, metric + "_freed", getattr(self, metric + "_freed") - amount)

    def reset_peak(self) -> None:
        for m in POOL_METRICS:
            setattr(self, m + "_peak", getattr(self, m + "_cur"))

    def reset_accumulated(self) -> None:
        for m in POOL_METRICS:
            setattr(self, m + "_base", getattr(self, m + "_cur"))
            setattr(self, m + "_freed", 0)

    # -- hot paths: one call per allocator step (written out: this is where the time goes) ----------
    @cython.locals(c=cython.longlong)
    def on_alloc(self, size: int, requested: int) -> None:
        """A block of ``size`` bytes is handed out for a request of ``requested`` bytes."""
        o = self.other
        pk = self.peaks
        c = self.allocation_cur + 1
        self.allocation_cur = c
        if c > self.allocation_peak:
            self.allocation_peak = c
        if c + o.allocation_cur > pk.allocation:
            pk.allocation = c + o.allocation_cur
        c = self.active_cur + 1
        self.active_cur = c
        if c > self.active_peak:
            self.active_peak = c
        if c + o.active_cur > pk.active:
            pk.active = c + o.active_cur
        c = self.allocated_bytes_cur + size
        self.allocated_bytes_cur = c
        if c > self.allocated_bytes_peak:
            self.allocated_bytes_peak = c
        if c + o.allocated_bytes_cur > pk.allocated_bytes:
            pk.allocated_bytes = c + o.allocated_bytes_cur
        c = self.active_bytes_cur + size
        self.active_bytes_cur = c
        if c > self.active_bytes_peak:
            self.active_bytes_peak = c
        if c + o.active_bytes_cur > pk.active_bytes:
            pk.active_bytes = c + o.active_bytes_cur
        c = self.requested_bytes_cur + requested
        self.requested_bytes_cur = c
        if c > self.requested_bytes_peak:
            self.requested_bytes_peak = c
        if c + o.requested_bytes_cur > pk.requested_bytes:
            pk.requested_bytes = c + o.requested_bytes_cur

    def on_free_requested(self, size: int) -> None:
        """``free()`` was called: the block stops counting as allocated (it may stay active)."""
        self.allocation_cur -= 1
        self.allocation_freed += 1
        self.allocated_bytes_cur -= size
        self.allocated_bytes_freed += size

    def on_free_completed(self, size: int, requested: int) -> None:
        """The block returned to the free set (immediately, or when its stream events completed)."""
        self.active_cur -= 1
        self.active_freed += 1
        self.active_bytes_cur -= size
        self.active_bytes_freed += size
        self.requested_bytes_cur -= requested
        self.requested_bytes_freed += requested

    @cython.locals(c=cython.longlong)
    def on_inactive_split(self, count: int, nbytes: int) -> None:
        """Net change of free pieces of split (non-expandable) segments."""
        if count > 0:
            c = self.inactive_split_cur + count
            self.inactive_split_cur = c
            if c > self.inactive_split_peak:
                self.inactive_split_peak = c
            if c + self.other.inactive_split_cur > self.peaks.inactive_split:
                self.peaks.inactive_split = c + self.other.inactive_split_cur
        elif count < 0:
            self.inactive_split_cur += count
            self.inactive_split_freed -= count
        if nbytes > 0:
            c = self.inactive_split_bytes_cur + nbytes
            self.inactive_split_bytes_cur = c
            if c > self.inactive_split_bytes_peak:
                self.inactive_split_bytes_peak = c
            if c + self.other.inactive_split_bytes_cur > self.peaks.inactive_split_bytes:
                self.peaks.inactive_split_bytes = c + self.other.inactive_split_bytes_cur
        elif nbytes < 0:
            self.inactive_split_bytes_cur += nbytes
            self.inactive_split_bytes_freed -= nbytes

    def on_reserved(self, nbytes: int, segments: int) -> None:
        """Device memory obtained (> 0) or returned (< 0); ``segments`` is the segment-count change."""
        if nbytes:
            self.change("reserved_bytes", nbytes)
        if segments:
            self.change("segment", segments)


class AllStats:
    """The ``all`` stat type as a read-only view: sums of the two pools plus the tracked peaks."""

    __slots__ = ("small", "large", "peaks")

    def __init__(self, small: PoolStats, large: PoolStats, peaks: AllPeaks) -> None:
        self.small = small
        self.large = large
        self.peaks = peaks

    def get(self, metric: str, field: str) -> int:
        if field == "peak":
            return getattr(self.peaks, metric)
        return self.small.get(metric, field) + self.large.get(metric, field)

    @property
    def allocated_bytes_cur(self) -> int:
        return self.small.allocated_bytes_cur + self.large.allocated_bytes_cur

    @property
    def reserved_bytes_cur(self) -> int:
        return self.small.reserved_bytes_cur + self.large.reserved_bytes_cur

    @property
    def active_bytes_cur(self) -> int:
        return self.small.active_bytes_cur + self.large.active_bytes_cur

    @property
    def inactive_split_bytes_cur(self) -> int:
        return self.small.inactive_split_bytes_cur + self.large.inactive_split_bytes_cur

    @property
    def segment_cur(self) -> int:
        return self.small.segment_cur + self.large.segment_cur

    @property
    def allocated_bytes_peak(self) -> int:
        return self.peaks.allocated_bytes

    @property
    def reserved_bytes_peak(self) -> int:
        return self.peaks.reserved_bytes


class Stat:
    """A single device-level statistic (``oversize_allocations``, ``oversize_segments``)."""

    __slots__ = ("current", "peak", "allocated", "freed")

    def __init__(self) -> None:
        self.current = self.peak = self.allocated = self.freed = 0

    def increase(self, n: int = 1) -> None:
        self.current += n
        self.allocated += n
        if self.current > self.peak:
            self.peak = self.current

    def decrease(self, n: int = 1) -> None:
        self.current -= n
        self.freed += n


class DeviceStats:
    """Everything ``memory_stats()`` reports for one device."""

    __slots__ = (
        "all",
        "small",
        "large",
        "oversize_allocations",
        "oversize_segments",
        "num_alloc_retries",
        "num_ooms",
        "num_sync_all_streams",
        "num_device_alloc",
        "num_device_free",
        "num_oom_rejections",
        "max_split_size",
    )

    def __init__(self, max_split_size: int) -> None:
        peaks = AllPeaks()
        self.small = PoolStats(peaks)
        self.large = PoolStats(peaks)
        self.small.other = self.large
        self.large.other = self.small
        self.all = AllStats(self.small, self.large, peaks)
        self.oversize_allocations = Stat()
        self.oversize_segments = Stat()
        self.num_alloc_retries = 0
        self.num_ooms = 0
        self.num_sync_all_streams = 0
        self.num_device_alloc = 0
        self.num_device_free = 0
        self.num_oom_rejections = 0
        self.max_split_size = max_split_size

    def reset_peak(self) -> None:
        """``reset_peak_memory_stats``: every peak becomes the current value."""
        self.small.reset_peak()
        self.large.reset_peak()
        for m in POOL_METRICS:
            setattr(self.all.peaks, m, self.all.get(m, "current"))
        for s in (self.oversize_allocations, self.oversize_segments):
            s.peak = s.current

    def reset_accumulated(self) -> None:
        """``reset_accumulated_memory_stats``: allocated/freed and the ``num_*`` counters go to 0."""
        self.small.reset_accumulated()
        self.large.reset_accumulated()
        for s in (self.oversize_allocations, self.oversize_segments):
            s.allocated = s.freed = 0
        self.num_alloc_retries = 0
        self.num_ooms = 0
        self.num_sync_all_streams = 0
        self.num_device_alloc = 0
        self.num_device_free = 0

    def as_flat_dict(self, include_oom_rejections: bool = False) -> OrderedDict[str, int]:
        """The flattened, key-sorted dict of ``torch.cuda.memory_stats()``."""
        out: list[tuple[str, int]] = []
        for m in POOL_METRICS:
            for pool_name, p in (("all", self.all), ("small_pool", self.small), ("large_pool", self.large)):
                for f in FIELDS:
                    out.append((f"{m}.{pool_name}.{f}", p.get(m, f)))
        for name in ("oversize_allocations", "oversize_segments"):
            s = getattr(self, name)
            for f in FIELDS:
                out.append((f"{name}.{f}", getattr(s, f)))
        out += [
            ("num_alloc_retries", self.num_alloc_retries),
            ("num_ooms", self.num_ooms),
            ("num_sync_all_streams", self.num_sync_all_streams),
            ("num_device_alloc", self.num_device_alloc),
            ("num_device_free", self.num_device_free),
            ("max_split_size", self.max_split_size),
        ]
        if include_oom_rejections:
            out.append(("num_oom_rejections", self.num_oom_rejections))
        out.sort()
        return OrderedDict(out)

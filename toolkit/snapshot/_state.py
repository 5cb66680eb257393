"""Allocator state as plain, immutable seeds: at the end of a snapshot and at its first trace event.

A snapshot holds the *final* segments and the trace that led there; a replay (simulator or as recorded)
must start from the state at the *first* event. ``initial_state`` rebuilds it; ``final_state`` gives the
end state in the same form so a replay can be checked block for block; ``trace_events`` is the trace as
compact tuples.

How ``initial_state`` works, and every inference it makes (each inferred block is also reported, with
the rule used, by ``reconstruct_initial_state``):

1. Segment geometry, walking the trace backwards from the final segments: undo ``segment_alloc``
   (the segment did not exist yet), undo ``segment_free`` (it did, whole and free), undo
   ``segment_map`` / ``segment_unmap`` on the mapped runs of expandable segments (a snapshot reports each
   maximal mapped run as its own segment, so the state is a set of runs).
   Inferred: the pool of a segment freed during the trace: 2 MiB (kSmallBuffer) is the small pool, any
   other size the large pool (large-pool segments are never smaller than 10 MiB, spec 2.5). The pool of a
   run mapped during the trace is the pool of the ``alloc`` that follows the map (mapping happens inside
   that malloc); a run re-created by undoing an unmap takes the pool of the runs or maps it touches.
   The private-pool id of a segment freed during the trace is not recorded: (0, 0) is assumed.
2. Live blocks at the first event, from the address of every ``alloc``/``free_*`` entry:
   a block that is live at the end and has no entry at its address was live from the start (its size and
   requested size are read from the final layout); a block whose first entry is ``free_requested`` was
   allocated at the start, one whose first entry is ``free_completed`` was pending free (its
   ``free_requested`` came before recording began).
3. The size of a block allocated before recording began and freed during the trace is NOT recorded: its
   entries carry the requested size only (the real trace: the last allocation of 20,480,000 B sits in a
   20,971,520 B block; 11 of its 903 blocks allocated during the trace are larger than their rounded
   request). With ``r`` the rounded request and ``room`` the bytes up to the next live block (or the end of
   the segment/run):
   - ``next-alloc``: an ``alloc`` inside ``room`` before the block is freed must start exactly where the
     block ends (the free remainder after it is a single merged block and malloc takes a free block
     from its front), so size = that address - block address. Exact.
   - ``always-split``: small pool, or an expandable segment: blocks are split whenever >= 512 B remain
     (spec 2.8) and sizes are multiples of 512, so size == r. Exact.
   - ``unsplit-tail``: large pool with ``room - r <= 1 MiB``: every free large-pool block is > 1 MiB
     (a remainder is split off only when > 1 MiB), so no free block can follow it: size == room. Exact.
   - ``rounded``: large pool, more room and no evidence: size == r (the block was split when carved).
     A block carved unsplit from a free block of up to r + 1 MiB is also possible; this is reported as
     ambiguous. It changes nothing a replay *as recorded* can observe (the gap stays free until the block
     is freed and merges with it), only the free-block sizes a different policy would see.
   - ``oversize``: with ``max_split_size`` set, blocks >= it are never split: size == room if
     ``room - r < max_non_split_rounding`` else r (ambiguous).
   A size that would overrun ``room`` (rounding rules that do not match the recorder) is clamped to room
   and reported as ambiguous.
4. Free space between live blocks is one merged free block: the allocator merges free neighbours
   (spec 2.9); pending-free blocks are live, so they are never merged.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from toolkit.snapshot.normalize import SMALL_SEGMENT_BYTES, is_normalized, normalize_snapshot
from toolkit.snapshot._rounding import LARGE_SPLIT_SLACK_BYTES, RoundingRules
from toolkit.snapshot.schema import Pool, Segment, Snapshot, SnapshotError

_FREE_ACTIONS = ("free_requested", "free_completed")


class SeedBlock(NamedTuple):
    """One block of a seed: ``offset`` from the segment start, ``size`` bytes, ``allocated``.

    ``allocated`` means *active*: allocated, or freed but pending (see ``SegmentSeed.pending_free``);
    either way not reusable.
    """

    offset: int
    size: int
    allocated: bool


class TraceEvent(NamedTuple):
    """One trace entry, compact: ``size`` is the *requested* size for alloc/free entries.

    For ``oom`` entries ``addr`` carries the ``device_free`` bytes the entry records.
    """

    action: str
    addr: int
    size: int
    stream: int


@dataclass(frozen=True, slots=True)
class SegmentSeed:
    """One segment (or mapped run of an expandable segment) with blocks that tile it exactly.

    ``requested_sizes`` is aligned with ``blocks`` (0 for free blocks); ``pending_free`` lists the offsets
    of active blocks whose free was requested but not completed (multi-stream use).
    """

    address: int
    size: int
    pool: Pool
    stream: int
    is_expandable: bool
    blocks: tuple[SeedBlock, ...]
    requested_sizes: tuple[int, ...] = ()
    pending_free: tuple[int, ...] = ()
    pool_id: tuple[int, int] = (0, 0)
    device: int = 0

    def __post_init__(self) -> None:
        cursor = 0
        for b in self.blocks:
            if b.offset != cursor or b.size <= 0:
                raise ValueError(f"blocks of segment {self.address:#x} do not tile it at offset {cursor}")
            cursor += b.size
        if cursor != self.size:
            raise ValueError(f"blocks of segment {self.address:#x} cover {cursor} of {self.size} bytes")
        if self.requested_sizes and len(self.requested_sizes) != len(self.blocks):
            raise ValueError("requested_sizes must be aligned with blocks")

    @property
    def allocated_bytes(self) -> int:
        """Bytes of active blocks (allocated or pending free)."""
        return sum(b.size for b in self.blocks if b.allocated)

    @property
    def free_bytes(self) -> int:
        return self.size - self.allocated_bytes


@dataclass(frozen=True, slots=True)
class InferredBlock:
    """A block live at the first event whose size the trace does not record (see module docstring)."""

    address: int
    size: int
    requested_size: int
    rule: str  # next-alloc | always-split | unsplit-tail | rounded | oversize | clamped
    ambiguous: bool


@dataclass(frozen=True, slots=True)
class Reconstruction:
    seeds: tuple[SegmentSeed, ...]
    inferred: tuple[InferredBlock, ...]


# --------------------------------------------------------------------------------------------------
def trace_events(snapshot: Mapping[str, Any], device: int = 0) -> list[TraceEvent]:
    """The caching-allocator trace of ``device`` as ``TraceEvent`` tuples, oldest first."""
    snap = _normalized(snapshot)
    traces = snap["device_traces"]
    if device >= len(traces):
        return []
    make = TraceEvent._make
    return [make((e["action"], e["addr"], e["size"], e["stream"])) for e in traces[device]]


def final_state(snapshot: Mapping[str, Any], device: int = 0) -> list[SegmentSeed]:
    """Seeds for the segments of ``device`` as recorded at the end, sorted by address."""
    snap = _normalized(snapshot)
    seeds = [_seed_from_segment(s) for s in snap["segments"] if s["device"] == device]
    seeds.sort(key=lambda s: s.address)
    return seeds


def initial_state(
    snapshot: Mapping[str, Any], device: int = 0, *, rules: RoundingRules | None = None
) -> list[SegmentSeed]:
    """Seeds for the allocator state of ``device`` just before its first trace event (see module doc)."""
    return list(reconstruct_initial_state(snapshot, device, rules=rules).seeds)


def reconstruct_initial_state(
    snapshot: Mapping[str, Any], device: int = 0, *, rules: RoundingRules | None = None
) -> Reconstruction:
    """``initial_state`` plus the list of blocks whose size had to be inferred and how."""
    snap = _normalized(snapshot)
    rules = rules or RoundingRules.from_snapshot(snap)
    segments = [s for s in snap["segments"] if s["device"] == device]
    events = trace_events(snap, device)
    geometry = _initial_geometry(segments, events, rules)
    live = _initial_live_blocks(segments, events)
    return _build_seeds(geometry, live, events, rules, device)


# --------------------------------------------------------------------------------------------------
def _normalized(snapshot: Mapping[str, Any]) -> Snapshot:
    return snapshot if is_normalized(snapshot) else normalize_snapshot(snapshot)  # type: ignore[return-value]


def _seed_from_segment(s: Segment) -> SegmentSeed:
    base = s["address"]
    blocks = []
    requested = []
    pending = []
    for b in s["blocks"]:
        live = b["state"] != "inactive"
        blocks.append(SeedBlock(b["address"] - base, b["size"], live))
        requested.append(b["requested_size"] if live else 0)
        if b["state"] == "active_pending_free":
            pending.append(b["address"] - base)
    return SegmentSeed(
        address=base, size=s["total_size"], pool=s["segment_type"], stream=s["stream"],
        is_expandable=s["is_expandable"], blocks=tuple(blocks), requested_sizes=tuple(requested),
        pending_free=tuple(pending), pool_id=tuple(s["segment_pool_id"]), device=s["device"],  # type: ignore[arg-type]
    )


@dataclass(slots=True)
class _Geo:
    """Geometry of one segment / mapped run at the first event."""

    start: int
    end: int
    pool: str
    stream: int
    expandable: bool
    pool_id: tuple[int, int]


class _Live(NamedTuple):
    address: int
    size: int | None  # None: to be inferred
    requested: int
    pending: bool
    free_index: int  # index of the entry that releases it (evidence window), len(events) if never


def _initial_geometry(segments: list[Segment], events: list[TraceEvent], rules: RoundingRules) -> list[_Geo]:
    fixed: dict[int, _Geo] = {}
    runs: list[_Geo] = []
    for s in segments:
        g = _Geo(s["address"], s["address"] + s["total_size"], s["segment_type"], s["stream"],
                 s["is_expandable"], tuple(s["segment_pool_id"]))  # type: ignore[arg-type]
        if g.expandable:
            runs.append(g)
        else:
            fixed[g.start] = g
    map_pool = _map_pools(events, rules)
    for i in range(len(events) - 1, -1, -1):
        action, addr, size, stream = events[i]
        if action == "segment_alloc":
            alloc_geo = fixed.pop(addr, None)
            if alloc_geo is None or alloc_geo.end - alloc_geo.start != size:
                raise SnapshotError(
                    f"inconsistent trace: segment_alloc of {size} B at {addr:#x} (entry {i}) does not match "
                    "a segment that exists afterwards"
                )
        elif action == "segment_free":
            pool = "small" if size == SMALL_SEGMENT_BYTES else "large"
            fixed[addr] = _Geo(addr, addr + size, pool, stream, False, (0, 0))
        elif action == "segment_map":
            runs = _remove_range(runs, addr, addr + size, i)
        elif action == "segment_unmap":
            runs = _add_range(runs, addr, addr + size, stream, map_pool)
    geos = list(fixed.values()) + runs
    geos.sort(key=lambda g: g.start)
    for a, b in zip(geos, geos[1:]):
        if a.end > b.start:
            raise SnapshotError(f"inconsistent snapshot: segments at {a.start:#x} and {b.start:#x} overlap")
    return geos


def _map_pools(events: list[TraceEvent], rules: RoundingRules) -> list[tuple[int, int, str]]:
    """(start, end, pool) of every mapped range in the trace; pool from the alloc that follows the map."""
    out: list[tuple[int, int, str]] = []
    pending: list[tuple[int, int]] = []
    for action, addr, size, _ in events:
        if action == "segment_map":
            pending.append((addr, addr + size))
        elif action == "alloc" and pending:
            pool = rules.pool_of(rules.round_request(size))
            out.extend((a, b, pool) for a, b in pending)
            pending.clear()
    out.extend((a, b, "large") for a, b in pending)  # a map with no alloc after it (OOM): assume large
    return out


def _remove_range(runs: list[_Geo], start: int, end: int, index: int) -> list[_Geo]:
    for k, g in enumerate(runs):
        if g.start <= start and end <= g.end:
            pieces = [
                _Geo(a, b, g.pool, g.stream, True, g.pool_id) for a, b in ((g.start, start), (end, g.end)) if b > a
            ]
            return runs[:k] + pieces + runs[k + 1:]
    raise SnapshotError(
        f"inconsistent trace: segment_map of [{start:#x}, {end:#x}) (entry {index}) is not inside a mapped "
        "range that exists afterwards"
    )


def _add_range(runs: list[_Geo], start: int, end: int, stream: int, maps: list[tuple[int, int, str]]) -> list[_Geo]:
    before = next((g for g in runs if g.end == start and g.stream == stream), None)
    after = next((g for g in runs if g.start == end and g.stream == stream), None)
    neighbour = before or after
    if neighbour is not None:
        pool, pool_id = neighbour.pool, neighbour.pool_id
    else:
        pool = next((p for a, b, p in maps if a < end and start < b), "large")
        pool_id = (0, 0)
    rest = [g for g in runs if g is not before and g is not after]
    new_start = before.start if before else start
    new_end = after.end if after else end
    rest.append(_Geo(new_start, new_end, pool, stream, True, pool_id))
    return rest


def _initial_live_blocks(segments: list[Segment], events: list[TraceEvent]) -> list[_Live]:
    first: dict[int, tuple[str, int, int]] = {}  # addr -> (action, index, size) of its first entry
    completed_at: dict[int, int] = {}  # addr -> index of its first free_completed
    for i, (action, addr, size, _) in enumerate(events):
        if action == "alloc" or action in _FREE_ACTIONS:
            if addr not in first:
                first[addr] = (action, i, size)
            if action == "free_completed" and addr not in completed_at:
                completed_at[addr] = i
    live: list[_Live] = []
    never = len(events)
    for s in segments:
        for b in s["blocks"]:
            if b["state"] != "inactive" and b["address"] not in first:
                pending = b["state"] == "active_pending_free"
                live.append(_Live(b["address"], b["size"], b["requested_size"], pending, never))
    for addr, (action, _, size) in first.items():
        if action != "alloc":
            live.append(_Live(addr, None, size, action == "free_completed", completed_at.get(addr, never)))
    live.sort()
    return live


def _build_seeds(
    geos: list[_Geo], live: list[_Live], events: list[TraceEvent], rules: RoundingRules, device: int
) -> Reconstruction:
    starts = [g.start for g in geos]
    per_geo: dict[int, list[_Live]] = {}
    for blk in live:
        k = bisect_right(starts, blk.address) - 1
        if k < 0 or blk.address >= geos[k].end:
            raise SnapshotError(
                f"inconsistent trace: block {blk.address:#x} is live at the first event but lies in no segment "
                "that exists then"
            )
        per_geo.setdefault(k, []).append(blk)
    alloc_at = _alloc_index(events)
    seeds: list[SegmentSeed] = []
    inferred: list[InferredBlock] = []
    for k, g in enumerate(geos):
        blocks: list[SeedBlock] = []
        requested: list[int] = []
        pending: list[int] = []
        cursor = g.start
        members = per_geo.get(k, [])
        for j, blk in enumerate(members):
            if blk.address < cursor:
                raise SnapshotError(f"inconsistent snapshot: live blocks overlap at {blk.address:#x}")
            room_end = members[j + 1].address if j + 1 < len(members) else g.end
            size = blk.size
            if size is None:
                info = _infer_size(blk, room_end - blk.address, g, alloc_at, rules)
                inferred.append(info)
                size = info.size
            if blk.address + size > room_end:
                raise SnapshotError(f"inconsistent snapshot: block {blk.address:#x} overruns the next block")
            if blk.address > cursor:
                blocks.append(SeedBlock(cursor - g.start, blk.address - cursor, False))
                requested.append(0)
            blocks.append(SeedBlock(blk.address - g.start, size, True))
            requested.append(blk.requested)
            if blk.pending:
                pending.append(blk.address - g.start)
            cursor = blk.address + size
        if cursor < g.end:
            blocks.append(SeedBlock(cursor - g.start, g.end - cursor, False))
            requested.append(0)
        seeds.append(SegmentSeed(
            address=g.start, size=g.end - g.start, pool=g.pool, stream=g.stream,  # type: ignore[arg-type]
            is_expandable=g.expandable, blocks=tuple(blocks), requested_sizes=tuple(requested),
            pending_free=tuple(pending), pool_id=g.pool_id, device=device,
        ))
    return Reconstruction(tuple(seeds), tuple(inferred))


def _alloc_index(events: Iterable[TraceEvent]) -> tuple[list[int], dict[int, int]]:
    """Sorted alloc addresses and, per address, the index of its first alloc."""
    earliest: dict[int, int] = {}
    for i, (action, addr, _, _) in enumerate(events):
        if action == "alloc" and addr not in earliest:
            earliest[addr] = i
    return sorted(earliest), earliest


def _infer_size(
    blk: _Live, room: int, g: _Geo, alloc_at: tuple[list[int], dict[int, int]], rules: RoundingRules
) -> InferredBlock:
    r = rules.round_request(blk.requested)
    addrs, earliest = alloc_at
    if not g.expandable:
        lo = bisect_left(addrs, blk.address + 1)
        hi = bisect_left(addrs, blk.address + room)
        for a in addrs[lo:hi]:  # ascending: the first one allocated before the free is the remainder's front
            if earliest[a] < blk.free_index:
                return InferredBlock(blk.address, a - blk.address, blk.requested, "next-alloc", False)
    if r > room:  # the recorder's rounding differs from ours (e.g. an unknown pad): trust the geometry
        return InferredBlock(blk.address, room, blk.requested, "clamped", True)
    if g.expandable or g.pool == "small":
        size, rule, ambiguous = r, "always-split", False
    elif rules.is_oversize(r):
        size, rule, ambiguous = (room if room - r < rules.max_non_split_rounding_bytes else r), "oversize", room != r
    elif room - r <= LARGE_SPLIT_SLACK_BYTES:
        size, rule, ambiguous = room, "unsplit-tail", False
    else:
        size, rule, ambiguous = r, "rounded", True
    return InferredBlock(blk.address, size, blk.requested, rule, ambiguous)

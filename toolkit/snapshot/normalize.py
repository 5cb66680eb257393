"""One adapter from every accepted snapshot layout to the normalised ``Snapshot`` of ``schema.py``.

Accepted inputs (all plain data, as produced by ``load_snapshot`` or handed over in memory):

- CUDA ``torch.cuda.memory._snapshot()`` 2.1+ (the reference layout; passes through without copying);
- older CUDA: a bare list of segments (what ``torch.cuda.memory_snapshot()`` returns), blocks without
  ``address``/``requested_size``/``frames`` but with a 2.0-style ``history`` list
  (torch/cuda/_memory_viz.py ``_block_extra_legacy``), no ``is_expandable``/``segment_pool_id``,
  trace entries without ``time_us``;
- torch_npu (torch_npu/csrc/npu/Module.cpp ``THNPModule_memorySnapshot``): no ``allocator_settings``, no
  ``time_us``, ``pool_id`` tuples on trace entries, the extra action ``workspace_snapshot``, and the NPU
  *workspace allocator*'s segments appended to ``segments`` with its entries (``workspace_snapshot``,
  ``segment_alloc``, ``alloc`` per live workspace block) prepended to each device trace
  (NPUWorkspaceAllocator.cpp ``get_trace``/``get_segm``). Those are separated into ``workspace_segments``
  / ``workspace_traces``: the workspace allocator has its own aclrtMalloc'd memory and stats, so counting
  it as caching-allocator memory would be wrong.
- JSON copies of any of these (tuples came back as lists).

What is inferred (documented because nothing in the file says it):

- ``platform`` when not given: "npu" if a trace has ``workspace_snapshot`` entries or ``pool_id`` keys;
  "cuda" if ``allocator_settings`` or any ``time_us`` is present; else the allocator that recorded C++
  frames name (``c10::cuda::CUDACachingAllocator`` vs ``c10_npu::NPUCachingAllocator``: torch 2.1 CUDA
  snapshots have neither settings nor time stamps); otherwise "npu" when traces exist but carry no time
  stamps in a modern (``frames``-style) layout, else "cuda".
- workspace segments of a torch_npu snapshot recorded without history (no trace entries): the caching
  allocator lists its segments sorted by address, the workspace segments follow, so segments after the
  first break in ascending address order (per device) are taken as workspace. A workspace segment that
  happens to sort after every caching segment cannot be told apart without a trace.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, cast

from toolkit.core.errors import bounded_repr
from toolkit.snapshot.schema import (
    BLOCK_STATES,
    Platform,
    Segment,
    Snapshot,
    SnapshotError,
    TraceEntry,
)

_SEGMENT_KEYS = frozenset(
    ("device", "address", "total_size", "allocated_size", "active_size", "requested_size", "stream",
     "segment_type", "segment_pool_id", "is_expandable", "frames", "blocks")
)
_BLOCK_KEYS = frozenset(("address", "size", "requested_size", "state", "frames"))
_ENTRY_KEYS = frozenset(("action", "addr", "size", "stream"))
_WORKSPACE_ACTIONS = frozenset(("workspace_snapshot", "segment_alloc", "alloc"))
SMALL_SEGMENT_BYTES = 2 * 1024 * 1024  # kSmallBuffer: every small-pool segment is exactly this size


def is_normalized(snapshot: Mapping[str, Any]) -> bool:
    """True for dicts produced by ``normalize_snapshot`` (they carry ``platform``).

    In-memory dicts with a ``platform`` key are taken as normalised (the simulator emits that form);
    ``load_snapshot`` never trusts the key in a file and always normalises what it reads.
    """
    return isinstance(snapshot, Mapping) and "platform" in snapshot and "device_traces" in snapshot


def normalize_snapshot(
    raw: object, *, platform: Platform | None = None, source: str = "snapshot", trust_marker: bool = True,
    budget: int | None = None,
) -> Snapshot:
    """Return the normalised form of any accepted snapshot layout (see module docstring).

    Unchanged segment/block/entry dicts are shared with ``raw``, not copied (the 1 MB real trace
    normalises in about 3 ms). An already normalised dict is returned as is unless ``trust_marker`` is
    False or ``platform`` is given. Every field the toolkit reads is type-checked here, at the boundary
    (ints are ints, not bools, floats or strings, and fit in 64 bits). ``budget``: the most segments +
    blocks + trace entries to visit (``load_snapshot`` passes one proportional to the file size, so a
    small file whose lists share one huge list many times cannot cost more). Raises ``SnapshotError``
    naming ``source`` for anything that is not a snapshot.
    """
    if isinstance(raw, list):  # torch.cuda.memory_snapshot(): segments only
        raw = {"segments": raw, "device_traces": []}
    if not isinstance(raw, Mapping):
        raise SnapshotError(f"{source} is not a memory snapshot: top level is {type(raw).__name__}, not a dict")
    if "segments" not in raw:
        keys = ", ".join(bounded_repr(k, 30) for k in itertools.islice(raw, 8))
        raise SnapshotError(f"{source} is not a memory snapshot: no 'segments' key (keys: {keys or 'none'})")
    if platform is None and trust_marker and is_normalized(raw):
        return cast(Snapshot, raw)
    work = _Budget(budget, source)
    segments_raw = raw["segments"]
    traces_raw = raw.get("device_traces", [])
    _check_lists(segments_raw, traces_raw, source)
    _check_top_level(raw, source)

    segments = _segments(segments_raw, source, work)
    traces = [_entries(t, d, source) for d, t in enumerate(work.traces(traces_raw))]
    simulator = raw.get("simulator")  # snapshots from toolkit.sim say which allocator they model
    if platform is None:
        # toolkit releases before 2026-12 wrote the same facts as "flavor" and simulator["profile"]
        sim = simulator if isinstance(simulator, Mapping) else {}
        said = raw.get("platform") or raw.get("flavor") or sim.get("platform") or sim.get("profile")
        platform = cast(Platform, said) or _detect_platform(raw, segments_raw, traces)
    if not isinstance(platform, str) or platform not in ("cuda", "npu"):
        raise SnapshotError(f"{source}: unknown platform {bounded_repr(platform)}; expected 'cuda' or 'npu'")

    out: dict[str, Any] = {k: v for k, v in raw.items() if k not in ("segments", "device_traces", "flavor")}
    out["platform"] = platform
    if platform == "npu":
        known = simulator.get("workspace_addresses") if isinstance(simulator, Mapping) else None
        if known is not None and (not isinstance(known, list) or not all(_is_u64(a) for a in known)):
            raise SnapshotError(f"{source}: simulator.workspace_addresses must be a list of addresses")
        segments, traces, ws_segments, ws_traces = _split_workspace(segments, traces, known)
        # keep what an earlier normalisation (or a writer) already separated, checked like the rest
        ws_raw, ws_traces_raw = raw.get("workspace_segments", []), raw.get("workspace_traces", [])
        _check_lists(ws_raw, ws_traces_raw, source, "workspace_segments", "workspace_traces")
        out["workspace_segments"] = _segments(ws_raw, source, work, "workspace segment") + ws_segments
        old_ws = [_entries(t, d, source) for d, t in enumerate(work.traces(ws_traces_raw))]
        out["workspace_traces"] = _merge_traces(old_ws, ws_traces)
    out["segments"] = segments
    out["device_traces"] = traces
    return cast(Snapshot, out)


def check_normalized(snapshot: Mapping[str, Any], source: str = "snapshot") -> None:
    """Type-check an already normalised snapshot (what ``replay`` gets from a caller) without copying it.

    Raises ``SnapshotError`` for the first field ``normalize_snapshot`` would refuse.
    """
    _check_lists(snapshot.get("segments"), snapshot.get("device_traces", []), source)
    _check_top_level(snapshot, source)
    _segments(snapshot["segments"], source, _Budget(None, source))
    for d, t in enumerate(snapshot["device_traces"]):
        for i, e in enumerate(t):
            _entry(e, d, i, source)


def denormalize_snapshot(snapshot: Snapshot) -> dict[str, Any]:
    """The layout torch itself emits (workspace segments/entries put back), for writing to disk.

    ``platform`` and ``simulated`` stay as extra keys: PyTorch's memory_viz ignores unknown keys, and
    they make a written file load back identically.
    """
    out: dict[str, Any] = {k: v for k, v in snapshot.items() if k not in ("workspace_segments", "workspace_traces")}
    ws_segments = snapshot.get("workspace_segments") or []
    ws_traces = snapshot.get("workspace_traces") or []
    if ws_segments:
        out["segments"] = list(snapshot["segments"]) + list(ws_segments)
    if any(ws_traces):
        traces = [list(t) for t in snapshot["device_traces"]]
        while len(traces) < len(ws_traces):
            traces.append([])
        for d, ws in enumerate(ws_traces):
            traces[d] = list(ws) + traces[d]
        out["device_traces"] = traces
    return out


# --------------------------------------------------------------------------------------------------
_U64 = 1 << 64
_I64 = 1 << 63
_SEGMENT_TYPES = frozenset(("small", "large"))
_MAX_DEVICE = 1 << 16
_NO_FRAMES: list[Any] = []


def _is_u64(v: object) -> bool:
    return type(v) is int and 0 <= v < _U64  # type(), not isinstance: True is not an address


def _is_stream(v: object) -> bool:
    """Streams and pool ids: CUDA/ACL stream handles and pool counters, never negative."""
    return type(v) is int and 0 <= v < _U64


class _Budget:
    """Counts segments + blocks + entries visited (a file's lists may share one huge list, see prescan.py)."""

    __slots__ = ("left", "limit", "source")

    def __init__(self, limit: int | None, source: str) -> None:
        self.left = 0 if limit is None else limit
        self.limit = limit
        self.source = source

    def spend(self, n: int) -> None:
        if self.limit is None:
            return
        self.left -= n
        if self.left < 0:
            raise SnapshotError(
                f"{self.source}: more than {self.limit} segments, blocks and trace entries for a file this size "
                "(its lists repeat other lists many times over); not a snapshot torch writes")

    def traces(self, traces: list[Any]) -> list[Any]:
        self.spend(sum(len(t) for t in traces))
        return traces


def _check_lists(segments_raw: object, traces_raw: object, source: str, seg_key: str = "segments",
                 trace_key: str = "device_traces") -> None:
    if not isinstance(segments_raw, list):
        raise SnapshotError(f"{source}: '{seg_key}' is {type(segments_raw).__name__}, expected a list")
    if not isinstance(traces_raw, list) or not all(isinstance(t, list) for t in traces_raw):
        raise SnapshotError(f"{source}: '{trace_key}' must be a list of lists (one trace per device)")


def _check_top_level(raw: Mapping[str, Any], source: str) -> None:
    """The optional top-level fields the toolkit reads (rounding rules, recorded conf, labels)."""
    settings = raw.get("allocator_settings")
    if settings is not None:
        if not isinstance(settings, Mapping):
            raise SnapshotError(f"{source}: 'allocator_settings' is {type(settings).__name__}, expected a dict")
        table = settings.get("roundup_power2_divisions")
        if table is not None and not (
            isinstance(table, Mapping) and len(table) <= 64
            and all(((type(k) is str and k.isdigit() and len(k) < 20) or _is_u64(k)) and _is_u64(v)
                    for k, v in table.items())):
            raise SnapshotError(f"{source}: allocator_settings.roundup_power2_divisions must map sizes to ints, "
                                f"got {bounded_repr(table)}")
        for key in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"):
            if settings.get(key) is not None and not isinstance(settings.get(key), str):
                raise SnapshotError(f"{source}: allocator_settings.{key} must be a string, got "
                                    f"{bounded_repr(settings.get(key))}")
    for key, kind, name in (("external_annotations", list, "list"), ("simulator", Mapping, "dict")):
        if raw.get(key) is not None and not isinstance(raw.get(key), kind):
            raise SnapshotError(f"{source}: {key!r} is {type(raw.get(key)).__name__}, expected a {name}")
    if "simulated" in raw and type(raw["simulated"]) is not bool:
        raise SnapshotError(f"{source}: 'simulated' must be true or false, got {bounded_repr(raw['simulated'])}")


def _segments(segments_raw: list[Any], source: str, work: _Budget, what: str = "segment") -> list[Segment]:
    work.spend(len(segments_raw))
    out = [_segment(s, i, source, work, what) for i, s in enumerate(segments_raw)]
    seen: dict[tuple[int, int], int] = {}
    for i, s in enumerate(out):
        key = (s["device"], s["address"])
        if key in seen:  # two segments cannot start at one address: refuse rather than merge them
            raise SnapshotError(f"{source}: {what}s {seen[key]} and {i} both start at {s['address']:#x} on "
                                f"device {s['device']}")
        seen[key] = i
    return out


def _seg_int(seg: Mapping[str, Any], key: str, index: int, source: str, what: str) -> int:
    value = seg[key]
    if key == "device":
        ok, rng = type(value) is int and 0 <= value < _MAX_DEVICE, "from 0 to 65535"
    else:
        ok, rng = (_is_stream(value) if key == "stream" else _is_u64(value)), "from 0 to 2**64 - 1"
    if not ok:
        raise SnapshotError(f"{source}: {what} {index} has {key} {bounded_repr(value)}, expected an int {rng}")
    return value  # type: ignore[no-any-return]


def _segment(seg: object, index: int, source: str, work: _Budget | None = None, what: str = "segment") -> Segment:
    if not isinstance(seg, Mapping):
        raise SnapshotError(f"{source}: {what} {index} is {type(seg).__name__}, expected a dict")
    blocks_raw = seg.get("blocks")
    address = seg.get("address")
    if not _is_u64(address) or not isinstance(blocks_raw, list):
        raise SnapshotError(f"{source}: {what} {index} lacks an integer 'address' and a 'blocks' list "
                            f"(address {bounded_repr(address)})")
    address = cast(int, address)
    if not blocks_raw:
        raise SnapshotError(f"{source}: {what} {index} at {address:#x} has no blocks (blocks tile a segment)")
    if work is not None:
        work.spend(len(blocks_raw))
    blocks = []
    changed = False
    cursor = address
    for j, b in enumerate(blocks_raw):
        nb = _block(b, cursor, index, j, source)
        changed |= nb is not b
        cursor += nb["size"]
        blocks.append(nb)
    total = cursor - address
    if cursor > _U64:
        raise SnapshotError(f"{source}: {what} {index} at {address:#x} ends beyond the 64-bit address space")
    if seg.get("total_size", total) != total:
        raise SnapshotError(
            f"{source}: {what} {index} at {address:#x} has total_size {bounded_repr(seg['total_size'])} "
            f"but its blocks add up to {total}"
        )
    ints = {k: _seg_int(seg, k, index, source, what)
            for k in ("device", "allocated_size", "active_size", "requested_size", "stream") if k in seg}
    seg_type = seg.get("segment_type", "large")
    if type(seg_type) is not str or seg_type not in _SEGMENT_TYPES:
        raise SnapshotError(f"{source}: {what} {index} has segment_type {bounded_repr(seg_type)}, "
                            "expected 'small' or 'large'")
    pool_id = seg.get("segment_pool_id", (0, 0))
    if not (isinstance(pool_id, (list, tuple)) and len(pool_id) == 2 and all(_is_stream(p) for p in pool_id)):
        raise SnapshotError(f"{source}: {what} {index} has segment_pool_id {bounded_repr(pool_id)}, "
                            "expected two ints")
    if type(seg.get("is_expandable", False)) is not bool:
        raise SnapshotError(f"{source}: {what} {index} has is_expandable {bounded_repr(seg['is_expandable'])}, "
                            "expected true or false")
    if not isinstance(seg.get("frames", []), list):
        raise SnapshotError(f"{source}: {what} {index} has frames that are not a list")
    if not changed and _SEGMENT_KEYS <= seg.keys() and type(pool_id) is tuple:
        return cast(Segment, seg)
    allocated = sum(b["size"] for b in blocks if b["state"] == "active_allocated")
    active = sum(b["size"] for b in blocks if b["state"] != "inactive")
    requested = sum(b["requested_size"] for b in blocks if b["state"] != "inactive")
    default_type = "small" if total == SMALL_SEGMENT_BYTES else "large"
    out = dict(seg)
    out.update(
        device=ints.get("device", 0),
        total_size=total,
        allocated_size=ints.get("allocated_size", allocated),
        active_size=ints.get("active_size", active),
        requested_size=ints.get("requested_size", requested),
        stream=ints.get("stream", 0),
        segment_type=seg.get("segment_type", default_type),
        segment_pool_id=tuple(pool_id),
        is_expandable=seg.get("is_expandable", False),
        frames=seg.get("frames", []),
        blocks=blocks,
    )
    return cast(Segment, out)


def _block(b: object, address: int, si: int, bi: int, source: str) -> Any:
    if not isinstance(b, Mapping) or not _is_u64(b.get("size")) or b["size"] <= 0:
        size = b.get("size") if isinstance(b, Mapping) else None
        raise SnapshotError(f"{source}: block {bi} of segment {si} lacks a positive integer 'size' "
                            f"(got {bounded_repr(size)})")
    state = b.get("state")
    if type(state) is not str or state not in BLOCK_STATES:
        if "allocated" in b or "active" in b:  # oldest layout: booleans instead of a state string
            state = "active_allocated" if b.get("allocated") else (
                "active_pending_free" if b.get("active") else "inactive")
        else:
            raise SnapshotError(f"{source}: block {bi} of segment {si} has unknown state {bounded_repr(state)}")
    if b.get("address", address) != address:
        got = b["address"]
        shown = f"{got:#x}" if type(got) is int else bounded_repr(got)
        raise SnapshotError(
            f"{source}: block {bi} of segment {si} is at {shown}, expected {address:#x} "
            "(blocks must tile their segment)"
        )
    if "requested_size" in b and not _is_u64(b["requested_size"]):
        raise SnapshotError(f"{source}: block {bi} of segment {si} has requested_size "
                            f"{bounded_repr(b['requested_size'])}, expected an int from 0 to 2**64 - 1")
    if not isinstance(b.get("frames", []), list):
        raise SnapshotError(f"{source}: block {bi} of segment {si} has frames that are not a list")
    if state == b.get("state") and _BLOCK_KEYS <= b.keys():
        return b
    history = b.get("history") or [{}]
    if not isinstance(history, list) or not isinstance(history[0], Mapping):
        raise SnapshotError(f"{source}: block {bi} of segment {si} has a history that is not a list of dicts")
    size = b["size"]
    requested = b.get("requested_size", history[0].get("real_size", size if state != "inactive" else 0))
    frames = b.get("frames", history[0].get("frames", []))
    if not _is_u64(requested) or not isinstance(frames, list):
        raise SnapshotError(f"{source}: block {bi} of segment {si} has a malformed history entry")
    out = dict(b)
    out.pop("history", None)
    out.update(address=address, size=size, requested_size=requested, state=state, frames=frames)
    return out


def _entries(trace: list[Any], device: int, source: str) -> list[TraceEntry]:
    """The entries of one device trace, checked column by column (C-speed list builds) when every entry is
    already in torch's layout; entry by entry (with the exact complaint) otherwise."""
    try:
        if all(type(e) is dict for e in trace):
            columns = ([e["action"] for e in trace], [e["addr"] for e in trace], [e["size"] for e in trace],
                       [e["stream"] for e in trace], [e.get("time_us", 0) for e in trace])
            actions, addrs, sizes, streams, times = columns
            if (set(map(type, actions)) <= {str} and all(set(map(type, c)) <= {int} for c in columns[1:])
                    and (not trace or (0 <= min(addrs) and max(addrs) < _U64 and 0 <= min(sizes)
                                       and max(sizes) < _U64 and 0 <= min(streams) and max(streams) < _U64
                                       and 0 <= min(times) and max(times) < _U64))
                    and {type(e.get("frames", _NO_FRAMES)) for e in trace} <= {list}
                    and not any("pool_id" in e for e in trace)):
                return list(trace)
    except KeyError:
        pass
    return [_entry(e, device, i, source) for i, e in enumerate(trace)]


def _entry(e: object, device: int, index: int, source: str) -> TraceEntry:
    if not isinstance(e, Mapping) or type(e.get("action")) is not str:
        raise SnapshotError(f"{source}: trace entry {index} of device {device} has no 'action'")
    if _ENTRY_KEYS <= e.keys() and type(e.get("pool_id", ())) is tuple:
        addr, size, stream = e["addr"], e["size"], e["stream"]
        if (type(addr) is int and type(size) is int and type(stream) is int and 0 <= addr < _U64
                and 0 <= size < _U64 and 0 <= stream < _U64 and _is_u64(e.get("time_us", 0))
                and type(e.get("frames", _NO_FRAMES)) is list):
            return cast(TraceEntry, e)
    out = dict(e)
    if "addr" not in out:
        if "device_free" not in out and e["action"] != "snapshot":
            raise SnapshotError(f"{source}: trace entry {index} of device {device} "
                                f"({bounded_repr(e['action'])}) has no 'addr'")
        out["addr"] = out.get("device_free", 0)  # "oom" carries device_free instead of addr
    out.setdefault("size", 0)
    out.setdefault("stream", 0)
    for key, ok in (("addr", _is_u64), ("size", _is_u64), ("stream", _is_stream),
                    ("device_free", _is_u64), ("time_us", _is_u64)):
        if key in out and not ok(out[key]):
            raise SnapshotError(f"{source}: trace entry {index} of device {device} has {key} "
                                f"{bounded_repr(out[key])}, expected an int from 0 to 2**64 - 1")
    pool_id = out.get("pool_id")
    if pool_id is not None:
        if not (isinstance(pool_id, (list, tuple)) and len(pool_id) == 2 and all(_is_stream(p) for p in pool_id)):
            raise SnapshotError(f"{source}: trace entry {index} of device {device} has pool_id "
                                f"{bounded_repr(pool_id)}, expected two ints")
        out["pool_id"] = tuple(pool_id)
    if "frames" in out and not isinstance(out["frames"], list):
        raise SnapshotError(f"{source}: trace entry {index} of device {device} has frames that are not a list")
    return cast(TraceEntry, out)


def _detect_platform(raw: Mapping[str, Any], segments_raw: list[Any], traces: list[list[TraceEntry]]) -> Platform:
    entries = [e for t in traces for e in t[:64]]
    if any(e["action"] == "workspace_snapshot" or "pool_id" in e for e in entries):
        return "npu"
    if "allocator_settings" in raw or any("time_us" in e for e in entries):
        return "cuda"
    native = _frames_name_allocator(entries)
    if native is not None:
        return native
    legacy = any("history" in b for s in segments_raw[:8] if isinstance(s, Mapping) for b in s.get("blocks", [])[:4])
    return "npu" if entries and not legacy else "cuda"


def _frames_name_allocator(entries: list[TraceEntry]) -> Platform | None:
    """The allocator named by recorded C++ frames (``context="all"``), e.g. torch 2.1 CUDA snapshots.

    Those carry neither ``allocator_settings`` nor ``time_us``, but their frames name
    ``c10::cuda::CUDACachingAllocator`` (torch_npu's: ``c10_npu::NPUCachingAllocator``).
    """
    for e in entries:
        for f in e.get("frames") or ():
            name = f.get("name", "") if isinstance(f, Mapping) else ""
            if "NPUCachingAllocator" in name or "c10_npu::" in name:
                return "npu"
            if "CUDACachingAllocator" in name or "c10::cuda::" in name:
                return "cuda"
    return None


def _split_workspace(
    segments: list[Segment], traces: list[list[TraceEntry]], known: Any = None
) -> tuple[list[Segment], list[list[TraceEntry]], list[Segment], list[list[TraceEntry]]]:
    """Separate the NPU workspace allocator's segments and trace entries from the caching allocator's.

    ``known``: workspace segment addresses the writer listed (the simulator does, in
    ``snapshot["simulator"]["workspace_addresses"]``); otherwise the trace, else address order, decides.
    """
    listed = None if known is None else set(known)
    ws_addrs: dict[int, set[int]] = {}
    ws_traces: list[list[TraceEntry]] = []
    rest_traces: list[list[TraceEntry]] = []
    for device, trace in enumerate(traces):
        addrs = listed if listed is not None else {e["addr"] for e in trace if e["action"] == "workspace_snapshot"}
        ws_addrs[device] = addrs
        n = 0  # the workspace entries are a prefix of the device trace
        while n < len(trace) and trace[n]["action"] in _WORKSPACE_ACTIONS and trace[n]["addr"] in addrs:
            n += 1
        ws_traces.append(trace[:n])
        rest_traces.append(trace[n:])
    have_trace = listed is not None or any(ws_addrs.values()) or any(traces)
    keep: list[Segment] = []
    ws: list[Segment] = []
    last_addr: dict[int, int] = {}
    broken: set[int] = set()
    for seg in segments:
        d = seg["device"]
        if have_trace:
            (ws if seg["address"] in ws_addrs.get(d, listed or ()) else keep).append(seg)
            continue
        if d in broken or seg["address"] < last_addr.get(d, -1):  # order heuristic, see module docstring
            broken.add(d)
            ws.append(seg)
        else:
            keep.append(seg)
        last_addr[d] = seg["address"]
    return keep, rest_traces, ws, ws_traces


def _merge_traces(a: list[list[TraceEntry]], b: list[list[TraceEntry]]) -> list[list[TraceEntry]]:
    n = max(len(a), len(b))
    return [list(a[i] if i < len(a) else []) + list(b[i] if i < len(b) else []) for i in range(n)]

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

- ``flavor`` when not given: "npu" if a trace has ``workspace_snapshot`` entries or ``pool_id`` keys;
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

from collections.abc import Mapping
from typing import Any, cast

from toolkit.snapshot.schema import BLOCK_STATES, Flavor, Segment, Snapshot, SnapshotError, TraceEntry

_SEGMENT_KEYS = frozenset(
    ("device", "address", "total_size", "allocated_size", "active_size", "requested_size", "stream",
     "segment_type", "segment_pool_id", "is_expandable", "frames", "blocks")
)
_BLOCK_KEYS = frozenset(("address", "size", "requested_size", "state", "frames"))
_ENTRY_KEYS = frozenset(("action", "addr", "size", "stream"))
_WORKSPACE_ACTIONS = frozenset(("workspace_snapshot", "segment_alloc", "alloc"))
SMALL_SEGMENT_BYTES = 2 * 1024 * 1024  # kSmallBuffer: every small-pool segment is exactly this size


def is_normalized(snapshot: Mapping[str, Any]) -> bool:
    """True for dicts produced by ``normalize_snapshot`` (they carry ``flavor``).

    In-memory dicts with a ``flavor`` key are taken as normalised (the simulator emits that form);
    ``load_snapshot`` never trusts the key in a file and always normalises what it reads.
    """
    return isinstance(snapshot, Mapping) and "flavor" in snapshot and "device_traces" in snapshot


def normalize_snapshot(
    raw: object, *, flavor: Flavor | None = None, source: str = "snapshot", trust_marker: bool = True
) -> Snapshot:
    """Return the normalised form of any accepted snapshot layout (see module docstring).

    Unchanged segment/block/entry dicts are shared with ``raw``, not copied (the 1 MB real trace
    normalises in about 3 ms). An already normalised dict is returned as is unless ``trust_marker`` is
    False or ``flavor`` is given. Raises ``SnapshotError`` naming ``source`` for anything that is not a
    snapshot.
    """
    if isinstance(raw, list):  # torch.cuda.memory_snapshot(): segments only
        raw = {"segments": raw, "device_traces": []}
    if not isinstance(raw, Mapping):
        raise SnapshotError(f"{source} is not a memory snapshot: top level is {type(raw).__name__}, not a dict")
    if "segments" not in raw:
        keys = ", ".join(sorted(map(str, raw)))[:120]
        raise SnapshotError(f"{source} is not a memory snapshot: no 'segments' key (keys: {keys or 'none'})")
    if flavor is None and trust_marker and is_normalized(raw):
        return cast(Snapshot, raw)
    segments_raw = raw["segments"]
    traces_raw = raw.get("device_traces", [])
    if not isinstance(segments_raw, list):
        raise SnapshotError(f"{source}: 'segments' is {type(segments_raw).__name__}, expected a list")
    if not isinstance(traces_raw, list) or not all(isinstance(t, list) for t in traces_raw):
        raise SnapshotError(f"{source}: 'device_traces' must be a list of lists (one trace per device)")

    segments = [_segment(s, i, source) for i, s in enumerate(segments_raw)]
    traces = [[_entry(e, d, i, source) for i, e in enumerate(t)] for d, t in enumerate(traces_raw)]
    simulator = raw.get("simulator")  # snapshots from toolkit.sim say which allocator they model
    if flavor is None:
        profile = simulator.get("profile") if isinstance(simulator, Mapping) else None
        flavor = cast(Flavor, raw.get("flavor") or profile) or _detect_flavor(raw, segments_raw, traces)
    if flavor not in ("cuda", "npu"):
        raise SnapshotError(f"{source}: unknown flavor {flavor!r}; expected 'cuda' or 'npu'")

    out: dict[str, Any] = {k: v for k, v in raw.items() if k not in ("segments", "device_traces")}
    out["flavor"] = flavor
    if flavor == "npu":
        known = simulator.get("workspace_addresses") if isinstance(simulator, Mapping) else None
        segments, traces, ws_segments, ws_traces = _split_workspace(segments, traces, known)
        # keep what an earlier normalisation (or a writer) already separated
        out["workspace_segments"] = list(raw.get("workspace_segments", [])) + ws_segments
        out["workspace_traces"] = _merge_traces(raw.get("workspace_traces", []), ws_traces)
    out["segments"] = segments
    out["device_traces"] = traces
    return cast(Snapshot, out)


def denormalize_snapshot(snapshot: Snapshot) -> dict[str, Any]:
    """The layout torch itself emits (workspace segments/entries put back), for writing to disk.

    ``flavor`` and ``simulated`` stay as extra keys: PyTorch's memory_viz ignores unknown keys, and
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
def _segment(seg: object, index: int, source: str) -> Segment:
    if not isinstance(seg, Mapping):
        raise SnapshotError(f"{source}: segment {index} is {type(seg).__name__}, expected a dict")
    blocks_raw = seg.get("blocks")
    address = seg.get("address")
    if not isinstance(address, int) or not isinstance(blocks_raw, list):
        raise SnapshotError(f"{source}: segment {index} lacks an integer 'address' and a 'blocks' list")
    blocks = []
    changed = False
    cursor = address
    for j, b in enumerate(blocks_raw):
        nb = _block(b, cursor, index, j, source)
        changed |= nb is not b
        cursor += nb["size"]
        blocks.append(nb)
    total = cursor - address
    if seg.get("total_size", total) != total:
        raise SnapshotError(
            f"{source}: segment {index} at {address:#x} has total_size {seg['total_size']} "
            f"but its blocks add up to {total}"
        )
    pool_id = seg.get("segment_pool_id", (0, 0))
    if not changed and _SEGMENT_KEYS <= seg.keys() and type(pool_id) is tuple:
        return cast(Segment, seg)
    allocated = sum(b["size"] for b in blocks if b["state"] == "active_allocated")
    active = sum(b["size"] for b in blocks if b["state"] != "inactive")
    requested = sum(b["requested_size"] for b in blocks if b["state"] != "inactive")
    default_type = "small" if total == SMALL_SEGMENT_BYTES else "large"
    out = dict(seg)
    out.update(
        device=int(seg.get("device", 0)),
        total_size=total,
        allocated_size=int(seg.get("allocated_size", allocated)),
        active_size=int(seg.get("active_size", active)),
        requested_size=int(seg.get("requested_size", requested)),
        stream=int(seg.get("stream", 0)),
        segment_type=seg.get("segment_type", default_type),
        segment_pool_id=tuple(pool_id) if isinstance(pool_id, (list, tuple)) else (0, 0),
        is_expandable=bool(seg.get("is_expandable", False)),
        frames=seg.get("frames", []),
        blocks=blocks,
    )
    return cast(Segment, out)


def _block(b: object, address: int, si: int, bi: int, source: str) -> Any:
    if not isinstance(b, Mapping) or not isinstance(b.get("size"), int):
        raise SnapshotError(f"{source}: block {bi} of segment {si} lacks an integer 'size'")
    state = b.get("state")
    if state not in BLOCK_STATES:
        if "allocated" in b or "active" in b:  # oldest layout: booleans instead of a state string
            state = "active_allocated" if b.get("allocated") else (
                "active_pending_free" if b.get("active") else "inactive")
        else:
            raise SnapshotError(f"{source}: block {bi} of segment {si} has unknown state {state!r}")
    if b.get("address", address) != address:
        raise SnapshotError(
            f"{source}: block {bi} of segment {si} is at {b['address']:#x}, expected {address:#x} "
            "(blocks must tile their segment)"
        )
    if state == b.get("state") and _BLOCK_KEYS <= b.keys():
        return b
    history = b.get("history") or [{}]
    size = b["size"]
    out = dict(b)
    out.pop("history", None)
    out.update(
        address=address,
        size=size,
        requested_size=int(b.get("requested_size", history[0].get("real_size", size if state != "inactive" else 0))),
        state=state,
        frames=b.get("frames", history[0].get("frames", [])),
    )
    return out


def _entry(e: object, device: int, index: int, source: str) -> TraceEntry:
    if not isinstance(e, Mapping) or not isinstance(e.get("action"), str):
        raise SnapshotError(f"{source}: trace entry {index} of device {device} has no 'action'")
    if _ENTRY_KEYS <= e.keys() and type(e.get("pool_id", ())) is tuple:
        return cast(TraceEntry, e)
    out = dict(e)
    if "addr" not in out:
        if "device_free" not in out and e["action"] != "snapshot":
            raise SnapshotError(f"{source}: trace entry {index} of device {device} ({e['action']}) has no 'addr'")
        out["addr"] = int(out.get("device_free", 0))  # "oom" carries device_free instead of addr
    out.setdefault("size", 0)
    out.setdefault("stream", 0)
    if isinstance(out.get("pool_id"), list):
        out["pool_id"] = tuple(out["pool_id"])
    return cast(TraceEntry, out)


def _detect_flavor(raw: Mapping[str, Any], segments_raw: list[Any], traces: list[list[TraceEntry]]) -> Flavor:
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


def _frames_name_allocator(entries: list[TraceEntry]) -> Flavor | None:
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
    listed = None if known is None else {int(a) for a in known}
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

"""One flat dict of numbers describing a snapshot, for tables and the UI (formatting happens there)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from toolkit.snapshot.normalize import is_normalized, normalize_snapshot


def summarize(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """Totals over all devices of a snapshot's final state and its traces.

    Keys (bytes are ints): ``platform``, ``simulated``, ``devices``, ``segments``,
    ``expandable_segments``, ``reserved_bytes``, ``allocated_bytes``, ``active_bytes`` (allocated +
    pending free), ``pending_free_bytes``, ``requested_bytes``, ``inactive_bytes`` (reserved - active),
    ``inactive_split_bytes`` (free blocks inside segments that still hold live blocks: memory
    ``empty_cache`` cannot return), ``inactive_unsplit_bytes`` (whole free segments), ``largest_free_block_bytes``,
    ``blocks``, ``active_blocks``, ``small_pool_reserved_bytes``, ``large_pool_reserved_bytes``,
    ``workspace_segments``, ``workspace_reserved_bytes`` (torch_npu workspace allocator, not included in
    reserved), ``events`` (total), ``events_by_action`` (dict), ``first_time_us``, ``last_time_us``,
    ``time_span_us`` (None without time stamps).

    Example: the real CUDA trace in shared/data/traces gives ``segments == 516`` and
    ``events_by_action == {"alloc": 2058, "free_requested": 1155, "free_completed": 1155, "segment_alloc": 289}``.
    """
    snap = snapshot if is_normalized(snapshot) else normalize_snapshot(snapshot)
    segments = snap["segments"]
    out: dict[str, Any] = {
        "platform": snap.get("platform"),
        "simulated": bool(snap.get("simulated", False)),
        "devices": len({s["device"] for s in segments} | set(range(len(snap["device_traces"])))),
        "segments": len(segments),
        "expandable_segments": sum(1 for s in segments if s["is_expandable"]),
    }
    reserved = allocated = active = requested = pending = split_free = unsplit_free = largest = 0
    blocks = active_blocks = 0
    by_pool = {"small": 0, "large": 0}
    for s in segments:
        reserved += s["total_size"]
        by_pool[s["segment_type"]] = by_pool.get(s["segment_type"], 0) + s["total_size"]
        seg_blocks = s["blocks"]
        blocks += len(seg_blocks)
        for b in seg_blocks:
            state = b["state"]
            if state == "inactive":
                largest = max(largest, b["size"])
                if len(seg_blocks) > 1 and not s["is_expandable"]:
                    split_free += b["size"]
                elif len(seg_blocks) == 1:
                    unsplit_free += b["size"]
                continue
            active_blocks += 1
            active += b["size"]
            requested += b["requested_size"]
            if state == "active_allocated":
                allocated += b["size"]
            else:
                pending += b["size"]
    out.update(
        reserved_bytes=reserved, allocated_bytes=allocated, active_bytes=active, pending_free_bytes=pending,
        requested_bytes=requested, inactive_bytes=reserved - active, inactive_split_bytes=split_free,
        inactive_unsplit_bytes=unsplit_free, largest_free_block_bytes=largest, blocks=blocks,
        active_blocks=active_blocks, small_pool_reserved_bytes=by_pool["small"],
        large_pool_reserved_bytes=by_pool["large"],
    )
    ws = snap.get("workspace_segments") or []
    out["workspace_segments"] = len(ws)
    out["workspace_reserved_bytes"] = sum(s["total_size"] for s in ws)
    actions: Counter[str] = Counter()
    first = last = None
    for trace in snap["device_traces"]:
        actions.update(e["action"] for e in trace)
        times = [e["time_us"] for e in (trace[:1] + trace[-1:]) if "time_us" in e]
        if times:
            first = min(times) if first is None else min(first, min(times))
            last = max(times) if last is None else max(last, max(times))
    out["events"] = sum(actions.values())
    out["events_by_action"] = dict(actions)
    out["first_time_us"] = first
    out["last_time_us"] = last
    out["time_span_us"] = None if first is None or last is None else last - first
    return out

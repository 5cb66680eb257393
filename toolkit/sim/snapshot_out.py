"""``torch.cuda.memory._snapshot()``-shaped output of the simulator (docs/allocator.md §5.2, §5.4).

Segments carry their blocks and states; ``device_traces`` holds the recorded actions in torch's
vocabulary. Everything simulated is labelled: a top-level ``"simulated": True`` key (ignored by
PyTorch's memory_viz, which reads ``segments`` and ``device_traces`` only) plus a ``"simulator"`` dict.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from toolkit.sim._blocks import Block, Segment
from toolkit.sim._workspace import WorkspaceBlock

TraceTuple = tuple[str, int, int, int, int]  # (action, addr, size, stream, tick)


def segment_dicts(segments: Iterable[Segment], by_ptr: dict[int, Block], device: int) -> list[dict[str, Any]]:
    """One dict per segment; an expandable segment yields one dict per maximal run of mapped blocks."""
    out: list[dict[str, Any]] = []
    for seg in sorted(segments, key=lambda s: s.address):
        b: Block | None = by_ptr[seg.address]
        run: list[Block] = []
        while b is not None:
            if b.mapped:
                run.append(b)
            elif run:
                out.append(_segment_dict(seg, run, device))
                run = []
            b = b.next
        if run:
            out.append(_segment_dict(seg, run, device))
    return out


def _segment_dict(seg: Segment, blocks: list[Block], device: int) -> dict[str, Any]:
    block_dicts = []
    total = allocated = active = requested = 0
    for b in blocks:
        state = b.state
        block_dicts.append(
            {"address": b.ptr, "size": b.size, "requested_size": b.requested, "state": state, "frames": []}
        )
        total += b.size
        if state != "inactive":
            active += b.size
            requested += b.requested
            if b.allocated:
                allocated += b.size
    return {
        "device": device,
        "address": blocks[0].ptr,
        "total_size": total,
        "allocated_size": allocated,
        "active_size": active,
        "requested_size": requested,
        "stream": seg.stream,
        "segment_type": "small" if seg.pool.is_small else "large",
        "segment_pool_id": (0, 0),
        "is_expandable": seg.expandable,
        "frames": [],
        "blocks": block_dicts,
    }


def workspace_segment_dicts(blocks: dict[int, WorkspaceBlock], device: int) -> list[dict[str, Any]]:
    """torch_npu appends one "large" segment per workspace block; upstream never marks it allocated."""
    return [
        {
            "device": device,
            "address": w.address,
            "total_size": w.size,
            "allocated_size": 0,
            "active_size": 0,
            "requested_size": 0,
            "stream": stream,
            "segment_type": "large",
            "segment_pool_id": (0, 0),
            "is_expandable": False,
            "frames": [],
            "blocks": [
                {"address": w.address, "size": w.size, "requested_size": w.requested, "state": "inactive", "frames": []}
            ],
        }
        for stream, w in blocks.items()
    ]


def trace_dicts(trace: deque[TraceTuple] | None, platform: str) -> Iterator[dict[str, Any]]:
    """Trace entries as torch emits them (NPU entries have no ``time_us``; OOM uses ``device_free``)."""
    if not trace:
        return
    for action, addr, size, stream, tick in trace:
        entry: dict[str, Any] = {"action": action}
        entry["device_free" if action == "oom" else "addr"] = addr
        entry["size"] = size
        entry["stream"] = stream
        if platform == "cuda":
            entry["time_us"] = tick
        else:
            entry["pool_id"] = (0, 0)
        entry["frames"] = []
        yield entry


def workspace_trace_dicts(blocks: dict[int, WorkspaceBlock]) -> list[dict[str, Any]]:
    """torch_npu prepends, per workspace block: workspace_snapshot, segment_alloc, alloc."""
    out: list[dict[str, Any]] = []
    for stream, w in blocks.items():
        for action in ("workspace_snapshot", "segment_alloc", "alloc"):
            out.append({"action": action, "addr": w.address, "size": w.size, "stream": stream, "pool_id": (0, 0), "frames": []})
    return out


def allocator_settings(conf_text: str, settings: Any, version: tuple[int, int] | None) -> dict[str, Any]:
    """CUDA's ``allocator_settings`` block (keys as in the recorded trace; 2.9+ adds one key)."""
    from toolkit.sim.constants import SIZE_MAX

    divisions = settings.divisions or (0,) * 16
    out = {
        "PYTORCH_CUDA_ALLOC_CONF": conf_text,
        "max_split_size": -1 if settings.max_split_bytes == SIZE_MAX else settings.max_split_bytes,
        "garbage_collection_threshold": settings.gc_threshold,
        "expandable_segments": settings.expandable,
        "pinned_num_register_threads": 1,
        "release_lock_on_cudamalloc": False,
        "pinned_use_cuda_host_register": False,
        "roundup_power2_divisions": {str(1 << i): int(d) for i, d in enumerate(divisions)},
    }
    if version is None or version >= (2, 9):
        out["graph_capture_record_stream_reuse"] = False
    return out

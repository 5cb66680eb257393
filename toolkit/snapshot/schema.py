"""Types mirroring ``torch.cuda.memory._snapshot()`` (and torch_npu's copy of it), plus ``SnapshotError``.

Layout as emitted by torch/csrc/cuda/Module.cpp + memory_snapshot.cpp (PyTorch 2.1-2.11) and
torch_npu/csrc/npu/Module.cpp (see docs/allocator.md §5). ``normalize.py`` turns every
accepted variant into this form; code above it never branches on the source.
"""

from __future__ import annotations

from typing import Literal, TypedDict

from toolkit.core.errors import ToolkitError
from toolkit.core.vocab import Platform

BlockState = Literal["active_allocated", "active_pending_free", "inactive"]
SegmentType = Literal["small", "large"]
Pool = Literal["small", "large"]
TraceAction = Literal[
    "alloc",
    "free_requested",
    "free_completed",
    "segment_alloc",
    "segment_free",
    "segment_map",
    "segment_unmap",
    "snapshot",
    "oom",
    "workspace_snapshot",  # torch_npu only: a live NPU workspace-allocator block
]

BLOCK_STATES: frozenset[str] = frozenset(BlockState.__args__)  # type: ignore[attr-defined]
TRACE_ACTIONS: frozenset[str] = frozenset(TraceAction.__args__)  # type: ignore[attr-defined]


class SnapshotError(ToolkitError, ValueError):
    """A file or object is not a usable allocator snapshot (one-line message says what and where)."""


class Frame(TypedDict):
    filename: str
    line: int
    name: str


class Block(TypedDict):
    address: int  # segment address + sizes of the blocks before it
    size: int  # rounded block size (multiple of 512), bytes
    requested_size: int  # original request of the last allocation (stale for inactive blocks)
    state: BlockState
    frames: list[Frame]


class Segment(TypedDict):
    device: int
    address: int
    total_size: int  # == sum of block sizes
    allocated_size: int  # sum of active_allocated block sizes
    active_size: int  # sum of allocated + pending-free block sizes
    requested_size: int  # sum of requested sizes of active blocks
    stream: int
    segment_type: SegmentType
    segment_pool_id: tuple[int, int]  # (0, 0) = default pool; else a private pool (graphs, MemPool)
    is_expandable: bool  # expandable: one reported segment per maximal mapped run
    frames: list[Frame]
    blocks: list[Block]


class _TraceEntryRequired(TypedDict):
    action: str  # a TraceAction; unknown actions from forks are kept verbatim
    addr: int  # block/segment address; for "oom" the normaliser copies device_free here
    size: int  # alloc/free: *requested* bytes; segment_*: segment or mapped bytes
    stream: int


class TraceEntry(_TraceEntryRequired, total=False):
    time_us: int  # CUDA >= 2.1; absent on torch_npu and older CUDA
    frames: list[Frame]
    device_free: int  # "oom" only
    pool_id: tuple[int, int]  # torch_npu master
    compile_context: str
    user_metadata: str


class _SnapshotRequired(TypedDict):
    segments: list[Segment]  # caching-allocator segments only, all devices
    device_traces: list[list[TraceEntry]]  # one chronological list per device


class Snapshot(_SnapshotRequired, total=False):
    allocator_settings: dict[str, object]  # CUDA only
    external_annotations: list[dict[str, object]]  # CUDA only
    platform: Platform  # added by the normaliser: which allocator recorded it
    workspace_segments: list[Segment]  # torch_npu workspace allocator (not caching-allocator memory)
    workspace_traces: list[list[TraceEntry]]  # its entries, split out of device_traces
    simulated: bool  # set by the simulator; shown wherever the snapshot is displayed

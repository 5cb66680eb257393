"""Replay a recorded allocator trace on the simulator, under its recorded conf or any other.

"What would this run have done with expandable segments?" is one call::

    r = replay("dump_snapshot.pickle", conf="expandable_segments:True")
    r.timeline[["reserved_bytes", "recorded_reserved_bytes"]].plot()

How (and the choices it makes):

- The file is loaded with ``toolkit.snapshot.load_snapshot`` (restricted unpickler: nothing in it runs).
- Recording usually starts mid-run, so the allocator state at the first event is rebuilt with
  ``toolkit.snapshot.initial_state`` and seeded into the device at the recorded addresses. Under another
  conf those segments are kept as they were (like switching a conf at run time): only what happens from
  the first event on follows the new conf.
- The user-level requests drive the simulator: ``alloc`` -> ``malloc``, ``free_requested`` -> ``free``.
  A free whose ``free_completed`` does not follow at once was waiting for another stream
  (``record_stream``): it is replayed as pending and taken back at the recorded ``free_completed``.
  Streams are the recorded stream ids, so every stream has its own free blocks (best fit never crosses
  streams, as upstream's ``BlockComparatorSize`` orders by stream first).
- Segment entries are the allocator's own doing inside a call: ``segment_alloc`` / ``segment_map``
  inside the next malloc; a run of ``segment_free`` / ``segment_unmap`` inside an ``empty_cache()`` or
  inside the next malloc (GC, oversize release, release-and-retry; ``SimDevice.would_release_for``
  tells them apart; before a recorded ``oom`` it is always the failed malloc's release-and-retry). The
  loop holds them back and puts what the simulator did in that call on their rows, so ``reserved_bytes``
  on a ``segment_alloc`` row counts the new segment, as the recording does.
- A recorded ``oom`` is replayed as the malloc that failed (its size is ``params.size()``); without a
  given ``capacity_bytes`` the capacity is inferred from it (``infer_capacity``). A simulated OOM on an
  ``alloc`` the recording served (what-if confs) stops the replay; the timeline so far is kept.
- Addresses: with ``segment_addresses="recorded"`` (default under the recorded conf) each new segment,
  and each new expandable VA reservation, takes the address the recording gave it in the same malloc
  (``RecordedSegmentAddresses``), so a faithful simulator reproduces the run exactly; ``fidelity()``
  says whether it did. Under another conf addresses differ: recorded block addresses are mapped to
  simulated ones by the ``alloc`` events.
- Expandable segments seeded before the first event: a snapshot reports mapped runs, not the VA
  reservation around them. A seeded reservation starts at the lowest page the trace maps below its
  first run (else at that run).
- The torch version is inferred from what the snapshot holds (``toolkit.snapshot.version``), shown in
  ``result.torch_version`` / ``torch_version_source``; pass ``torch_version`` to override.
- A request the simulated state cannot serve (a free of a block it does not hold) stops the replay
  with a one-line ``ReplayDivergenceError`` in ``result.error`` (``completed`` is False); the timeline
  up to it is kept.
"""

from __future__ import annotations

import os
import struct
from array import array
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, cast

from toolkit.core.errors import ToolkitError
from toolkit.sim import SimDevice, SimOutOfMemoryError

try:  # the compiled twin reads the @cython.locals below (docs/performance.md); plain Python ignores them
    import cython
except ImportError:  # pragma: no cover - Cython not installed
    from toolkit import _cyshim as cython  # type: ignore[no-redef]
if not cython.compiled:  # compiled, _replayer.pxd cimports them
    from toolkit.sim.device import Block, PoolStats
from toolkit.snapshot.schema import SnapshotError
from toolkit.snapshot.version import infer_torch_version

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from toolkit.core.records import Run
    from toolkit.replay._fidelity import Fidelity
    from toolkit.sim.snapshot_out import TraceTuple
    from toolkit.snapshot import Snapshot
    from toolkit.snapshot.schema import Segment

SegmentAddresses = Literal["recorded", "fresh"]
TIMELINE_COLUMNS = (
    "event",
    "action",
    "size",
    "allocated_bytes",
    "reserved_bytes",
    "fragmentation_bytes",
    "inactive_split_bytes",
    "device_used_bytes",
    "segments",
    "recorded_reserved_bytes",
    "oom",
)
_PENDING_STREAM_BASE = 1 << 62  # pseudo streams that hold recorded pending frees (never real streams)


class ReplayError(SnapshotError):
    """A replay cannot start or go on with these arguments or this trace (one line says why)."""


class ReplayDivergenceError(ReplayError):
    """The recording asks for something the simulated state cannot do (e.g. free a block it lacks)."""

    def __init__(self, event: int, what: str) -> None:
        super().__init__(f"replay diverged at event {event}: {what}")
        self.event = event


class RecordedSegmentAddresses:
    """``segment_address`` callable: a new segment goes where the recording created it.

    The replay loop hands it the recorded ``segment_alloc`` / ``segment_map`` events of the malloc it is
    about to replay (``expect``); the k-th segment the simulator creates in that malloc takes the
    address of the k-th of them. A plain segment must have the recorded size; a new expandable VA
    reservation starts where the recording mapped its first pages (pages are mapped lowest address
    first, so the first map of a reservation is at its base: ``find_expandable_block`` and
    ``ExpandableSegment::map`` in c10/cuda/CUDACachingAllocator.cpp). Anything else (no recorded
    segment left, another size) falls back to the simulator's own address model and counts as a
    mismatch.
    """

    def __init__(self, expandable: bool = False) -> None:
        self.expandable = expandable
        self._queue: deque[tuple[str, int, int]] = deque()
        self.mismatches = 0

    def expect(self, events: list[tuple[str, int, int]]) -> None:
        """The recorded (action, address, size) of the segments the next malloc created."""
        self._queue = deque(e for e in events if e[0] in ("segment_alloc", "segment_map"))

    def __call__(self, size: int, stream: int) -> int | None:
        if not self._queue:
            self.mismatches += 1
            return None
        action, address, recorded_size = self._queue.popleft()
        if self.expandable:
            if action != "segment_map":
                self.mismatches += 1
                return None
            return address
        if action != "segment_alloc" or recorded_size != size:
            self.mismatches += 1
            return None
        return address


@dataclass
class ReplayResult:
    """Outcome of :func:`replay`: the per-event timeline and the device in its final state (simulated).

    The loop stores one row per event that changed the simulator (``rows``, flat int64: event index,
    allocated, reserved, inactive split, segments) and the timeline fills the events in between forward.
    """

    platform: str
    conf: str
    recorded_conf: str | None
    device: SimDevice
    events: list[Any] = field(repr=False)  # the replayed TraceEvents (all of them; see events_replayed)
    rows: array[int] = field(repr=False)  # flat int64: (event, allocated, reserved, inactive split, segments) per row
    initial: tuple[int, int, int, int] = (0, 0, 0, 0)  # allocated, reserved, inactive split, segments
    initial_recorded_reserved_bytes: int = 0
    device_fixed_bytes: int = 0  # workspace + context + external: device used = reserved + this
    events_total: int = 0
    events_replayed: int = 0
    address_mismatches: int = 0  # alloc events whose simulated address differs from the recorded one
    segment_mismatches: int = 0  # recorded-address mode: segments out of step with the recording
    oom: SimOutOfMemoryError | None = None  # a simulated OOM the recording did not have: the replay stopped
    oom_event: int | None = None
    recorded_ooms: int = 0
    replayed_ooms: list[int] = field(default_factory=list)  # recorded OOM events that failed in the simulator too
    snapshots: dict[int, dict[str, Any]] = field(default_factory=dict, repr=False)  # event -> state after it
    simulated: bool = True
    error: ToolkitError | None = None  # why the replay stopped early without an OOM (ReplayDivergenceError)
    divergences: list[tuple[int, str]] = field(default_factory=list, repr=False)  # first MAX_DIVERGENCES
    divergence_counts: dict[str, int] = field(default_factory=dict, repr=False)  # address / segment / oom
    allocs_replayed: int = 0
    device_index: int = 0
    torch_version: str | None = None  # the version whose behaviour was simulated
    torch_version_source: str = ""  # how it was chosen: inferred from what, or given
    capacity_source: str = ""  # how capacity_bytes was chosen
    recorded_segments: list[Segment] | None = field(default=None, repr=False)  # final, this device
    recorded_platform: str = ""  # the allocator that recorded it ("" = same as ``platform``)

    @cached_property
    def arrays(self) -> dict[str, np.ndarray]:
        """The per-event series as int64 numpy arrays (the columns of ``timeline`` that are numbers)."""
        import numpy as np

        n = self.events_replayed
        flat = np.frombuffer(self.rows, dtype=np.int64).reshape(-1, 5) if self.rows else np.empty((0, 5), np.int64)
        table = np.concatenate([np.array([self.initial], dtype=np.int64), flat[:, 1:]])
        which = np.full(n, -1, dtype=np.int64)
        if len(flat):
            which[flat[:, 0]] = np.arange(len(flat), dtype=np.int64)
        which = np.maximum.accumulate(which) + 1 if n else which  # row 0 is the initial state
        values = table[which]
        sign = {"segment_alloc": 1, "segment_map": 1, "segment_free": -1, "segment_unmap": -1}
        delta = np.fromiter((sign.get(e[0], 0) * e[2] for e in self.events[:n]), dtype=np.int64, count=n)
        allocated, reserved = values[:, 0], values[:, 1]
        return {
            "event": np.arange(n, dtype=np.int64),
            "size": np.fromiter((e[2] for e in self.events[:n]), dtype=np.int64, count=n),
            "allocated_bytes": allocated,
            "reserved_bytes": reserved,
            "fragmentation_bytes": reserved - allocated,
            "inactive_split_bytes": values[:, 2],
            "device_used_bytes": reserved + self.device_fixed_bytes,
            "segments": values[:, 3],
            "recorded_reserved_bytes": self.initial_recorded_reserved_bytes + np.cumsum(delta),
        }

    @cached_property
    def timeline(self) -> pd.DataFrame:
        """One row per trace event (columns: ``TIMELINE_COLUMNS``), bytes as int64."""
        import numpy as np
        import pandas as pd

        data: dict[str, Any] = dict(self.arrays)
        n = self.events_replayed
        data["action"] = [e[0] for e in self.events[:n]]
        oom = np.zeros(n, dtype=bool)
        if self.oom_event is not None and n:
            oom[-1] = True
        data["oom"] = oom
        frame = pd.DataFrame(data, columns=list(TIMELINE_COLUMNS))
        frame.attrs["simulated"] = True
        frame.attrs["conf"] = self.conf
        return frame

    @property
    def completed(self) -> bool:
        """Every event replayed: no simulated OOM the recording did not have, no divergence that stopped it."""
        return self.oom is None and self.error is None and self.events_replayed == self.events_total

    @property
    def stop_reason(self) -> str | None:
        """One line: why the replay stopped early, or None."""
        if self.error is not None:
            return str(self.error)
        if self.oom is not None:
            return f"simulated OOM at event {self.oom_event}: {str(self.oom).splitlines()[0][:160]}"
        return None

    def fidelity(self) -> Fidelity:
        """How closely this replay follows the recording (see ``toolkit.replay._fidelity``)."""
        from toolkit.replay._fidelity import fidelity

        return fidelity(self)

    def to_run(self, steps: int | None = None, name: str | None = None) -> Run:
        """The replay as a ``toolkit.core.records.Run`` (one ``MemorySample`` per kept snapshot, or per
        ``steps`` evenly spaced events) so that every plot takes a replay."""
        from toolkit.replay._fidelity import replay_run

        return replay_run(self, steps=steps, name=name)

    def summary(self) -> dict[str, Any]:
        """Headline numbers (bytes as ints) for tables and comparisons."""
        arr = self.arrays
        empty = self.events_replayed == 0
        return {
            "platform": self.platform,
            "conf": self.conf,
            "simulated": True,
            "events": self.events_replayed,
            "completed": self.completed,
            "oom_event": self.oom_event,
            "peak_reserved_bytes": 0 if empty else int(arr["reserved_bytes"].max()),
            "peak_allocated_bytes": 0 if empty else int(arr["allocated_bytes"].max()),
            "peak_fragmentation_bytes": 0 if empty else int(arr["fragmentation_bytes"].max()),
            "final_reserved_bytes": 0 if empty else int(arr["reserved_bytes"][-1]),
            "num_alloc_retries": self.device.memory_stats()["num_alloc_retries"],
        }

    def __repr__(self) -> str:
        if self.completed:
            status = "completed"
        elif self.oom is not None:
            status = f"OOM at event {self.oom_event}"
        else:
            status = f"stopped at event {self.events_replayed - 1}"
        return (
            f"ReplayResult(platform={self.platform!r}, conf={self.conf!r}, events={self.events_replayed}/"
            f"{self.events_total}, {status}) [simulated]"
        )


def recorded_conf(snapshot: Mapping[str, Any]) -> str | None:
    """The conf string the recording ran with, when the snapshot says (CUDA ``allocator_settings``)."""
    settings = snapshot.get("allocator_settings") or {}
    for key in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"):
        value = settings.get(key)
        if isinstance(value, str):
            return value
    return None


def guess_torch_version(snapshot: Mapping[str, Any]) -> str | None:
    """The version of ``toolkit.snapshot.version.infer_torch_version`` (kept for callers of the old name)."""
    return infer_torch_version(snapshot).version


def _load(source: str | os.PathLike[str] | bytes | Mapping[str, Any]) -> Snapshot:
    from toolkit.snapshot import load_snapshot, normalize_snapshot
    from toolkit.snapshot.normalize import check_normalized, is_normalized

    if isinstance(source, Mapping):
        if is_normalized(source):  # trusted layout, but the field types are still checked at the boundary
            check_normalized(source)
            return source  # type: ignore[return-value]
        return normalize_snapshot(source)
    return load_snapshot(source)


def _check_replay_args(platform: object, device: object, capacity_bytes: object, context_bytes: object,
                       memory_fraction: object) -> None:
    """Boundary checks of ``replay``'s own arguments: one-line ``ReplayError`` instead of a TypeError later."""
    from toolkit.core.errors import bounded_repr

    if platform not in (None, "cuda", "npu"):
        raise ReplayError(f"platform must be 'cuda', 'npu' or None, got {bounded_repr(platform)}")
    if type(device) is not int or not 0 <= device < 1 << 16:
        raise ReplayError(f"device must be an int from 0, got {bounded_repr(device)}")
    for name, value in (("capacity_bytes", capacity_bytes), ("context_bytes", context_bytes)):
        if value is not None and (type(value) is not int or value < 0):
            raise ReplayError(f"{name} must be an int number of bytes, got {bounded_repr(value)}")
    if memory_fraction is not None and (type(memory_fraction) not in (int, float) or not 0 < cast(float, memory_fraction) <= 1):
        raise ReplayError(f"memory_fraction must be a number in (0, 1], got {bounded_repr(memory_fraction)}")


def _one_line_errors(fn: Any) -> Any:
    """A trace the simulator cannot follow (a double free, a segment at an odd address) is the input's
    fault: the simulator's ``ValueError`` becomes the toolkit's one-line ``ReplayError``."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ValueError as exc:
            if isinstance(exc, ToolkitError):
                raise
            raise ReplayError(f"cannot replay this trace: {' '.join(str(exc).split())[:300]}") from None

    return wrapper


@_one_line_errors
def replay(
    source: str | os.PathLike[str] | bytes | Mapping[str, Any],
    conf: Any = None,
    platform: Literal["cuda", "npu"] | None = None,
    *,
    torch_version: str | None = None,
    capacity_bytes: int | None = None,
    context_bytes: int | None = None,
    memory_fraction: float | None = None,
    segment_addresses: SegmentAddresses | None = None,
    device: int = 0,
    record_history: bool = False,
    snapshot_at: Iterable[int] = (),
    **device_options: Any,
) -> ReplayResult:
    """Replay a recorded snapshot's allocation requests on a :class:`SimDevice`.

    Args:
        source: snapshot path (``.pickle`` from ``_dump_snapshot``, CUDA or torch_npu; ``.json``; ``.gz``),
            its bytes, or an already loaded snapshot dict.
        conf: conf string or ``AllocConf`` to replay under; None = the recorded conf (CUDA snapshots
            record it; torch_npu snapshots do not, so None means the defaults there).
        platform: ``"cuda"`` or ``"npu"``; None = the allocator that recorded it.
        torch_version: version-dependent behaviour (see ``SimDevice``); None = inferred from a CUDA
            snapshot (``toolkit.snapshot.version.infer_torch_version``), else the newest dialect.
        capacity_bytes: device memory; None = inferred (``infer_capacity``: from a recorded OOM, else
            the default). A simulated OOM the recording did not have stops the replay (flagged).
        context_bytes: runtime overhead counted in ``device_used_bytes`` (default 0 here: a replay
            studies the allocator).
        memory_fraction: ``set_per_process_memory_fraction`` of the recorded run (snapshots do not
            record it); also what makes ``garbage_collection_threshold`` active.
        segment_addresses: ``"recorded"`` to place new segments at the recorded ``segment_alloc``
            addresses (default when replaying under the recorded conf), ``"fresh"`` otherwise.
        device: which device trace of the snapshot to replay.
        record_history: record the simulated trace (``result.device.snapshot()["device_traces"]``).
        snapshot_at: event indices after which to keep the allocator state (``result.snapshots``), taken
            in the same pass (for the step-by-step inspector, see :func:`replay_steps`).
        **device_options: passed to ``SimDevice`` (``tie_break``, ``npu_pad_bytes``, ``external_bytes``).

    Returns:
        ReplayResult with ``timeline`` (pandas DataFrame, one row per trace event) and ``device``.
    """
    from toolkit.snapshot import initial_state, trace_events

    _check_replay_args(platform, device, capacity_bytes, context_bytes, memory_fraction)
    snap = _load(source)
    recorded_platform = snap.get("platform", "cuda")
    platform = platform or recorded_platform
    recorded = recorded_conf(snap)
    same_conf = conf is None or (isinstance(conf, str) and conf == (recorded or ""))
    if conf is None:
        conf = recorded or ""
    if torch_version is None and platform == recorded_platform:
        inferred = infer_torch_version(snap)
        torch_version, version_source = inferred.version, inferred.reason
    else:
        version_source = "given" if torch_version is not None else "none (another allocator's recording)"
    events = trace_events(snap, device)
    if segment_addresses is None:
        segment_addresses = "recorded" if same_conf and platform == recorded_platform else "fresh"
    if segment_addresses not in ("recorded", "fresh"):
        raise ValueError(f"segment_addresses must be 'recorded' or 'fresh', got {segment_addresses!r}")
    seeds = initial_state(snap, device)
    capacity_source = "given"
    if capacity_bytes is None:
        capacity_bytes, capacity_source = infer_capacity(seeds, events, platform)
        if context_bytes is None:
            context_bytes = 0
    feeder = None
    if segment_addresses == "recorded":
        feeder = RecordedSegmentAddresses()
    dev = SimDevice(
        platform,
        _conf_for(conf, platform, torch_version),
        capacity_bytes=capacity_bytes,
        torch_version=torch_version,
        segment_address=feeder,
        context_bytes=0 if context_bytes is None else context_bytes,
        device=device,
        **device_options,
    )
    if feeder is not None:
        feeder.expandable = dev.settings.expandable
    # Segments that existed before recording get registration numbers in creation order. That order is
    # not recorded; drivers hand out decreasing addresses, so the highest address is taken as the oldest
    # (matters only for the registration-order tie-break of recent CUDA). Expandable runs go last, lowest
    # first, so the first run of each reservation is its base.
    seeds.sort(key=lambda s: (s.is_expandable, -s.address if not s.is_expandable else s.address))
    reservations = _reservations(dev, [s for s in seeds if s.is_expandable], events)
    stale = _untouched_free_requests(snap, device, events)
    for seed in seeds:
        requested = list(seed.requested_sizes or (0,) * len(seed.blocks))
        for j, b in enumerate(seed.blocks):
            if not b.allocated:
                requested[j] = stale.get((seed.address + b.offset, b.size), requested[j])
        dev.add_segment(
            seed.address,
            seed.size,
            pool=seed.pool,
            stream=seed.stream,
            blocks=[(b.offset, b.size, b.allocated, r) for b, r in zip(seed.blocks, requested)],
            expandable=seed.is_expandable,
            va_base=reservations.get(seed.address, (None, None))[0],
            va_bytes=reservations.get(seed.address, (None, None))[1],
        )
    pending: dict[int, int] = {}
    for seed in seeds:  # blocks whose free was requested before recording began wait for their events
        for offset in seed.pending_free:
            pending[seed.address + offset] = stream = _PENDING_STREAM_BASE - 1 - len(pending)
            dev.record_stream(seed.address + offset, stream)
            dev.free(seed.address + offset)
    if memory_fraction is not None:
        dev.set_per_process_memory_fraction(memory_fraction)
    if record_history:
        dev.record_history()
    result = replay_events(
        dev, events, conf_text=dev.settings.conf_text, snapshot_at=snapshot_at, feeder=feeder, pending=pending
    )
    result.recorded_conf = recorded
    result.segment_mismatches += feeder.mismatches if feeder is not None else 0
    result.device_index = device
    result.torch_version = torch_version
    result.torch_version_source = version_source
    result.capacity_source = capacity_source
    result.recorded_segments = [seg for seg in snap["segments"] if seg["device"] == device]
    result.recorded_platform = recorded_platform
    return result


def _untouched_free_requests(snap: Mapping[str, Any], device: int, events: list[Any]) -> dict[tuple[int, int], int]:
    """(address, size) -> requested size of final free blocks no trace event touches.

    A freed block keeps the requested size of its last allocation (``free_block`` leaves
    ``requested_size`` alone; the snapshot reports it for inactive blocks: 72 of the 103 inactive
    blocks of cuda-torch29-training have one). For a free block that no event touches during the trace
    the value predates the recording, so only the final snapshot knows it.
    """
    touched = sorted(e[1] for e in events if e[0] in ("alloc", "free_requested", "free_completed"))
    out: dict[tuple[int, int], int] = {}
    for seg in snap["segments"]:
        if seg["device"] != device:
            continue
        for b in seg["blocks"]:
            if b["state"] == "inactive" and b["requested_size"]:
                lo = bisect_left(touched, b["address"])
                if lo == len(touched) or touched[lo] >= b["address"] + b["size"]:
                    out[(b["address"], b["size"])] = b["requested_size"]
    return out


def _conf_for(conf: Any, platform: str, torch_version: str | None) -> Any:
    """A conf string parsed in the dialect of ``torch_version``, or of the oldest one the parser knows.

    The conf parser models torch 2.6 and later; an older recording (torch 2.1) ran without any
    ``allocator_settings`` to read back, and its (empty or plain) conf reads the same in 2.6.
    """
    if not isinstance(conf, str):
        return conf
    from toolkit.conf import parse
    from toolkit.conf.dialects import SUPPORTED_VERSIONS
    from toolkit.sim.settings import parse_version

    version = torch_version
    if platform == "cuda" and version is not None:
        oldest = SUPPORTED_VERSIONS["cuda"][0]
        if parse_version(version) < parse_version(oldest):
            version = oldest
    return parse(conf, platform=platform, version=version)


def infer_capacity(seeds: list[Any], events: list[Any], platform: str) -> tuple[int, str]:
    """Device memory for a replay when none is given: what the recording proves, and how.

    Snapshots do not record the device's total memory. A recorded ``oom`` entry carries the free
    bytes ``cudaMemGetInfo`` reported after the failed release-and-retry (``DeviceCachingAllocator::
    malloc`` in c10/cuda/CUDACachingAllocator.cpp: ``record_trace(TraceEntry::OOM, device_free, ...)``),
    so the memory this process could use is its reserved bytes at that moment plus that free memory
    (context and other processes' memory are inside neither: the replay then runs with
    ``context_bytes=0``). Several OOMs: the smallest such bound, so each of them fails. Without an OOM:
    the default capacity, raised to the recorded peak reserved if the recording held more.
    """
    from toolkit.sim.device import DEFAULT_CAPACITY_BYTES

    reserved = sum(s.size for s in seeds)
    peak = reserved
    bound: int | None = None
    first = -1
    for i, (action, addr, size, _) in enumerate(events):
        sign = _SEGMENT_SIGN.get(action)
        if sign is not None:
            reserved += sign * size
            peak = max(peak, reserved)
        elif action == "oom":
            if bound is None or reserved + addr < bound:
                bound, first = reserved + addr, i
    if bound is not None:
        return bound, f"reserved + free bytes at the recorded OOM (event {first})"
    default = DEFAULT_CAPACITY_BYTES[platform]
    if peak > default:
        return peak, "the recorded peak reserved (above the default capacity)"
    return default, f"default ({default // 2**30} GiB; the recording has no OOM to infer it from)"


_SEGMENT_SIGN = {"segment_alloc": 1, "segment_map": 1, "segment_free": -1, "segment_unmap": -1}
_RELEASES = ("segment_free", "segment_unmap")
MAX_DIVERGENCES = 50  # divergences kept with their description (all are counted)


_ROW = struct.Struct("=5q")  # one timeline row, native byte order: the same bytes as array("q") holds

if not cython.compiled:  # compiled, _replayer.pxd defines it as five C stores into the array (no bytes, no boxing)

    def put_row(rows: array[int], i: int, a: int, r: int, s: int, g: int) -> None:
        """Append one timeline row (event, allocated, reserved, inactive split, segments) to the flat rows."""
        rows.frombytes(_ROW.pack(i, a, r, s, g))
assert _ROW.size == 5 * array("q").itemsize


@cython.locals(small=PoolStats, large=PoolStats, b=Block, i=cython.Py_ssize_t, n=cython.Py_ssize_t, addr_map=dict,
               by_ptr=dict, pending=dict, ra=cython.longlong, rr=cython.longlong, rs=cython.longlong, rg=cython.longlong)
def replay_events(
    dev: SimDevice,
    events: list[Any],
    conf_text: str | None = None,
    snapshot_at: Iterable[int] = (),
    feeder: RecordedSegmentAddresses | None = None,
    pending: dict[int, int] | None = None,
) -> ReplayResult:
    """The replay loop: drive ``dev`` with the user-level requests of ``events`` (``TraceEvent`` tuples).

    For callers that built and seeded the device themselves; ``replay`` does both and calls this.
    ``snapshot_at``: event indices after which ``dev.snapshot()`` is kept in ``result.snapshots``.
    ``feeder``: the ``segment_address`` callable of ``dev`` when it places segments as recorded.
    ``pending``: seeded blocks already pending free (address -> the pseudo stream they wait for).

    A recorded ``segment_*`` entry is the allocator's own doing inside the next call (malloc, or
    ``empty_cache``): the loop holds it back, captures what the simulator did in that call and puts
    each simulated segment operation on the recorded row it answers (so ``reserved_bytes`` on a
    ``segment_alloc`` row already counts the segment, as ``recorded_reserved_bytes`` does). A recorded
    ``oom`` entry is replayed as the failing malloc (``params.size()``, already rounded): it must fail
    in the simulator too, after the same release-and-retry, and the replay goes on as the recording did.
    A request the simulator cannot follow (a free of a block it does not hold) stops the replay with
    ``ReplayDivergenceError`` in ``result.error``; the timeline up to it is kept.
    """
    stops = deque(sorted(set(snapshot_at)))
    snapshots: dict[int, dict[str, Any]] = {}
    next_stop = stops[0] if stops else len(events)  # checked once per event: a plain int compare
    small, large = dev._small.stats, dev._large.stats  # running totals, read without building dicts
    initial = _totals(small, large)
    rows = array("q")  # flat rows of 5 int64 (40 B a row instead of ~230 B as a list of tuples)

    def row(values: tuple[int, int, int, int, int]) -> None:  # the rows of held-back and OOM events
        event, allocated, reserved, split, segments = values
        put_row(rows, event, allocated, reserved, split, segments)

    malloc, free = dev.malloc, dev.free
    by_ptr = dev._by_ptr
    addr_map: dict[int, int] = {}
    pending = dict(pending or {})  # recorded addr -> pseudo stream of its pending free
    n = len(events)
    mismatches = recorded_ooms = allocs = 0
    divergences: list[tuple[int, str]] = []
    counts = {"address": 0, "segment": 0, "oom": 0}
    oom: SimOutOfMemoryError | None = None
    oom_event: int | None = None
    replayed_ooms: list[int] = []
    error: ToolkitError | None = None
    deferred: list[int] = []  # recorded segment entries waiting for the call that made them
    next_pending = _PENDING_STREAM_BASE

    def diverge(kind: str, at: int, template: str, *args: Any) -> None:
        """Count a divergence; describe it (``template.format(*args)``) only while fewer than MAX_DIVERGENCES are kept.

        A replay under another conf can diverge at every third event: formatting each one cost the compiled
        loop about 12 % of its time (callgrind, a cross-conf replay)."""
        counts[kind] += 1
        if len(divergences) < MAX_DIVERGENCES:
            divergences.append((at, template.format(*args)))

    def captured(fn: Any, *args: Any) -> tuple[Any, list[tuple[str, int, int]], BaseException | None]:
        """Run ``fn`` with a private trace: the segment operations it made, in order."""
        saved = dev._trace
        cap: deque[TraceTuple] = deque()
        dev._trace = cap
        if feeder is not None:
            feeder.expect([(events[k][0], events[k][1], events[k][2]) for k in deferred])
        failure: BaseException | None = None
        out = None
        try:
            out = fn(*args)
        except SimOutOfMemoryError as exc:
            failure = exc
        finally:
            dev._trace = saved
            if saved is not None:
                saved.extend(cap)
            if feeder is not None:
                feeder.expect([])  # a segment no recorded entry announced takes the simulator's address
        ops = [(t[0], t[1], t[2]) for t in cap if t[0] in _SEGMENT_SIGN]
        return out, ops, failure

    def settle(before: tuple[int, int, int, int], ops: list[tuple[str, int, int]]) -> None:
        """Rows for the held-back segment entries, from the simulator's operations in the same order."""
        a0, r0, s0, g0 = before
        for j, k in enumerate(deferred):
            want = events[k]
            if j < len(ops):
                op = ops[j]
                r0 += _SEGMENT_SIGN[op[0]] * op[2]
                g0 += (op[0] == "segment_alloc") - (op[0] == "segment_free")
                if op != (want[0], want[1], want[2]):
                    diverge("segment", k, "{} of {} B at {:#x} recorded, simulated {} of {} B at {:#x}",
                            want[0], want[2], want[1], op[0], op[2], op[1])
            else:
                diverge("segment", k, "{} of {} B at {:#x} recorded, not simulated", want[0], want[2], want[1])
            row((k, a0, r0, s0, g0))
        if len(ops) > len(deferred):
            at = deferred[-1] + 1 if deferred else i
            for op in ops[len(deferred):]:
                diverge("segment", at, "simulated {} of {} B at {:#x}, not recorded", op[0], op[2], op[1])
        deferred.clear()

    i = 0
    while i < n:
        if i > next_stop and not deferred:  # the state after event next_stop is the state before event i
            # (a held-back segment entry's state is the state after the call that made it)
            while stops and stops[0] < i:
                snapshots[stops.popleft()] = dev.snapshot()
            next_stop = stops[0] if stops else n
        action, addr, size, stream = events[i]
        try:
            if action == "alloc":
                allocs += 1
                if deferred:
                    before = _totals(small, large)
                    got, ops, failure = captured(malloc, size, stream)
                    if failure is None:
                        settle(before, ops)
                else:
                    try:
                        got, failure = malloc(size, stream), None
                    except SimOutOfMemoryError as exc:
                        failure = exc
                if failure is not None:
                    oom, oom_event = failure, i  # type: ignore[assignment]
                    deferred.clear()
                    diverge("oom", i, "simulated OOM on an alloc of {} B that the recording served", size)
                    row((i, *_totals(small, large)))
                    i += 1
                    break
                addr_map[addr] = got
                if got != addr:
                    mismatches += 1
                    diverge("address", i, "alloc of {} B at {:#x}, recorded at {:#x}", size, got, addr)
            elif action == "free_requested":
                sim_addr = addr_map.pop(addr, addr)
                nxt = events[i + 1] if i + 1 < n else None
                if nxt is not None and nxt[0] == "free_completed" and nxt[1] == addr:
                    b = by_ptr.get(sim_addr)  # _check_allocated, inlined
                    if b is None or not b.allocated:
                        _check_allocated(dev, sim_addr, i, action)
                    free(sim_addr)
                    i += 1  # the free_completed row shows the same state: filled forward
                else:  # used on another stream: stays pending until its recorded free_completed
                    _check_allocated(dev, sim_addr, i, action)
                    dev.record_stream(sim_addr, next_pending)
                    free(sim_addr)
                    pending[addr] = next_pending
                    next_pending += 1
            elif action == "free_completed":
                pseudo = pending.pop(addr, None)
                if pseudo is not None:  # its events completed and the allocator took it back now
                    dev.complete_events(pseudo)
                    dev.process_events()
                else:  # its free_requested came before recording began: the block was seeded as allocated
                    sim_addr = addr_map.pop(addr, addr)
                    block = dev.block_at(sim_addr)
                    if block is not None and block.allocated:
                        free(sim_addr)
                    elif block is None or not (block.event_count or block.stream_uses):
                        raise ReplayDivergenceError(
                            i, f"free_completed of {size} B at {addr:#x}: the simulator holds no such block"
                        )
            elif action in _RELEASES:
                deferred.append(i)
                following = events[i + 1][0] if i + 1 < n else None
                if following not in _RELEASES and following != "oom" and not _released_by_next_malloc(
                    dev, events, i + 1
                ):
                    # the end of a release run that no malloc made: an empty_cache() call
                    before = _totals(small, large)
                    _, ops, _ = captured(dev.empty_cache)
                    settle(before, ops)
                i += 1
                continue
            elif action == "segment_alloc" or action == "segment_map":
                deferred.append(i)  # made inside the next malloc
                i += 1
                continue
            elif action == "oom":
                recorded_ooms += 1
                before = _totals(small, large)
                got, ops, failure = captured(malloc, size, stream)
                settle(before, ops)
                if failure is not None:
                    replayed_ooms.append(i)
                else:
                    diverge("oom", i, "recorded OOM for {} B; the simulator served it (freed again)", size)
                    free(got)
            else:  # snapshot markers and other actions change nothing
                i += 1
                continue
        except ReplayDivergenceError as exc:
            error = exc
            break
        except (ValueError, KeyError, AssertionError) as exc:  # the simulator refused the request
            error = ReplayDivergenceError(i, f"{action} of {size} B at {addr:#x}: {exc}")
            break
        ra = small.allocated_bytes_cur + large.allocated_bytes_cur
        rr = small.reserved_bytes_cur + large.reserved_bytes_cur
        rs = small.inactive_split_bytes_cur + large.inactive_split_bytes_cur
        rg = small.segment_cur + large.segment_cur
        put_row(rows, i, ra, rr, rs, rg)
        i += 1
    if deferred and error is None and oom_event is None:  # segment entries at the very end: nothing made them
        settle(_totals(small, large), [])
    while stops and stops[0] < i:  # stops up to the last replayed event (the OOM event included)
        snapshots[stops.popleft()] = dev.snapshot()
    return ReplayResult(
        platform=dev.platform,
        conf=dev.settings.conf_text if conf_text is None else conf_text,
        recorded_conf=None,
        device=dev,
        events=events,
        rows=rows,
        initial=initial,
        initial_recorded_reserved_bytes=initial[1],
        device_fixed_bytes=dev._ws.reserved_bytes + dev.context_bytes + dev.external_bytes,
        events_total=n,
        events_replayed=i,
        address_mismatches=mismatches,
        segment_mismatches=counts["segment"],
        oom=oom,
        oom_event=oom_event,
        recorded_ooms=recorded_ooms,
        replayed_ooms=replayed_ooms,
        snapshots=snapshots,
        error=error,
        divergences=divergences,
        divergence_counts=dict(counts),
        allocs_replayed=allocs,
    )


def _check_allocated(dev: SimDevice, address: int, index: int, action: str) -> None:
    b = dev.block_at(address)
    if b is None or not b.allocated:
        raise ReplayDivergenceError(index, f"{action} at {address:#x}: the simulator holds no allocated block there")


def _reservations(dev: SimDevice, runs: list[Any], events: list[Any]) -> dict[int, tuple[int, int]]:
    """VA reservations of seeded expandable runs: first run address -> (base, size in bytes).

    A snapshot reports mapped runs only. The allocator maps new pages at the lowest free address of a
    reservation, so a page the trace maps or unmaps below a reservation's first seeded run (and above
    the end of the previous reservation) shows that the reservation starts there. A reservation is
    1 1/8 of the capacity long (spec 3.2) and ends where the next one begins at the latest.
    """
    cap = dev.capacity_bytes
    touched = sorted(e[1] for e in events if e[0] == "segment_map" or e[0] == "segment_unmap")
    groups: list[list[Any]] = []
    for run in runs:  # sorted by address
        prev = groups[-1][-1] if groups else None
        page = dev.settings.small_page_bytes if run.pool == "small" else dev.settings.large_page_bytes
        va = page * -(-(cap + cap // 8) // page)
        if prev is not None and prev.stream == run.stream and prev.pool == run.pool and (
            run.address + run.size - groups[-1][0].address <= va
        ):
            groups[-1].append(run)
        else:
            groups.append([run])
    out: dict[int, tuple[int, int]] = {}
    floor = 0
    for k, group in enumerate(groups):
        first = group[0].address
        page = dev.settings.small_page_bytes if group[0].pool == "small" else dev.settings.large_page_bytes
        va = page * -(-(cap + cap // 8) // page)
        base = first
        lo = bisect_left(touched, max(floor, first - va))
        if lo < len(touched) and touched[lo] < first and (first - touched[lo]) % page == 0:
            base = touched[lo]
        ceiling = groups[k + 1][0].address if k + 1 < len(groups) else base + va
        out[first] = (base, min(va, ceiling - base))
        floor = max(base + min(va, ceiling - base), group[-1].address + group[-1].size)
    return out


def _released_by_next_malloc(dev: SimDevice, events: list[Any], j: int) -> bool:
    """A release run followed by a new segment for the next alloc, which had to release first."""
    n = len(events)
    while j < n and events[j][0] in ("segment_alloc", "segment_map"):
        j += 1
    if j == n or j == 0 or events[j - 1][0] not in ("segment_alloc", "segment_map") or events[j][0] != "alloc":
        return False  # nothing was allocated right after the release: it was empty_cache()
    return dev.would_release_for(events[j][2], events[j][3])


def _totals(small: Any, large: Any) -> tuple[int, int, int, int]:
    return (
        small.allocated_bytes_cur + large.allocated_bytes_cur,
        small.reserved_bytes_cur + large.reserved_bytes_cur,
        small.inactive_split_bytes_cur + large.inactive_split_bytes_cur,
        small.segment_cur + large.segment_cur,
    )


def replay_steps(
    source: str | os.PathLike[str] | bytes | Mapping[str, Any],
    conf: Any = None,
    *,
    steps: int = 30,
    name: str | None = None,
    **replay_options: Any,
) -> tuple[Run, dict[int, dict[str, Any]]]:
    """A replay as a ``Run`` of ``steps`` evenly spaced moments, with the allocator state at each.

    One pass of :func:`replay` (same options); each step becomes one ``MemorySample`` (``request_index`` =
    step, ``input_name`` says which trace event it stops after) and its snapshot is keyed by step, ready for
    ``toolkit.notebook.widgets.Inspector(run, snapshots)``. When the replay hits an OOM, that event is the last step.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    snap = _load(source)
    from toolkit.snapshot import trace_events

    n = len(trace_events(snap, replay_options.get("device", 0)))
    if n == 0:
        raise ValueError("the snapshot has no trace events to replay")
    wanted = sorted({max(0, round(n * (k + 1) / steps) - 1) for k in range(steps)})
    result = replay(snap, conf, snapshot_at=wanted, **replay_options)
    snapshots = dict(result.snapshots)
    last = result.events_replayed - 1
    if last not in snapshots:  # the replay stopped there (an OOM or a divergence): the device is in that state now
        snapshots[last] = result.device.snapshot()
    result.snapshots = snapshots
    run = result.to_run(name=name)
    ends = sorted(snapshots)
    return run, {step: snapshots[k] for step, k in enumerate(ends)}


__all__ = [
    "RecordedSegmentAddresses",
    "ReplayDivergenceError",
    "infer_capacity",
    "ReplayResult",
    "TIMELINE_COLUMNS",
    "guess_torch_version",
    "recorded_conf",
    "replay",
    "replay_steps",
    "replay_events",
]

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
  A free whose ``free_completed`` does not follow at once was waiting for another stream: it is replayed
  as pending and taken back at the recorded ``free_completed``. A run of ``segment_free`` /
  ``segment_unmap`` entries comes from ``empty_cache()`` or from a release the next malloc made itself
  (GC, oversize release, release-and-retry; then a new segment follows and the simulator, in the same
  state, would release too: ``SimDevice.would_release_for``). The first kind is replayed as
  ``empty_cache()``, the second is left to the simulator.
- Addresses differ under another conf: recorded block addresses are mapped to simulated ones by the
  ``alloc`` events. With ``segment_addresses="recorded"`` (default under the recorded conf) new segments
  take the recorded ``segment_alloc`` addresses in order, so a faithful simulator reproduces the run
  exactly (``address_mismatches == 0``).
- Expandable segments: a snapshot reports mapped runs, not the VA reservation around them. A seeded
  reservation starts at the lowest page the trace maps below its first run (else at that run); a
  reservation *created* during the trace gets an address from the simulator's own model, so blocks in
  it are mapped by the alloc events but do not keep their recorded addresses.
- Snapshots do not record the torch version: for CUDA it is guessed from ``allocator_settings``
  (``guess_torch_version``), which fixes the best-fit tie-break; pass ``torch_version`` to override.
- An OOM under the new conf stops the replay at that event; the timeline so far is kept and flagged.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from toolkit.sim import SimDevice, SimOutOfMemoryError
from toolkit.core.errors import ToolkitError
from toolkit.snapshot.schema import SnapshotError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from toolkit.core.records import Run
    from toolkit.snapshot import Snapshot

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


class RecordedSegmentAddresses:
    """``segment_address`` callable handing out the recorded ``segment_alloc`` addresses in order."""

    def __init__(self, segments: list[tuple[int, int]]) -> None:
        self._queue = deque(segments)
        self.mismatches = 0

    def __call__(self, size: int, stream: int) -> int | None:
        if not self._queue:
            self.mismatches += 1
            return None
        address, recorded_size = self._queue.popleft()
        if recorded_size != size:
            self.mismatches += 1
            return None
        return address


@dataclass
class ReplayResult:
    """Outcome of :func:`replay`: the per-event timeline and the device in its final state (simulated).

    The loop stores one row per event that changed the simulator (``rows``: event index, allocated,
    reserved, inactive split, segments) and the timeline fills the events in between forward.
    """

    profile: str
    conf: str
    recorded_conf: str | None
    device: SimDevice
    events: list[Any] = field(repr=False)  # the replayed TraceEvents (all of them; see events_replayed)
    rows: list[tuple[int, int, int, int, int]] = field(repr=False)
    initial: tuple[int, int, int, int] = (0, 0, 0, 0)  # allocated, reserved, inactive split, segments
    initial_recorded_reserved_bytes: int = 0
    device_fixed_bytes: int = 0  # workspace + context + external: device used = reserved + this
    events_total: int = 0
    events_replayed: int = 0
    address_mismatches: int = 0  # alloc events whose simulated address differs from the recorded one
    segment_mismatches: int = 0  # recorded-address mode: segments out of step with the recording
    oom: SimOutOfMemoryError | None = None
    oom_event: int | None = None
    recorded_ooms: int = 0
    snapshots: dict[int, dict[str, Any]] = field(default_factory=dict, repr=False)  # event -> state after it
    simulated: bool = True

    @cached_property
    def arrays(self) -> dict[str, np.ndarray]:
        """The per-event series as int64 numpy arrays (the columns of ``timeline`` that are numbers)."""
        import numpy as np

        n = self.events_replayed
        table = np.array([self.initial, *(r[1:] for r in self.rows)], dtype=np.int64).reshape(-1, 4)
        which = np.full(n, -1, dtype=np.int64)
        if self.rows:
            at = np.fromiter((r[0] for r in self.rows), dtype=np.int64, count=len(self.rows))
            which[at] = np.arange(len(self.rows), dtype=np.int64)
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
        return self.oom is None

    def summary(self) -> dict[str, Any]:
        """Headline numbers (bytes as ints) for tables and comparisons."""
        arr = self.arrays
        empty = self.events_replayed == 0
        return {
            "profile": self.profile,
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
        status = "completed" if self.completed else f"OOM at event {self.oom_event}"
        return (
            f"ReplayResult(profile={self.profile!r}, conf={self.conf!r}, events={self.events_replayed}/"
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
    """A PyTorch release consistent with a CUDA snapshot's ``allocator_settings`` keys, or None.

    Snapshots do not record the torch version, but the settings block grew over releases: without
    ``graph_capture_record_stream_reuse`` (first in 2.9, allocator-spec §1.4) the recorder was 2.8 or
    older, which fixes the best-fit tie-break (address order) and the conf dialect. The real trace in
    shared/data/traces has no such key and replays exactly only with address order.
    """
    settings = snapshot.get("allocator_settings")
    if snapshot.get("flavor", "cuda") != "cuda" or not isinstance(settings, Mapping) or not settings:
        return None
    return None if "graph_capture_record_stream_reuse" in settings else "2.8"


def _load(source: str | os.PathLike[str] | bytes | Mapping[str, Any]) -> Snapshot:
    from toolkit.snapshot import load_snapshot, normalize_snapshot
    from toolkit.snapshot.normalize import check_normalized, is_normalized

    if isinstance(source, Mapping):
        if is_normalized(source):  # trusted layout, but the field types are still checked at the boundary
            check_normalized(source)
            return source  # type: ignore[return-value]
        return normalize_snapshot(source)
    return load_snapshot(source)


def _check_replay_args(profile: object, device: object, capacity_bytes: object, context_bytes: object,
                       memory_fraction: object) -> None:
    """Boundary checks of ``replay``'s own arguments: one-line ``ReplayError`` instead of a TypeError later."""
    from toolkit.core.errors import bounded_repr

    if profile not in (None, "cuda", "npu"):
        raise ReplayError(f"profile must be 'cuda', 'npu' or None, got {bounded_repr(profile)}")
    if type(device) is not int or not 0 <= device < 1 << 16:
        raise ReplayError(f"device must be an int from 0, got {bounded_repr(device)}")
    for name, value in (("capacity_bytes", capacity_bytes), ("context_bytes", context_bytes)):
        if value is not None and (type(value) is not int or value < 0):
            raise ReplayError(f"{name} must be an int number of bytes, got {bounded_repr(value)}")
    if memory_fraction is not None and (type(memory_fraction) not in (int, float) or not 0 < memory_fraction <= 1):
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
    profile: Literal["cuda", "npu"] | None = None,
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
        profile: ``"cuda"`` or ``"npu"``; None = the allocator that recorded it.
        torch_version: version-dependent behaviour (see ``SimDevice``); None = guessed from a CUDA
            snapshot's settings (``guess_torch_version``), else the newest dialect.
        capacity_bytes: device memory; an OOM under ``conf`` stops the replay (flagged).
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

    _check_replay_args(profile, device, capacity_bytes, context_bytes, memory_fraction)
    snap = _load(source)
    flavor = snap.get("flavor", "cuda")
    profile = profile or flavor
    recorded = recorded_conf(snap)
    same_conf = conf is None
    if conf is None:
        conf = recorded or ""
    if torch_version is None and profile == flavor:
        torch_version = guess_torch_version(snap)
    events = trace_events(snap, device)
    if segment_addresses is None:
        segment_addresses = "recorded" if same_conf and profile == flavor else "fresh"
    if segment_addresses not in ("recorded", "fresh"):
        raise ValueError(f"segment_addresses must be 'recorded' or 'fresh', got {segment_addresses!r}")
    feeder = None
    if segment_addresses == "recorded":
        feeder = RecordedSegmentAddresses([(e.addr, e.size) for e in events if e.action == "segment_alloc"])
    dev = SimDevice(
        profile,
        conf,
        capacity_bytes=capacity_bytes,
        torch_version=torch_version,
        segment_address=feeder,
        context_bytes=0 if context_bytes is None else context_bytes,
        device=device,
        **device_options,
    )
    seeds = initial_state(snap, device)
    # Segments that existed before recording get registration numbers in creation order. That order is
    # not recorded; drivers hand out decreasing addresses, so the highest address is taken as the oldest
    # (matters only for the registration-order tie-break of recent CUDA). Expandable runs go last, lowest
    # first, so the first run of each reservation is its base.
    seeds.sort(key=lambda s: (s.is_expandable, -s.address if not s.is_expandable else s.address))
    reservations = _reservations(dev, [s for s in seeds if s.is_expandable], events)
    for seed in seeds:
        requested = seed.requested_sizes or (0,) * len(seed.blocks)
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
    if memory_fraction is not None:
        dev.set_per_process_memory_fraction(memory_fraction)
    if record_history:
        dev.record_history()
    result = replay_events(dev, events, conf_text=dev.settings.conf_text, snapshot_at=snapshot_at)
    result.recorded_conf = recorded
    result.segment_mismatches += feeder.mismatches if feeder is not None else 0
    return result


def replay_events(
    dev: SimDevice, events: list[Any], conf_text: str | None = None, snapshot_at: Iterable[int] = ()
) -> ReplayResult:
    """The replay loop: drive ``dev`` with the user-level requests of ``events`` (``TraceEvent`` tuples).

    For callers that built and seeded the device themselves; ``replay`` does both and calls this.
    ``snapshot_at``: event indices after which ``dev.snapshot()`` is kept in ``result.snapshots``.
    """
    stops = deque(sorted(set(snapshot_at)))
    snapshots: dict[int, dict[str, Any]] = {}
    next_stop = stops[0] if stops else len(events)  # checked once per event: a plain int compare
    small, large = dev._small.stats, dev._large.stats  # running totals, read without building dicts
    initial = _totals(small, large)
    rows: list[tuple[int, int, int, int, int]] = []
    row = rows.append
    malloc, free = dev.malloc, dev.free
    addr_map: dict[int, int] = {}
    pending: dict[int, int] = {}  # recorded addr -> pseudo stream of its pending free
    n = len(events)
    mismatches = recorded_ooms = 0
    oom: SimOutOfMemoryError | None = None
    oom_event: int | None = None
    next_pending = _PENDING_STREAM_BASE
    i = 0
    while i < n:
        if i > next_stop:  # the state after event next_stop is the state before event i
            while stops and stops[0] < i:
                snapshots[stops.popleft()] = dev.snapshot()
            next_stop = stops[0] if stops else n
        action, addr, size, stream = events[i]
        if action == "alloc":
            try:
                got = malloc(size, stream)
            except SimOutOfMemoryError as exc:
                oom, oom_event = exc, i
                row((i, *_totals(small, large)))
                i += 1
                break
            addr_map[addr] = got
            if got != addr:
                mismatches += 1
        elif action == "free_requested":
            sim_addr = addr_map.pop(addr, addr)
            nxt = events[i + 1] if i + 1 < n else None
            if nxt is not None and nxt[0] == "free_completed" and nxt[1] == addr:
                free(sim_addr)
                i += 1  # the free_completed row shows the same state: filled forward
            else:  # used on another stream: stays pending until its recorded free_completed
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
        elif action == "segment_free" or action == "segment_unmap":
            following = events[i + 1][0] if i + 1 < n else None
            if following != "segment_free" and following != "segment_unmap":
                # The end of a release run: an empty_cache() call, or a release the next malloc made
                # itself (GC, oversize release, release-and-retry), which the simulator redoes.
                if not _released_by_next_malloc(dev, events, i + 1):
                    dev.empty_cache()
        elif action == "oom":
            recorded_ooms += 1
            i += 1
            continue
        else:  # segment_alloc / segment_map happen inside the next malloc; other actions change nothing
            i += 1
            continue
        row((
            i,
            small.allocated_bytes_cur + large.allocated_bytes_cur,
            small.reserved_bytes_cur + large.reserved_bytes_cur,
            small.inactive_split_bytes_cur + large.inactive_split_bytes_cur,
            small.segment_cur + large.segment_cur,
        ))
        i += 1
    while stops and stops[0] < i:  # stops up to the last replayed event (the OOM event included)
        snapshots[stops.popleft()] = dev.snapshot()
    return ReplayResult(
        profile=dev.profile,
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
        oom=oom,
        oom_event=oom_event,
        recorded_ooms=recorded_ooms,
        snapshots=snapshots,
    )


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
    import time

    from toolkit.core.records import MemorySample, Run
    from toolkit.core.units import format_bytes

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
    if result.oom_event is not None:  # the replay stopped there: the device is in that state now
        snapshots[result.oom_event] = result.device.snapshot()
    ends = sorted(snapshots)
    frame = result.timeline
    capacity = result.device.capacity_bytes
    samples: list[MemorySample] = []
    for step, k in enumerate(ends):
        row = frame.iloc[min(k, len(frame) - 1)]
        upto = frame.iloc[: k + 1]
        is_oom = result.oom_event == k
        samples.append(MemorySample(
            request_index=step, request_id=f"event {k}", rank=0, started_at_ns=0, duration_ns=0,
            input_name=f"after event {k} of {n} ({row['action']} {format_bytes(int(row['size']))})",
            allocated_bytes=int(row["allocated_bytes"]), allocated_peak_bytes=int(upto["allocated_bytes"].max()),
            reserved_bytes=int(row["reserved_bytes"]), reserved_peak_bytes=int(upto["reserved_bytes"].max()),
            active_bytes=int(row["allocated_bytes"]), inactive_split_bytes=int(row["inactive_split_bytes"]),
            device_used_bytes=int(row["device_used_bytes"]), device_total_bytes=capacity,
            non_torch_bytes=int(row["device_used_bytes"] - row["reserved_bytes"]),
            segment_count=int(row["segments"]), num_ooms=int(is_oom), status="oom" if is_oom else "ok",
            message=str(result.oom).splitlines()[0] if is_oom and result.oom is not None else None))
    oom_line = str(result.oom).splitlines()[0] if result.oom is not None else None
    run = Run(name=name or f"replay: {result.conf or 'defaults'}", backend="replay", platform=result.profile,
              model="recorded trace", conf=result.conf, effective_conf=result.device.settings.conf_text,
              device_capacity_bytes=capacity, simulated=True,
              engine_args={"events": n, "steps": len(ends)}, status="oom" if result.oom is not None else "ok",
              message=oom_line, started_at_ns=time.time_ns(), samples=tuple(samples))
    return run, {step: snapshots[k] for step, k in enumerate(ends)}


__all__ = [
    "RecordedSegmentAddresses",
    "ReplayResult",
    "TIMELINE_COLUMNS",
    "guess_torch_version",
    "recorded_conf",
    "replay",
    "replay_steps",
    "replay_events",
]

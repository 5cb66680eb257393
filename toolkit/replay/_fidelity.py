"""How exactly a replay follows its recording, and a replay as a ``Run`` for every plot (simulated).

``fidelity(result)`` compares, event by event, what the simulator did with what the recording says:
each ``alloc`` at its recorded address, each recorded segment operation (``segment_alloc`` /
``segment_free`` / ``segment_map`` / ``segment_unmap``) done by the simulator inside the same call with
the same address and size, reserved bytes after every event, each recorded ``oom`` failing in the
simulator too, and the final segment layout. A what-if replay under another conf differs by design;
the numbers then say how far it moved away from the recording.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolkit.core.records import Run, RunStatus
    from toolkit.replay import ReplayResult


@dataclass(frozen=True, slots=True)
class Fidelity:
    """Replay vs recording (simulated). ``exact`` is the all-or-nothing verdict."""

    events: int  # trace events of this device
    events_replayed: int
    allocs: int  # alloc events in the trace
    allocs_placed: int  # replayed at the recorded address
    reserved_mismatches: int  # events after which simulated reserved bytes != recorded
    segment_mismatches: int  # recorded segment operations not done alike (and simulated ones not recorded)
    recorded_ooms: tuple[int, ...]  # event indices of recorded OOMs
    replayed_ooms: tuple[int, ...]  # recorded OOMs that failed in the simulator as well
    final_layout_matches: bool | None  # None: the replay did not reach the end
    first_divergence: tuple[int, str] | None  # (event index, what differed)
    stop_reason: str | None = None
    what_if: bool = False  # replayed under another conf than the recorded one: differences are the point

    @property
    def placement(self) -> float:
        """Share of allocations at their recorded address (1.0 when there are none)."""
        return self.allocs_placed / self.allocs if self.allocs else 1.0

    @property
    def exact(self) -> bool:
        return (
            self.events_replayed == self.events
            and self.allocs_placed == self.allocs
            and self.reserved_mismatches == 0
            and self.segment_mismatches == 0
            and self.replayed_ooms == self.recorded_ooms
            and self.final_layout_matches is not False
            and self.stop_reason is None
        )

    def line(self) -> str:
        """One line for a terminal or a table cell."""
        verdict = "exact" if self.exact else ("differs from the recording (what-if)" if self.what_if else "NOT exact")
        ooms = f"; OOM at {list(self.recorded_ooms)} recorded, {list(self.replayed_ooms)} replayed" if (
            self.recorded_ooms or self.replayed_ooms) else ""
        first = ""
        if self.first_divergence is not None:
            first = f"; first divergence at event {self.first_divergence[0]}: {self.first_divergence[1]}"
        stop = f"; stopped: {self.stop_reason}" if self.stop_reason else ""
        layout = {True: "final layout same", False: "final layout differs", None: "final layout not reached"}
        return (
            f"replay {verdict} (simulated): {self.events_replayed}/{self.events} events, "
            f"{self.allocs_placed}/{self.allocs} allocs at recorded address ({100 * self.placement:.1f} %), "
            f"{self.reserved_mismatches} reserved mismatches, {self.segment_mismatches} segment mismatches, "
            f"{layout[self.final_layout_matches]}{ooms}{first}{stop}"
        )

    __str__ = line


def layout(segments: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    """Segments as comparable tuples: address, size, pool, stream, expandable, blocks (addr, size, state, requested)."""
    return [
        (s["address"], s["total_size"], s["segment_type"], s["stream"], s["is_expandable"],
         tuple((b["address"], b["size"], b["state"], b["requested_size"]) for b in s["blocks"]))
        for s in sorted(segments, key=lambda s: s["address"])
    ]


def fidelity(result: ReplayResult) -> Fidelity:
    """Compare ``result`` with the recording it replayed (see the module docstring)."""
    import numpy as np

    arr = result.arrays
    n = result.events_replayed
    bad = np.flatnonzero(arr["reserved_bytes"] != arr["recorded_reserved_bytes"])
    first: tuple[int, str] | None = None
    candidates = list(result.divergences)
    if bad.size:
        k = int(bad[0])
        sim, rec = int(arr["reserved_bytes"][k]), int(arr["recorded_reserved_bytes"][k])
        candidates.append((k, f"reserved {sim} B after {result.events[k][0]}, recorded {rec} B"))
    if candidates:
        first = min(candidates, key=lambda c: c[0])
    recorded_ooms = tuple(i for i, e in enumerate(result.events) if e[0] == "oom")
    allocs = sum(1 for e in result.events if e[0] == "alloc")
    placed = result.allocs_replayed - result.address_mismatches - (1 if result.oom is not None else 0)
    final: bool | None = None
    if result.completed and result.recorded_segments is not None:
        final = layout(result.device.snapshot()["segments"]) == layout(result.recorded_segments)
        if not final and first is None:
            first = (n - 1, "final segment layout differs from the recording")
    return Fidelity(
        events=result.events_total,
        events_replayed=n,
        allocs=allocs,
        allocs_placed=max(placed, 0),
        reserved_mismatches=int(bad.size),
        segment_mismatches=result.segment_mismatches,
        recorded_ooms=recorded_ooms,
        replayed_ooms=tuple(result.replayed_ooms),
        final_layout_matches=final,
        first_divergence=first,
        stop_reason=result.stop_reason,
        what_if=result.conf != (result.recorded_conf or "") or result.platform != (result.recorded_platform or result.platform),
    )


def replay_run(result: ReplayResult, steps: int | None = None, name: str | None = None) -> Run:
    """A replay as a ``Run``: one ``MemorySample`` per moment (simulated).

    The moments are the events in ``result.snapshots`` (what ``replay(snapshot_at=...)`` kept), else
    ``steps`` (default 30) evenly spaced events; the last replayed event (an OOM that stopped it) is
    always one of them. ``engine_args`` carries the fidelity line so a plot of the run can say whether
    it rests on an exact replay.
    """
    import time

    import numpy as np

    from toolkit.core.records import MemorySample, Run
    from toolkit.core.units import format_bytes

    n = result.events_replayed
    if n == 0:
        raise ValueError("the replay has no events to turn into a run")
    if result.snapshots and steps is None:
        ends = sorted(k for k in result.snapshots if k < n)
    else:
        count = 30 if steps is None else steps
        if count < 1:
            raise ValueError(f"steps must be at least 1, got {count}")
        ends = sorted({max(0, round(n * (k + 1) / count) - 1) for k in range(count)})
    if result.oom_event is not None and result.oom_event not in ends:
        ends.append(result.oom_event)
    if n - 1 not in ends:
        ends.append(n - 1)
    ends.sort()
    arr = result.arrays
    reserved, allocated = arr["reserved_bytes"], arr["allocated_bytes"]
    reserved_peak = np.maximum.accumulate(reserved)
    allocated_peak = np.maximum.accumulate(allocated)
    capacity = result.device.capacity_bytes
    oom_line = str(result.oom).splitlines()[0] if result.oom is not None else None
    samples = []
    for step, k in enumerate(ends):
        action, _, size, _ = result.events[k]
        is_oom = result.oom_event == k
        samples.append(MemorySample(
            request_index=step, request_id=f"event {k}", rank=0, started_at_ns=0, duration_ns=0,
            input_name=f"after event {k} of {result.events_total} ({action} {format_bytes(int(size))})",
            allocated_bytes=int(allocated[k]), allocated_peak_bytes=int(allocated_peak[k]),
            reserved_bytes=int(reserved[k]), reserved_peak_bytes=int(reserved_peak[k]),
            active_bytes=int(allocated[k]), inactive_split_bytes=int(arr["inactive_split_bytes"][k]),
            device_used_bytes=int(arr["device_used_bytes"][k]), device_total_bytes=capacity,
            non_torch_bytes=int(arr["device_used_bytes"][k] - reserved[k]),
            segment_count=int(arr["segments"][k]), num_ooms=int(is_oom), status="oom" if is_oom else "ok",
            message=oom_line if is_oom else None))
    status: RunStatus = "oom" if result.oom is not None else ("error" if result.error is not None else "ok")
    return Run(
        name=name or f"replay: {result.conf or 'defaults'}", backend="replay", platform=result.platform,
        model="recorded trace", conf=result.conf, effective_conf=result.device.settings.conf_text,
        device_capacity_bytes=capacity, simulated=True,
        engine_args={"events": result.events_total, "steps": len(ends), "device": result.device_index,
                     "torch_version": result.torch_version, "fidelity": fidelity(result).line()},
        status=status, message=oom_line or result.stop_reason, started_at_ns=time.time_ns(),
        samples=tuple(samples),
    )

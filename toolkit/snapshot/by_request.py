"""Allocator snapshots by request: the one lookup every view uses, and a recorder for the simulated engine."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from toolkit.core.errors import ToolkitError

SnapshotLookup = Callable[[int, int], "Mapping[str, Any] | None"]


class SnapshotSourceError(ToolkitError, ValueError):
    """What was given as snapshots is none of the accepted shapes."""


@runtime_checkable
class SnapshotSource(Protocol):
    """Where the inspector gets the allocator state after a request (None: none was recorded)."""

    def snapshot_at(self, request_index: int, rank: int) -> Mapping[str, Any] | None: ...


# -- snapshot sources ----------------------------------------------------------------------------------


def snapshot_lookup(source: Any) -> SnapshotLookup:
    """Turn what the user has into ``(request_index, rank) -> snapshot | None``.

    Accepts None (no snapshots), an object with ``snapshot_at``, a callable, or a mapping keyed by
    ``(request_index, rank)`` or by ``request_index`` (every rank the same).
    """
    if source is None:
        return lambda request_index, rank: None
    if isinstance(source, SnapshotSource):
        return source.snapshot_at
    if isinstance(source, Mapping):
        def from_mapping(request_index: int, rank: int) -> Mapping[str, Any] | None:
            found = source.get((request_index, rank))
            return found if found is not None else source.get(request_index)
        return from_mapping
    if callable(source):
        return source  # type: ignore[no-any-return]
    raise SnapshotSourceError(f"snapshots: expected an object with snapshot_at(request_index, rank), a callable or a "
                      f"mapping, got {type(source).__name__}")


_SEGMENT_FIELDS = ("device", "address", "total_size", "allocated_size", "active_size", "requested_size", "stream",
                   "segment_type", "segment_pool_id", "is_expandable")
_BLOCK_FIELDS = ("address", "size", "requested_size", "state")


class SnapshotRecorder:
    """Keeps the allocator snapshot after each request of a simulated engine.

    The sim engine simulates one device and reports it for every rank (ranks of a tensor-parallel model
    are symmetric: ``toolkit.engines.sim``), so one snapshot serves all ranks. ``every=k`` keeps one
    request in k (failed requests always); ``max_snapshots`` bounds memory on long runs (oldest dropped,
    failures kept).

    Snapshots are stored compactly: segments become tuples of plain values, and a segment that did not
    change since an earlier request is stored once (the KV cache's segments never change). Besides the
    memory, this keeps the garbage collector from rescanning hundreds of thousands of dicts on every
    request of a long run (measured in benchmarks/bench_plots.py). ``snapshot_at`` rebuilds torch's
    layout on demand; frames (what each block is) are kept as interned tuples, a recorded trace as it is.

    Args:
        device: anything with ``snapshot()`` in torch's layout (``SimDevice``).
    """

    def __init__(self, device: Any, *, every: int = 1, max_snapshots: int | None = None) -> None:
        if every < 1:
            raise SnapshotSourceError(f"every must be >= 1, got {every}")
        self.device = device
        self.every = every
        self.max_snapshots = max_snapshots
        self._snaps: dict[int, Any] = {}
        self._failed: set[int] = set()
        self._segments: dict[tuple[Any, ...], tuple[Any, ...]] = {}  # interned segment tuples
        self._frames: dict[tuple[Any, ...], tuple[Any, ...]] = {}  # interned frame tuples
        self._frames_of: dict[int, tuple[Any, tuple[Any, ...]]] = {}  # id(frames list) -> (list, tuple)
        self.seconds = 0.0  # time spent taking snapshots (reported by the benchmark)

    def _frames_key(self, frames: Any) -> Any:
        """Frames as an interned tuple (the simulator names blocks with a few shared frames); () for none."""
        if not frames:
            return ()
        seen = self._frames_of.get(id(frames))
        if seen is not None and seen[0] is frames:  # the engine reuses one list per block: convert it once
            return seen[1]
        key = tuple((f.get("filename", ""), f.get("line", 0), f.get("name", "")) for f in frames)
        key = self._frames.setdefault(key, key)
        self._frames_of[id(frames)] = (frames, key)  # holds the list, so its id is never reused
        return key

    def _compact(self, snap: Mapping[str, Any]) -> Any:
        segs = snap.get("segments", ())
        compact = []
        intern = self._segments.setdefault
        fkey = self._frames_key
        for s in segs:
            key = (*(s[f] for f in _SEGMENT_FIELDS), fkey(s.get("frames")),
                   tuple((b["address"], b["size"], b["requested_size"], b["state"], fkey(b.get("frames")))
                         for b in s["blocks"]))
            compact.append(intern(key, key))
        rest = tuple((k, v) for k, v in snap.items() if k not in ("segments", "device_traces"))
        traces = snap.get("device_traces", ())
        # a recorded history (frames, annotations) is kept as it is: the inspector shows segments only
        kept_traces = tuple(tuple(t) for t in traces) if any(traces) else len(traces) or 1
        return (tuple(compact), rest, kept_traces)

    @staticmethod
    def _expand(stored: Any) -> dict[str, Any]:
        if isinstance(stored, Mapping):
            return dict(stored)
        segments, rest, devices = stored

        def frames(key: Any) -> list[dict[str, Any]]:
            return [{"filename": f, "line": ln, "name": n} for f, ln, n in key]

        n = len(_SEGMENT_FIELDS)
        out: dict[str, Any] = {
            "segments": [
                {**dict(zip(_SEGMENT_FIELDS, seg[:n])), "frames": frames(seg[n]),
                 "blocks": [{**dict(zip(_BLOCK_FIELDS, b[:4])), "frames": frames(b[4])} for b in seg[-1]]}
                for seg in segments
            ],
            "device_traces": [list(t) for t in devices] if isinstance(devices, tuple) else
                             [[] for _ in range(devices)],
        }
        out.update(dict(rest))
        return out

    def record(self, request_index: int, *, failed: bool = False) -> None:
        if not failed and request_index % self.every:
            return
        t0 = time.perf_counter()
        self._snaps[request_index] = self._compact(self.device.snapshot())
        if failed:
            self._failed.add(request_index)
        if self.max_snapshots is not None and len(self._snaps) > self.max_snapshots:
            for k in [k for k in self._snaps if k not in self._failed]:
                if len(self._snaps) <= self.max_snapshots:
                    break
                del self._snaps[k]
        self.seconds += time.perf_counter() - t0

    def __call__(self, result: Any) -> None:
        """Request callback: takes the engine's per-request result (``request_index``, ``status``)."""
        self.record(result.request_index, failed=getattr(result, "status", "ok") != "ok")

    def snapshot_at(self, request_index: int, rank: int) -> Mapping[str, Any] | None:
        stored = self._snaps.get(request_index)
        return None if stored is None else self._expand(stored)

    @property
    def requests(self) -> list[int]:
        return sorted(self._snaps)

    def __len__(self) -> int:
        return len(self._snaps)



# -- the snapshots an engine recorded for a run -----------------------------------------------------------
# A ``Run`` is a frozen record that travels to disk as JSON; the snapshots of a simulated run stay in this
# process. This registry lets ``%mem_inspect run`` (and ``Inspector(run)``) find them from the run alone.
# Bounded: only the latest runs keep their snapshots (a recorder holds one compact snapshot per request).

RECORDED_RUNS_KEPT = 16
_RECORDED: dict[tuple[str, int], Any] = {}


def register_snapshots(name: str, started_at_ns: int, source: Any) -> None:
    """Remember ``source`` as the snapshots of the run ``(name, started_at_ns)`` (the latest runs only)."""
    _RECORDED.pop((name, started_at_ns), None)
    _RECORDED[(name, started_at_ns)] = source
    while len(_RECORDED) > RECORDED_RUNS_KEPT:
        del _RECORDED[next(iter(_RECORDED))]


def snapshots_for(run: Any) -> Any:
    """The snapshots recorded in this process for ``run`` (a ``Run``), or None."""
    return _RECORDED.get((getattr(run, "name", None), getattr(run, "started_at_ns", None)))  # type: ignore[arg-type]

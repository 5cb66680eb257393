"""Live views for notebooks: a figure that grows while a run goes, an allocator inspector, a conf sweep.

Kernel side: plotly's ``FigureWidget`` (anywidget-based since plotly 6, plotly PR #4823) and ipywidgets,
both imported only when a view is built. Where the widget front end is missing (VS Code without
anywidget, plotly #5027; ``nbconvert``; a plain script) every view has a static fallback:
``mode="static"`` shows ordinary plotly figures, redrawn through a display handle, and the inspector
becomes a plotly figure with a built-in slider (``toolkit.viz.plots.plot_allocator_steps``), which needs no
kernel at all. ``mode="auto"`` picks the widget when anywidget and ipywidgets import and a kernel runs.

The figures themselves come from ``toolkit.viz.plots`` (pure); this module only feeds and updates them.

Snapshots for the inspector come from any object with ``snapshot_at(request_index, rank) -> dict | None``
(or such a callable, or a mapping keyed by ``(request_index, rank)`` or ``request_index``). The sim
backend always has them: ``watch(engine, ...)`` records ``engine.device.snapshot()`` after every request
with a ``SnapshotRecorder``. Real backends have them when recording is on.
"""

from __future__ import annotations

import html
import inspect
import itertools
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np

from toolkit.core.errors import ToolkitError
from toolkit.viz.plots import (
    MEMORY_METRICS,
    METRIC_LABELS,
    allocator_state_traces,
    plot_allocator_state,
    plot_allocator_steps,
    plot_compare,
    plot_run,
)
from toolkit.core.records import MemorySample, Run
from toolkit.core.units import GiB, format_bytes

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import plotly.graph_objects as go

__all__ = [
    "ConfSweep",
    "Inspector",
    "LiveFigure",
    "SnapshotRecorder",
    "SnapshotSource",
    "Watched",
    "WidgetError",
    "conf_combinations",
    "parse_choices",
    "snapshot_lookup",
    "validate_confs",
    "watch",
    "widgets_available",
]

Mode = Literal["auto", "widget", "static"]
SnapshotLookup = Callable[[int, int], "Mapping[str, Any] | None"]


class WidgetError(ToolkitError, ValueError):
    """A view was built with input it cannot use (bad mode, no samples, an unusable snapshot source)."""


@runtime_checkable
class SnapshotSource(Protocol):
    """Where the inspector gets the allocator state after a request (None: none was recorded)."""

    def snapshot_at(self, request_index: int, rank: int) -> Mapping[str, Any] | None: ...


# -- environment ---------------------------------------------------------------------------------------


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def widgets_available() -> bool:
    """True when a kernel runs and ``anywidget`` + ``ipywidgets`` import (plotly 6+'s FigureWidget
    needs anywidget). Says nothing about the front end: where it cannot show widgets, use
    ``mode="static"``."""
    if not _in_kernel():
        return False
    try:
        import anywidget  # noqa: F401
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def _resolve_mode(mode: str) -> Literal["widget", "static"]:
    if mode not in ("auto", "widget", "static"):
        raise WidgetError(f"mode must be 'auto', 'widget' or 'static', got {mode!r}")
    if mode == "auto":
        return "widget" if widgets_available() else "static"
    if mode == "widget":
        try:
            import anywidget  # noqa: F401
            import ipywidgets  # noqa: F401
        except ImportError:
            raise WidgetError("mode='widget' needs anywidget and ipywidgets: pip install 'ascend-memlab[notebook]'"
                              " (or use mode='static')") from None
    return mode  # type: ignore[return-value]


def _figure_widget(fig: go.Figure) -> go.FigureWidget:
    import plotly.graph_objects as go

    return go.FigureWidget(fig)


def _display(obj: Any, *, display_id: bool = False) -> Any:
    """IPython's display when IPython is there; a no-op in plain scripts (figures stay reachable)."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython is a notebook-extra dependency
        return None
    if get_ipython() is None:
        return None
    return display(obj, display_id=display_id) if display_id else display(obj)


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
    raise WidgetError(f"snapshots: expected an object with snapshot_at(request_index, rank), a callable or a "
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
    layout on demand; stack frames, if a device records any, are kept by storing that snapshot as is.

    Args:
        device: anything with ``snapshot()`` in torch's layout (``SimDevice``).
    """

    def __init__(self, device: Any, *, every: int = 1, max_snapshots: int | None = None) -> None:
        if every < 1:
            raise WidgetError(f"every must be >= 1, got {every}")
        self.device = device
        self.every = every
        self.max_snapshots = max_snapshots
        self._snaps: dict[int, Any] = {}
        self._failed: set[int] = set()
        self._segments: dict[tuple[Any, ...], tuple[Any, ...]] = {}  # interned segment tuples
        self.seconds = 0.0  # time spent taking snapshots (reported by the benchmark)

    def _compact(self, snap: Mapping[str, Any]) -> Any:
        segs = snap.get("segments", ())
        if any(s.get("frames") or any(b.get("frames") for b in s["blocks"]) for s in segs):
            return snap  # frames carry context worth keeping as recorded
        compact = []
        intern = self._segments.setdefault
        for s in segs:
            key = (*(s[f] for f in _SEGMENT_FIELDS),
                   tuple((b["address"], b["size"], b["requested_size"], b["state"]) for b in s["blocks"]))
            compact.append(intern(key, key))
        rest = tuple((k, v) for k, v in snap.items() if k not in ("segments", "device_traces"))
        return (tuple(compact), rest, len(snap.get("device_traces", ())) or 1)

    @staticmethod
    def _expand(stored: Any) -> dict[str, Any]:
        if isinstance(stored, Mapping):
            return dict(stored)
        segments, rest, devices = stored
        out: dict[str, Any] = {
            "segments": [
                {**dict(zip(_SEGMENT_FIELDS, seg[:-1])), "frames": [],
                 "blocks": [{**dict(zip(_BLOCK_FIELDS, b)), "frames": []} for b in seg[-1]]}
                for seg in segments
            ],
            "device_traces": [[] for _ in range(devices)],
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


# -- live figure ---------------------------------------------------------------------------------------


class _RankColumns:
    """Columns of one rank's samples, extended as samples arrive (so a redraw converts, never rebuilds)."""

    def __init__(self, metrics: Sequence[str]) -> None:
        self.metrics = tuple(metrics)
        self.x: list[int] = []
        self.values: dict[str, list[int]] = {m: [] for m in metrics}
        self.texts: list[str] = []
        self.failed: list[MemorySample] = []
        self.done = 0  # samples already converted into the columns

    def extend(self, samples: Sequence[MemorySample]) -> None:
        from toolkit.viz.plots import _request_texts  # the hover text of plot_run, shared

        new = samples[self.done:]
        self.x.extend(s.request_index for s in new)
        for m in self.metrics:
            col = self.values[m]
            if m == "fragmentation_bytes":
                col.extend(s.reserved_bytes - s.allocated_bytes for s in new)
            else:
                col.extend(map(attrgetter(m), new))
        self.texts.extend(_request_texts(new))
        self.failed.extend(s for s in new if s.status != "ok")
        self.done = len(samples)


class LiveFigure:
    """Per-request memory of a run as it grows (``toolkit.viz.plots.plot_run``, redrawn while samples arrive).

    Feeding it is cheap: ``append`` (or calling the object with a sample or a per-request result) only
    stores the samples; the figure is redrawn at most every ``interval_s`` seconds, and never more often
    than keeps the redraw time under ``max_overhead`` of the elapsed time, so a long run does not slow
    down as the figure grows. ``finish()`` draws the rest and the final status.

    Example::

        live = LiveFigure(engine.header(), ranks=range(2))
        display(live)
        for image in images:
            live(engine.generate(None, image))
        live.finish()

    Args:
        header: the run being recorded (its samples, if any, are drawn at once).
        ranks: the ranks to draw (default: the header's, else 0); a new rank redraws the layout.
        metrics: as in ``plot_run``.
        interval_s: the shortest time between two redraws.
        max_overhead: the largest fraction of wall time redraws may take.
        mode: "widget" (FigureWidget, updated in place), "static" (plotly figure through a display
            handle), or "auto".
    """

    def __init__(
        self,
        header: Run,
        *,
        ranks: Sequence[int] | None = None,
        metrics: Sequence[str] = MEMORY_METRICS,
        interval_s: float = 0.25,
        max_overhead: float = 0.05,
        budget_bytes: int | None = None,
        mode: Mode = "auto",
    ) -> None:
        if interval_s < 0 or not 0 < max_overhead <= 1:
            raise WidgetError("interval_s must be >= 0 and max_overhead in (0, 1]")
        self.mode = _resolve_mode(mode)
        self.header = header.with_samples(())
        self.metrics = tuple(metrics)
        self.interval_s = interval_s
        self.max_overhead = max_overhead
        self.budget_bytes = budget_bytes
        self._samples: list[MemorySample] = list(header.samples)
        self._by_rank: dict[int, list[MemorySample]] = {}
        for s in self._samples:
            self._by_rank.setdefault(s.rank, []).append(s)
        self.ranks: tuple[int, ...] = tuple(sorted(set(ranks if ranks is not None else header.ranks) or {0}))
        self._columns: dict[int, _RankColumns] = {}
        self._final: Run | None = None
        self._next_flush = 0.0
        self._dirty = bool(self._samples)
        # counters for benchmarks and tests
        self.samples_received = len(self._samples)
        self.flushes = 0
        self.flush_seconds = 0.0
        self._widget: go.FigureWidget | None = None
        self._handle: Any = None
        self._displayed = False
        self._build()

    # -- feeding -----------------------------------------------------------------------------------
    def append(self, *samples: MemorySample) -> None:
        """Store samples; redraw if the throttle allows."""
        self._samples.extend(samples)
        for s in samples:
            rank_list = self._by_rank.get(s.rank)
            if rank_list is None:
                rank_list = self._by_rank[s.rank] = []
            rank_list.append(s)
        self.samples_received += len(samples)
        self._dirty = True
        if time.perf_counter() >= self._next_flush:
            self.flush()

    def __call__(self, item: Any) -> None:
        """Feed one ``MemorySample`` or a per-request result that carries ``samples`` (request callback)."""
        if isinstance(item, MemorySample):
            self.append(item)
        else:
            self.append(*item.samples)

    @property
    def run(self) -> Run:
        """The run so far (or as finished)."""
        return self._final if self._final is not None else self.header.with_samples(self._samples)

    def figure(self) -> go.Figure:
        """A static plotly figure of the run so far (what the live view shows)."""
        return plot_run(self.run, metrics=self.metrics, budget_bytes=self.budget_bytes, ranks=self.ranks)

    # -- drawing -----------------------------------------------------------------------------------
    def _build(self) -> None:
        self._columns = {r: _RankColumns(self.metrics) for r in self.ranks}
        fig = self.figure()
        if self.mode == "widget":
            if self._widget is None:
                self._widget = _figure_widget(fig)
            else:  # a new rank appeared: the layout changes, so replace everything
                with self._widget.batch_update():
                    self._widget.data = ()
                self._widget.add_traces(fig.data)
                self._widget.layout = fig.layout
            for r in self.ranks:
                self._columns[r].extend(self._by_rank.get(r, []))
        self._static = fig

    def flush(self) -> None:
        """Redraw now with every sample received so far."""
        if not self._dirty:
            return
        t0 = time.perf_counter()
        if not set(self._by_rank) <= set(self.ranks):
            self.ranks = tuple(sorted(set(self.ranks) | set(self._by_rank)))
            self._build()
        if self.mode == "widget":
            self._update_widget()
        else:
            self._static = self.figure()
            if self._handle is not None:
                self._handle.update(self._static)
        self._dirty = False
        spent = time.perf_counter() - t0
        self.flushes += 1
        self.flush_seconds += spent
        self._next_flush = time.perf_counter() + max(self.interval_s, spent / self.max_overhead)

    def _update_widget(self) -> None:
        fw = self._widget
        assert fw is not None
        per_rank = len(self.metrics) + 1
        with fw.batch_update():
            for i, rank in enumerate(self.ranks):
                cols = self._columns[rank]
                cols.extend(self._by_rank.get(rank, []))
                x = np.asarray(cols.x, dtype=np.int32)
                for j, m in enumerate(self.metrics):
                    trace = fw.data[i * per_rank + j]
                    trace.x = x
                    trace.y = np.asarray(cols.values[m], dtype=np.float64) / GiB
                    if j == 0:
                        trace.customdata = cols.texts
                failed = fw.data[i * per_rank + len(self.metrics)]
                if len(failed.x or ()) != len(cols.failed):
                    failed.x = [s.request_index for s in cols.failed]
                    failed.y = [s.reserved_bytes / GiB for s in cols.failed]
                    failed.customdata = [html.escape(f"{s.status}: {s.message or ''}")[:300] for s in cols.failed]

    def finish(self, run: Run | None = None) -> Run:
        """Draw everything and the final status (title, OOM line). ``run``: the finished run, if the
        engine returned one (its samples replace those received)."""
        if run is not None:
            self._samples = list(run.samples)
            self._by_rank = {}
            for s in self._samples:
                self._by_rank.setdefault(s.rank, []).append(s)
            self._columns = {r: _RankColumns(self.metrics) for r in self.ranks}
            self._final = run
        self._dirty = True
        self.flush()
        final = self.figure()
        if self.mode == "widget" and self._widget is not None:
            with self._widget.batch_update():
                self._widget.layout.title = final.layout.title
                self._widget.layout.shapes = final.layout.shapes
                self._widget.layout.annotations = final.layout.annotations
        else:
            self._static = final
            if self._handle is not None:
                self._handle.update(final)
        return self.run

    # -- display -----------------------------------------------------------------------------------
    @property
    def widget(self) -> Any:
        """The FigureWidget (mode "widget") or the latest static figure."""
        return self._widget if self.mode == "widget" else self._static

    def _ipython_display_(self) -> None:
        if self.mode == "widget":
            _display(self._widget)
        else:
            self._handle = _display(self._static, display_id=True)

    def __repr__(self) -> str:
        sim = ", simulated" if self.header.simulated else ""
        return (f"LiveFigure({self.header.name!r}{sim}, {self.samples_received} samples, {self.flushes} redraws, "
                f"mode={self.mode})")


# -- running an engine with live views ------------------------------------------------------------------


@dataclass
class Watched:
    """What ``watch`` returns: the finished run, its live figure and the recorded snapshots."""

    run: Run
    live: LiveFigure | None
    snapshots: SnapshotRecorder | None

    def inspect(self, **kwargs: Any) -> Inspector:
        """An ``Inspector`` over the run and its snapshots."""
        return Inspector(self.run, self.snapshots, **kwargs)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def __repr__(self) -> str:
        sim = " [simulated]" if self.run.simulated else ""
        return (f"Watched({self.run.name!r}{sim}: {self.run.status}, {self.run.requests_served} requests served, "
                f"{len(self.snapshots or ())} snapshots)")


def watch(
    engine: Any,
    images: Any,
    *,
    live: bool = True,
    record_snapshots: bool = True,
    snapshot_every: int = 1,
    interval_s: float = 0.25,
    mode: Mode = "auto",
    show: bool = True,
    **run_kwargs: Any,
) -> Watched:
    """Run ``engine.run_images(images, **run_kwargs)`` with a live figure and per-request snapshots.

    ``engine``: a ``SimEngine`` or any engine with ``header()`` and ``run_images(..., on_result=)`` (the
    real engines share that interface); snapshots need ``engine.device.snapshot()``. The live figure is
    displayed before the first request (``show=False`` to display it yourself).
    """
    header = engine.header() if hasattr(engine, "header") else None
    if header is None:
        raise WidgetError(f"{type(engine).__name__} has no header(): not an engine watch() can follow")
    tp = int(getattr(getattr(engine, "engine_args", None), "tensor_parallel_size", 1) or 1)
    figure = LiveFigure(header, ranks=range(tp), interval_s=interval_s, mode=mode) if live else None
    recorder = None
    if record_snapshots:
        device = getattr(engine, "device", None)
        if device is None or not hasattr(device, "snapshot"):
            raise WidgetError(f"{type(engine).__name__} exposes no device.snapshot(): pass record_snapshots=False")
        recorder = SnapshotRecorder(device, every=snapshot_every)
    callbacks = [c for c in (figure, recorder) if c is not None]

    def on_result(result: Any) -> None:
        for c in callbacks:
            c(result)

    if figure is not None and show:
        _display(figure)
    if "on_result" not in inspect.signature(engine.run_images).parameters:
        raise WidgetError(f"{type(engine).__name__}.run_images takes no on_result callback: watch() cannot follow it")
    run = engine.run_images(images, on_result=on_result, **run_kwargs)
    if figure is not None:
        figure.finish(run)
    return Watched(run=run, live=figure, snapshots=recorder)


# -- inspector -----------------------------------------------------------------------------------------

_STAT_ROWS: tuple[tuple[str, str], ...] = (
    ("allocated", "allocated_bytes"),
    ("allocated peak (request)", "allocated_peak_bytes"),
    ("reserved", "reserved_bytes"),
    ("reserved peak (request)", "reserved_peak_bytes"),
    ("active", "active_bytes"),
    ("inactive split", "inactive_split_bytes"),
    ("reserved − allocated", "fragmentation_bytes"),
    ("non-torch", "non_torch_bytes"),
    ("device used", "device_used_bytes"),
)


def _value(s: MemorySample, key: str) -> int:
    return s.reserved_bytes - s.allocated_bytes if key == "fragmentation_bytes" else int(getattr(s, key))


def stats_html(sample: MemorySample, previous: MemorySample | None = None,
               snapshot: Mapping[str, Any] | None = None) -> str:
    """The statistics at one request as an HTML table (with the change since the previous request)."""
    def delta(key: str) -> str:
        if previous is None:
            return ""
        d = _value(sample, key) - _value(previous, key)
        if d == 0:
            return "<span style='color:#999'>±0</span>"
        color = "#c62828" if d > 0 else "#2e7d32"
        return f"<span style='color:{color}'>{'+' if d > 0 else '−'}{format_bytes(abs(d))}</span>"

    rows = []
    name = sample.input_name or "(text only)"
    rows.append(("input", html.escape(name if len(name) <= 36 else name[:35] + "…"), ""))
    if sample.image_width_px and sample.image_height_px:
        size = f"{sample.image_width_px}×{sample.image_height_px}"
        if sample.resized_width_px and sample.resized_height_px:
            size += f" → {sample.resized_width_px}×{sample.resized_height_px}"
        rows.append(("image (px)", size, ""))
    rows.append(("tokens: visual / prompt / out", f"{sample.visual_tokens} / {sample.prompt_tokens} / "
                                                   f"{sample.output_tokens}", ""))
    rows.append(("latency", f"{sample.duration_ns / 1e6:.1f} ms", ""))
    for label, key in _STAT_ROWS:
        rows.append((label, format_bytes(_value(sample, key)), delta(key)))
    rows.append(("segments", str(sample.segment_count), ""))
    rows.append(("alloc retries / OOMs", f"{sample.alloc_retries} / {sample.num_ooms}", ""))
    if snapshot is not None:
        from toolkit.snapshot import summarize

        summ = summarize(snapshot)
        rows.append(("largest free block", format_bytes(summ["largest_free_block_bytes"]), ""))
        rows.append(("blocks (active)", f"{summ['blocks']} ({summ['active_blocks']})", ""))
    status = html.escape(sample.status.upper() + (f": {sample.message}" if sample.message else ""))
    color = "#2e7d32" if sample.status == "ok" else "#c62828"
    cell = "padding:1px 8px;white-space:nowrap;line-height:1.3"
    body = "".join(f"<tr><td style='text-align:left;{cell}'>{k}</td>"
                   f"<td style='text-align:right;{cell}'>{v}</td>"
                   f"<td style='text-align:right;{cell}'>{d}</td></tr>" for k, v, d in rows)
    return (f"<div class='memlab-stats'><div style='color:{color};font-weight:bold'>{status}</div>"
            f"<table style='font-size:12px'>{body}</table></div>")


class Inspector:
    """Step through a run request by request: the allocator state and the statistics at each request.

    A slider and ◀ ▶ buttons pick the request (clicking the overview plot jumps there too; "first
    failure" jumps to the OOM); a rank selector appears for tensor-parallel runs. The allocator view
    draws one row per segment with its blocks coloured by state (``plot_allocator_state``).

    Args:
        run: the run (a ``Run``).
        snapshots: a ``SnapshotSource``, callable or mapping (``snapshot_lookup``); None: statistics only.
        request: the request shown first (default: the first failure, else the last request).
        scale: "bytes" or "fraction" (see ``plot_allocator_state``).
        max_height_px: the allocator view's height limit (rows get thinner; hover and zoom still work).
        mode: "widget", "static" (a plotly figure with its own slider) or "auto".
    """

    def __init__(
        self,
        run: Run,
        snapshots: Any = None,
        *,
        rank: int | None = None,
        request: int | None = None,
        scale: str = "bytes",
        max_segments: int | None = 400,
        max_height_px: int = 900,
        mode: Mode = "auto",
    ) -> None:
        if not isinstance(run, Run):
            raise WidgetError(f"Inspector needs a Run, got {type(run).__name__}")
        if not run.samples:
            raise WidgetError(f"run {run.name!r} has no samples to inspect")
        self.run = run
        self.lookup = snapshot_lookup(snapshots)
        self.mode = _resolve_mode(mode)
        self.scale = scale
        self.max_segments = max_segments
        self.max_height_px = max_height_px
        self.rank = run.ranks[0] if rank is None else rank
        if self.rank not in run.ranks:
            raise WidgetError(f"run {run.name!r} has no rank {self.rank} (ranks: {list(run.ranks)})")
        self._samples = {(s.request_index, s.rank): s for s in run.samples}
        self.requests = sorted({s.request_index for s in run.samples})
        failed = [s.request_index for s in run.samples if s.status != "ok"]
        self.first_failure = min(failed) if failed else None
        start = request if request is not None else (self.first_failure if failed else self.requests[-1])
        self.request = self._nearest(start)
        self._ui: dict[str, Any] = {}
        self._box: Any = None
        self._syncing = False
        self._overview_rank: int | None = None
        self.updates = 0

    # -- pure parts ----------------------------------------------------------------------------------
    def _nearest(self, request_index: int) -> int:
        i = int(np.searchsorted(self.requests, request_index))
        candidates = self.requests[max(0, i - 1): i + 1]
        return min(candidates, key=lambda r: (abs(r - request_index), r))

    def snapshot(self, request_index: int | None = None, rank: int | None = None) -> Mapping[str, Any] | None:
        return self.lookup(self.request if request_index is None else request_index,
                           self.rank if rank is None else rank)

    def _title(self, request_index: int, rank: int, snap: Mapping[str, Any] | None) -> str:
        from toolkit.viz.plots import _state_title

        sample = self._samples.get((request_index, rank))
        note = [self.run.name]
        if snap is None:
            note.append("no allocator snapshot recorded for this request")
        if sample is not None and sample.status != "ok":
            note.append(sample.status.upper())
        return _state_title(self.run, request_index, rank) + f"<br><sup>{html.escape(' — '.join(note))}</sup>"

    def state_figure(self, request_index: int | None = None, rank: int | None = None) -> go.Figure:
        """The allocator state at a request as a static figure (empty, and saying so, without a snapshot)."""
        import plotly.graph_objects as go

        req = self.request if request_index is None else self._nearest(request_index)
        rk = self.rank if rank is None else rank
        snap = self.lookup(req, rk)
        if snap is not None:
            fig = plot_allocator_state(snap, scale=self.scale, max_segments=self.max_segments)
            fig.update_layout(height=min(fig.layout.height, self.max_height_px))
            summary = fig.layout.title.text.split("<br>", 1)[1] if "<br>" in fig.layout.title.text else ""
            fig.update_layout(title=self._title(req, rk, snap) + ("<br>" + summary if summary else ""),
                              margin={"t": 110})
            return fig
        traces, layout = allocator_state_traces(None, scale=self.scale, max_height_px=self.max_height_px)
        layout.pop("summary")
        fig = go.Figure(data=traces)
        fig.update_layout(title=self._title(req, rk, None), barmode="overlay", template="plotly_white", **layout)
        return fig

    def stats(self, request_index: int | None = None, rank: int | None = None) -> str:
        req = self.request if request_index is None else request_index
        rk = self.rank if rank is None else rank
        sample = self._samples.get((req, rk))
        if sample is None:
            return f"<i>no sample for request {req} on rank {rk}</i>"
        i = self.requests.index(req)
        prev = self._samples.get((self.requests[i - 1], rk)) if i > 0 else None
        return stats_html(sample, prev, self.lookup(req, rk))

    def static_figure(self, max_steps: int = 200) -> go.Figure:
        """The inspector without widgets: a plotly slider over requests (works in exported HTML)."""
        return plot_allocator_steps(self.run, self.lookup, rank=self.rank, max_steps=max_steps, scale=self.scale)

    # -- widget --------------------------------------------------------------------------------------
    @property
    def widget(self) -> Any:
        """The ipywidgets box (built on first use)."""
        if self._box is None:
            self._box = self._build()
        return self._box

    def _overview(self) -> go.Figure:
        run_r = self.run.with_samples(self.run.samples_of_rank(self.rank))
        fig = plot_run(run_r, metrics=("allocated_bytes", "reserved_bytes", "device_used_bytes"), height_px=300)
        fig.update_layout(title={"text": f"rank {self.rank}: click a request to inspect it", "font": {"size": 13}},
                          legend={"y": -0.25}, margin={"t": 40, "b": 10, "l": 50, "r": 10}, width=520)
        fig.add_vline(x=self.request, line={"color": "black", "width": 1.5})
        return fig

    def _build(self) -> Any:
        import ipywidgets as w

        ui = self._ui
        lo, hi = self.requests[0], self.requests[-1]
        ui["prev"] = w.Button(description="◀ prev", layout=w.Layout(width="80px"), tooltip="previous request")
        ui["next"] = w.Button(description="next ▶", layout=w.Layout(width="80px"), tooltip="next request")
        ui["slider"] = w.IntSlider(value=self.request, min=lo, max=hi, step=1, description="request",
                                   continuous_update=False, layout=w.Layout(width="480px"))
        controls = [ui["prev"], ui["slider"], ui["next"]]
        if self.first_failure is not None:
            ui["failure"] = w.Button(description=f"first failure ({self.first_failure})", button_style="danger",
                                     layout=w.Layout(width="170px"))
            ui["failure"].on_click(lambda _b: self.show(self.first_failure))
            controls.append(ui["failure"])
        if len(self.run.ranks) > 1:
            ui["rank"] = w.Dropdown(options=list(self.run.ranks), value=self.rank, description="rank",
                                    layout=w.Layout(width="140px"))
            ui["rank"].observe(lambda ch: self.show(self.request, ch["new"]), names="value")
            controls.append(ui["rank"])
        ui["prev"].on_click(lambda _b: self.step(-1))
        ui["next"].on_click(lambda _b: self.step(+1))
        ui["slider"].observe(lambda ch: self.show(ch["new"]), names="value")
        ui["state"] = _figure_widget(self.state_figure())
        ui["overview"] = _figure_widget(self._overview())
        self._overview_rank = self.rank
        self._wire_overview()
        ui["stats"] = w.HTML(self.stats(), layout=w.Layout(width="490px", min_width="490px"))
        sim = " <b style='color:#e65100'>simulated</b>" if self.run.simulated else ""
        header = w.HTML(f"<b>Inspector</b>: {html.escape(self.run.name)}{sim} — {len(self.requests)} requests, "
                        f"status {html.escape(self.run.status)}")
        # numbers first (they fit on a screen), the allocator view under them (it can be tall)
        return w.VBox([header, w.HBox(controls),
                       w.HBox([ui["stats"], ui["overview"]],
                              layout=w.Layout(align_items="flex-start", flex_flow="row wrap")),
                       ui["state"]])

    def _wire_overview(self) -> None:
        """Clicking a point of the overview shows that request."""
        for trace in self._ui["overview"].data:
            trace.on_click(lambda _t, points, _s: points.xs and self.show(int(points.xs[0])))

    def step(self, delta: int) -> None:
        """Move ``delta`` requests forward (negative: back), clamped to the run."""
        i = self.requests.index(self.request)
        self.show(self.requests[min(max(i + delta, 0), len(self.requests) - 1)])

    def show(self, request_index: int, rank: int | None = None) -> None:
        """Show the allocator state and statistics at ``request_index`` (the nearest recorded one)."""
        if rank is not None and rank not in self.run.ranks:
            raise WidgetError(f"run {self.run.name!r} has no rank {rank} (ranks: {list(self.run.ranks)})")
        if self._syncing:  # a control moved because show() set it: already being drawn
            return
        self.request = self._nearest(int(request_index))
        if rank is not None:
            self.rank = rank
        self.updates += 1
        if self._box is None:
            return
        ui = self._ui
        self._syncing = True
        try:  # keep the controls in step with what is shown, without re-entering show()
            ui["slider"].value = self.request
            if "rank" in ui:
                ui["rank"].value = self.rank
        finally:
            self._syncing = False
        self._render()

    def _render(self) -> None:
        ui = self._ui
        snap = self.lookup(self.request, self.rank)
        traces, layout = allocator_state_traces(snap, scale=self.scale, max_segments=self.max_segments,
                                                max_height_px=self.max_height_px)
        summary = layout.pop("summary")
        fw = ui["state"]
        with fw.batch_update():
            for target, source in zip(fw.data, traces):
                target.x, target.y, target.base = source.x, source.y, source.base
                target.customdata = source.customdata
                target.showlegend = source.showlegend
            fw.layout.yaxis.categoryarray = layout["yaxis"]["categoryarray"]
            fw.layout.height = layout["height"]
            fw.layout.title.text = self._title(self.request, self.rank, snap) + (
                f"<br><sup>{summary}</sup>" if summary else "")
            fw.layout.margin.t = 110
        ui["stats"].value = self.stats()
        ov = ui["overview"]
        if self._overview_rank != self.rank:
            new = self._overview()
            with ov.batch_update():
                ov.data = ()
            ov.add_traces(new.data)
            ov.layout = new.layout
            self._overview_rank = self.rank
            self._wire_overview()
        else:
            with ov.batch_update():
                ov.layout.shapes[-1].x0 = self.request
                ov.layout.shapes[-1].x1 = self.request

    def _ipython_display_(self) -> None:
        if self.mode == "widget":
            _display(self.widget)
        else:
            _display(self.static_figure())

    def __repr__(self) -> str:
        return f"Inspector({self.run.name!r}, request {self.request}, rank {self.rank}, mode={self.mode})"


# -- conf sweep ----------------------------------------------------------------------------------------

UNSET_TOKENS = frozenset(("", "-", "unset", "none"))
MAX_COMBINATIONS = 16
# The options the sweep panel offers first (every other key can be typed into ``extra``).
DEFAULT_SWEEP: dict[str, str] = {
    "expandable_segments": "-, True",
    "max_split_size_mb": "-, 256",
    "garbage_collection_threshold": "-",
    "roundup_power2_divisions": "-",
}


def parse_choices(text: str) -> list[str | None]:
    """``"-, True"`` -> ``[None, "True"]``: comma-separated values, ``-`` (or blank) for "not set".

    ``roundup_power2_divisions`` values with brackets (``[256:1,>:4]``) keep their commas.
    """
    out: list[str | None] = []
    depth = 0
    cur = ""
    for ch in text + ",":
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth <= 0:
            token = cur.strip()
            value = None if token.lower() in UNSET_TOKENS else token
            if value not in out:
                out.append(value)
            cur = ""
        else:
            cur += ch
    return out or [None]


def conf_combinations(choices: Mapping[str, Sequence[str | None]]) -> list[str]:
    """Every combination of the chosen values, as conf strings (``""``: all unset), in a stable order."""
    keys = list(choices)
    out: list[str] = []
    for values in itertools.product(*(choices[k] or [None] for k in keys)):
        conf = ",".join(f"{k}:{v}" for k, v in zip(keys, values) if v is not None)
        if conf not in out:
            out.append(conf)
    return out


def validate_confs(confs: Sequence[str], platform: str = "npu",
                   version: str | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    """Split confs into those ``toolkit.conf.parse`` accepts and ``(conf, one-line reason)`` for the rest."""
    from toolkit.conf import ConfError, parse

    ok: list[str] = []
    rejected: list[tuple[str, str]] = []
    for conf in confs:
        try:
            parse(conf, platform=platform, version=version)
        except ConfError as err:
            rejected.append((conf, str(err).splitlines()[0]))
        else:
            ok.append(conf)
    return ok, rejected


RunOne = Callable[[str, "float | None"], Run]


def seed_runner(n_photos: int = 40, out_dir: str | Path | None = None, **engine_kwargs: Any) -> RunOne:
    """A runner for ``ConfSweep``: the seed scenario (``toolkit.engines.scenarios.seed_scenario``, simulated) for
    one conf at a time, sharing one photo set."""
    from toolkit.engines.scenarios import ScenarioConf, seed_scenario

    folder = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="ascend-memlab-sweep-"))

    def run_one(conf: str, memory_fraction: float | None) -> Run:
        result = seed_scenario(n_photos, confs=[ScenarioConf(conf, memory_fraction=memory_fraction)],
                               out_dir=folder, progress=False, **engine_kwargs)
        return next(iter(result.runs.values()))

    return run_one


class ConfSweep:
    """Pick conf options, run one simulated scenario per combination, compare them.

    Each option takes comma-separated values (``-`` = not set); every combination is validated by
    ``toolkit.conf.parse`` for the platform, and rejected ones are listed with the parser's reason
    (``expandable_segments:True`` with ``max_split_size_mb`` fails exactly as torch_npu would). "Run"
    runs each valid conf with ``runner(conf, memory_fraction)`` and updates the comparison figure and the
    summary table (requests served, peak reserved, peak fragmentation, OOM at request k) after each.

    Args:
        runner: runs one conf; default ``seed_runner(n_photos)`` (simulated).
        options: option -> initial text (default ``DEFAULT_SWEEP``).
        memory_fraction: passed to the runner (garbage collection only acts with a fraction set).
    """

    def __init__(
        self,
        runner: RunOne | None = None,
        *,
        platform: str = "npu",
        version: str | None = None,
        options: Mapping[str, str] | None = None,
        n_photos: int = 40,
        memory_fraction: float | None = None,
        metric: str = "reserved_bytes",
        max_combinations: int = MAX_COMBINATIONS,
        mode: Mode = "auto",
    ) -> None:
        self.platform = platform
        self.version = version
        self.options: dict[str, str] = dict(DEFAULT_SWEEP if options is None else options)
        self.n_photos = n_photos
        self.memory_fraction = memory_fraction
        self.metric = metric
        self.max_combinations = max_combinations
        self.mode = _resolve_mode(mode)
        self._runner = runner
        self.runs: list[Run] = []
        self.rejected: list[tuple[str, str]] = []
        self.failed: list[tuple[str, str]] = []  # conf, why its engine could not start
        self._ui: dict[str, Any] = {}
        self._box: Any = None

    @property
    def runner(self) -> RunOne:
        if self._runner is None:
            self._runner = seed_runner(self.n_photos)
        return self._runner

    def combinations(self) -> tuple[list[str], list[tuple[str, str]]]:
        """(valid confs, rejected confs with reasons) for the current option texts."""
        choices = {k: parse_choices(v) for k, v in self.options.items()}
        valid, rejected = validate_confs(conf_combinations(choices), self.platform, self.version)
        if len(valid) > self.max_combinations:
            raise WidgetError(f"{len(valid)} combinations: at most {self.max_combinations} per sweep "
                              "(choose fewer values)")
        return valid, rejected

    def run(self) -> list[Run]:
        """Run every valid combination (updating the panel after each); returns the runs."""
        from toolkit.core.errors import ToolkitError

        valid, self.rejected = self.combinations()
        self.runs, self.failed = [], []
        for i, conf in enumerate(valid):
            self._status(f"running {i + 1}/{len(valid)} (simulated): {conf or 'defaults'} …")
            try:
                self.runs.append(self.runner(conf, self.memory_fraction))
            except ToolkitError as err:  # e.g. the engine cannot even start under this conf: a result too
                self.failed.append((conf, str(err).splitlines()[0]))
                continue
            self._refresh()
        failures = "; ".join(f"{conf or 'defaults'}: {why}" for conf, why in self.failed)
        self._status(f"done: {len(self.runs)} simulated runs" +
                     (f", {len(self.failed)} could not start ({failures})" if self.failed else "") +
                     (f", {len(self.rejected)} combinations rejected" if self.rejected else ""))
        return self.runs

    def table(self) -> pd.DataFrame:
        """The summary of the runs so far (``toolkit.viz.report.summary_frame``; bytes as ints)."""
        from toolkit.viz.report import summary_frame

        return summary_frame(self.runs)

    def figure(self) -> go.Figure:
        return plot_compare(self.runs, self.metric)

    # -- widget --------------------------------------------------------------------------------------
    def _status(self, text: str) -> None:
        if "status" in self._ui:
            self._ui["status"].value = html.escape(text)

    def _refresh(self) -> None:
        if self._box is None or not self.runs:
            return
        from toolkit.viz.report import format_summary

        new = self.figure()
        fw = self._ui["figure"]
        if self.mode == "widget":
            with fw.batch_update():
                fw.data = ()
            fw.add_traces(new.data)
            fw.layout = new.layout
        else:
            self._ui["figure_out"].clear_output(wait=True)
            with self._ui["figure_out"]:
                _display(new)
        cols = ["run", "status", "requests_served", "oom_at_request", "peak_reserved_bytes",
                "peak_fragmentation_bytes", "peak_inactive_split_bytes", "peak_non_torch_bytes", "alloc_retries"]
        self._ui["table"].value = ("<b>simulated</b> " if all(r.simulated for r in self.runs) else "") + \
            format_summary(self.table()[cols]).to_html(index=False, border=0)

    def _preview(self) -> None:
        try:
            valid, rejected = self.combinations()
        except WidgetError as err:
            self._ui["preview"].value = f"<span style='color:#c62828'>{html.escape(str(err))}</span>"
            self._ui["run"].disabled = True
            return
        self._ui["run"].disabled = not valid
        lines = [f"<b>{len(valid)} confs</b>: " + ", ".join(f"<code>{html.escape(c or 'defaults')}</code>"
                                                            for c in valid)]
        lines += [f"<span style='color:#c62828'>rejected <code>{html.escape(c)}</code>: {html.escape(r)}</span>"
                  for c, r in rejected]
        self._ui["preview"].value = "<br>".join(lines)

    @property
    def widget(self) -> Any:
        if self._box is None:
            self._box = self._build()
        return self._box

    def _build(self) -> Any:
        try:
            import ipywidgets as w
        except ImportError:
            raise WidgetError("the sweep panel needs ipywidgets (pip install 'ascend-memlab[notebook]'); "
                              "without it call .run(), then .figure() and .table()") from None
        import plotly.graph_objects as go

        ui = self._ui
        fields_ = []
        for key, text in self.options.items():
            box = w.Text(value=text, description=key, style={"description_width": "220px"},
                         layout=w.Layout(width="460px"))

            def changed(ch: Any, key: str = key) -> None:
                self.options[key] = ch["new"]
                self._preview()

            box.observe(changed, names="value")
            fields_.append(box)
        ui["metric"] = w.Dropdown(options=[(METRIC_LABELS[m], m) for m in
                                           ("reserved_bytes", "non_torch_bytes", "fragmentation_bytes",
                                            "inactive_split_bytes", "device_used_bytes", "allocated_bytes")],
                                  value=self.metric, description="compare")

        def metric_changed(ch: Any) -> None:
            self.metric = ch["new"]
            self._refresh()

        ui["metric"].observe(metric_changed, names="value")
        ui["run"] = w.Button(description="Run (simulated)", button_style="primary", icon="play")
        ui["run"].on_click(lambda _b: self.run())
        ui["preview"] = w.HTML()
        ui["status"] = w.HTML(f"{self.platform} allocator; each run is simulated")
        if self.mode == "widget":
            ui["figure"] = _figure_widget(go.Figure(layout={"height": 80, "template": "plotly_white"}))
            plot_area: Any = ui["figure"]
        else:
            ui["figure_out"] = plot_area = w.Output()
        ui["table"] = w.HTML()
        self._preview()
        return w.VBox([w.HTML("<b>Conf sweep</b> (values separated by commas, <code>-</code> = not set)"),
                       *fields_, ui["preview"], w.HBox([ui["run"], ui["metric"]]), ui["status"], plot_area,
                       ui["table"]])

    def _ipython_display_(self) -> None:
        _display(self.widget)

    def __repr__(self) -> str:
        return f"ConfSweep({self.platform}, {len(self.runs)} runs)"


"""``LiveFigure``: per-request memory of a run as it grows, redrawn in batches while samples arrive."""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import numpy as np

from toolkit.core.records import MemorySample, Run
from toolkit.core.units import GiB
from toolkit.viz.plots import (
    MEMORY_METRICS,
    plot_run,
)

if TYPE_CHECKING:  # pragma: no cover
    import plotly.graph_objects as go

from toolkit.notebook.widgets._display import (
    Mode,
    WidgetError,
    _display,
    _figure_widget,
    _resolve_mode,
    html_bundle,
    show_figure,
    update_figure,
    widgets_available,
)
from toolkit.notebook._preload import preload_plotly
from toolkit.notebook.widgets._frame import live_frame_html

# After the first frame with points, how long until the plotly.js preload goes out (the page paints that
# frame first: evaluating plotly.js holds the page's main thread for 1.5-2 s where nothing else draws).
_PRELOAD_DELAY_S = 0.25

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
        from toolkit.viz.plots import (
            _request_texts,  # the hover text of plot_run, shared
        )

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
        max_overhead: the largest fraction of wall time redraws may take (their CPU time on the calling
            thread, so a loaded machine does not stretch the wait).
        mode: "widget" (FigureWidget, updated in place), "static" (plotly figure through a display
            handle, plotly.js loaded once per page), or "auto" (= "static", see the note in ``__init__``).
        plotly_after_s: in "static" mode, for how long after the figure is displayed it is drawn as light
            frames (one inline SVG, drawn kernel-side, no JavaScript: on screen as soon as it arrives,
            where plotly.js costs a fresh page 1.5-2 s before its first figure); after that, and always
            when the run finishes, as the interactive plotly figure. ``0``: plotly from the start.
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
        plotly_after_s: float = 5.0,
    ) -> None:
        if interval_s < 0 or not 0 < max_overhead <= 1 or plotly_after_s < 0:
            raise WidgetError("interval_s and plotly_after_s must be >= 0 and max_overhead in (0, 1]")
        # "auto" is the display handle: a FigureWidget (anywidget) ships its own ~5 MB plotly.js bundle in
        # its state (plotly 7: FigureWidget._esm), so in a fresh page the first point showed after the whole
        # 40-photo run (12.9 s, issue 16); plotly's mime renderer loads plotly.js once per page and draws
        # each update_display as it comes. "widget" stays available for in-place trace updates.
        self.mode = "static" if mode == "auto" else _resolve_mode(mode)
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
        self._out: Any = None  # the Output widget the static figure is drawn into, in a kernel
        self._displayed = False
        self.plotly_after_s = plotly_after_s
        self._shown_at: float | None = None  # when displayed (perf_counter)
        self._first_points_at: float | None = None  # when the first frame with points went out
        self._preloaded = False
        self._finished = False
        self._static: go.Figure | None = None
        self.light_frames = 0  # counters: frames drawn light / as plotly figures
        self.plotly_frames = 0
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
        self._static = None
        if self.mode == "widget":
            fig = self.figure()
            if self._widget is None:
                self._widget = _figure_widget(fig)
            else:  # a new rank appeared: the layout changes, so replace everything
                with self._widget.batch_update():
                    self._widget.data = ()
                self._widget.add_traces(fig.data)
                self._widget.layout = fig.layout
            for r in self.ranks:
                self._columns[r].extend(self._by_rank.get(r, []))

    def flush(self) -> None:
        """Redraw now with every sample received so far."""
        if not self._dirty:
            return
        t0 = time.perf_counter()
        cpu0 = time.thread_time()
        if not set(self._by_rank) <= set(self.ranks):
            self.ranks = tuple(sorted(set(self.ranks) | set(self._by_rank)))
            self._build()
        if self.mode == "widget":
            self._update_widget()
        elif self._shown_at is None:
            pass  # not displayed: nothing to redraw (``widget`` and ``figure()`` build on demand)
        elif self._light_now():
            self._show_light()
        else:
            self._static = self.figure()
            self._show_static(self._static)
        self._dirty = False
        spent = time.perf_counter() - t0
        self.flushes += 1
        self.flush_seconds += spent
        # The throttle counts this thread's CPU time, not wall time: on a loaded machine a 3 ms light frame
        # could take 80 ms of wall time (the process waiting for a core), and 80 ms / max_overhead held the
        # next frame back 1.6 s (seen in tests/browser).
        cost = time.thread_time() - cpu0
        self._next_flush = time.perf_counter() + max(self.interval_s, cost / self.max_overhead)

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
        self._finished = True
        self._dirty = True
        if self.mode == "widget":
            self.flush()
        elif not set(self._by_rank) <= set(self.ranks):
            self.ranks = tuple(sorted(set(self.ranks) | set(self._by_rank)))
            self._build()
        final = self.figure()
        if self.mode == "widget" and self._widget is not None:
            with self._widget.batch_update():
                self._widget.layout.title = final.layout.title
                self._widget.layout.shapes = final.layout.shapes
                self._widget.layout.annotations = final.layout.annotations
        else:
            self._static = final
            if self._shown_at is not None:
                self._show_static(final)
        return self.run

    def _light_now(self) -> bool:
        return (not self._finished and self._shown_at is not None
                and time.perf_counter() - self._shown_at < self.plotly_after_s)

    def _frame(self) -> dict[str, Any]:
        """The light frame of the samples so far (columns extended, never rebuilt)."""
        for r in self.ranks:
            self._columns[r].extend(self._by_rank.get(r, []))
        cols = {r: (c.x, c.values) for r, c in self._columns.items()}
        failed = {r: c.failed for r, c in self._columns.items()}
        run = self.run
        n = max((len(c.x) for c in self._columns.values()), default=0)
        note = (f"live view, {n} requests so far; the interactive figure replaces it when the run ends"
                f" (in a long run, after {self.plotly_after_s:g} s)")
        text = f"Memory per request{' — simulated' if run.simulated else ''}: {run.name} ({n} requests so far)"
        return html_bundle(live_frame_html(run, cols, failed, metrics=self.metrics, ranks=self.ranks,
                                           budget_bytes=self.budget_bytes, note=note), text)

    def _show_light(self) -> None:
        bundle = self._frame()
        self.light_frames += 1
        now = time.perf_counter()
        has_points = any(c.x for c in self._columns.values())
        if has_points and self._first_points_at is None:
            self._first_points_at = now
        preload = (self._out is not None and not self._preloaded and self._first_points_at is not None
                   and now - self._first_points_at >= _PRELOAD_DELAY_S)
        if self._out is not None:
            from IPython.display import display

            self._out.clear_output(wait=True)
            with self._out:
                display(bundle, raw=True)
                if preload:  # the page loads plotly.js while the run goes, so the final figure draws at once
                    preload_plotly()
                    self._preloaded = True
        elif self._handle is not None:
            self._handle.update(bundle, raw=True)

    def _show_static(self, fig: go.Figure) -> None:
        """Redraw the displayed static figure: in its Output widget (a kernel with ipywidgets: JupyterLab's
        plotly renderer does not redraw an output on update_display, measured in tests/browser), else
        through the display handle."""
        self.plotly_frames += 1
        if self._out is not None:
            self._out.clear_output(wait=True)
            with self._out:
                show_figure(fig)
        else:
            update_figure(self._handle, fig)

    # -- display -----------------------------------------------------------------------------------
    @property
    def widget(self) -> Any:
        """The FigureWidget (mode "widget") or the static figure of the samples so far."""
        if self.mode == "widget":
            return self._widget
        if not self._finished or self._static is None:
            self._static = self.figure()
        return self._static

    def _ipython_display_(self) -> None:
        if self.mode == "widget":
            _display(self._widget)
        else:
            self._shown_at = time.perf_counter()
            light = self._light_now()
            if widgets_available():
                import ipywidgets

                self._out = ipywidgets.Output()
                _display(self._out)
                if light:
                    self._show_light()
                else:
                    self._show_static(self.widget)
            elif light:
                self._handle = _display(self._frame(), display_id=True, raw=True)
                self.light_frames += 1
            else:
                self._handle = show_figure(self.widget, display_id=True)

    def __repr__(self) -> str:
        sim = ", simulated" if self.header.simulated else ""
        return (f"LiveFigure({self.header.name!r}{sim}, {self.samples_received} samples, {self.flushes} redraws, "
                f"mode={self.mode})")



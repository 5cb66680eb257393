"""``Inspector``: step through a run request by request, the allocator's segments beside the curve."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from toolkit.core.records import MemorySample, Run
from toolkit.core.units import format_bytes
from toolkit.viz.plots import (
    allocator_state_traces,
    plot_allocator_state,
    plot_allocator_steps,
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
    show_figure,
)
from toolkit.notebook.widgets._frame import live_frame_html
from toolkit.snapshot.by_request import snapshot_lookup, snapshots_for

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
    ("  of it driver cache", "driver_cached_bytes"),
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
    heaps = (snapshot or {}).get("simulator", {}).get("driver_heaps") if isinstance(snapshot, Mapping) else None
    if heaps:  # next to the allocator's segments: what the Ascend driver holds below them (simulated)
        rows.append(("<b>driver heaps</b> (simulated)", "mapped / cached", ""))
        for h in heaps:
            kind = "base" if h["primary"] else f"{h['page']} page"
            rows.append((f"&nbsp;&nbsp;{h['start']:#x} ({kind})",
                         f"{format_bytes(h['mapped_bytes'])} / {format_bytes(h['cached_bytes'])}", ""))
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
        stranded_only: show only the segments holding stranded (inactive split) blocks (a checkbox too).
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
        stranded_only: bool = False,
    ) -> None:
        if not isinstance(run, Run):
            raise WidgetError(f"Inspector needs a Run, got {type(run).__name__}")
        if not run.samples:
            raise WidgetError(f"run {run.name!r} has no samples to inspect")
        self.run = run
        if snapshots is None:  # the snapshots the engine recorded for this run in this process, if any
            snapshots = snapshots_for(run)
        self.lookup = snapshot_lookup(snapshots)
        self.mode = _resolve_mode(mode)
        # "auto" draws plain plotly figures into Output widgets: plotly's mime renderer loads plotly.js once
        # per page, where each FigureWidget ships its own ~5 MB bundle (6.4-8.1 s to show, issue 16).
        # mode="widget" keeps FigureWidgets (updated in place; clicking the overview jumps to a request).
        self.light = mode == "auto" and self.mode == "widget"
        self.scale = scale
        self.max_segments = max_segments
        self.max_height_px = max_height_px
        self.stranded_only = stranded_only
        self.rank = run.ranks[0] if rank is None else rank
        if self.rank not in run.ranks:
            raise WidgetError(f"run {run.name!r} has no rank {self.rank} (ranks: {list(run.ranks)})")
        self._samples = {(s.request_index, s.rank): s for s in run.samples}
        self.requests = sorted({s.request_index for s in run.samples})
        failed = [s.request_index for s in run.samples if s.status != "ok"]
        self.first_failure = min(failed) if failed else None
        if request is not None and not self.requests[0] <= request <= self.requests[-1]:
            raise WidgetError(f"run {run.name!r} has requests {self.requests[0]} to {self.requests[-1]}: "
                              f"request {request} is out of range")
        start = request if request is not None else (
            self.first_failure if self.first_failure is not None else self.requests[-1])
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
        fidelity = self.run.engine_args.get("fidelity")  # a replay says whether it follows its recording
        if fidelity:
            note.append(str(fidelity))
        if snap is None:
            note.append("no allocator snapshot recorded for this request" + (
                "" if self.run.simulated else
                " (a real engine's state is in the snapshot files of llm.dump_snapshot(folder), taken "
                "between llm.start_recording() and llm.stop_recording(); pass them with --snapshots)"))
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
            fig = plot_allocator_state(snap, scale=self.scale, max_segments=self.max_segments,
                                       stranded_only=self.stranded_only)
            fig.update_layout(height=min(fig.layout.height, self.max_height_px))
            summary = fig.layout.title.text.split("<br>", 1)[1] if "<br>" in fig.layout.title.text else ""
            fig.update_layout(title=self._title(req, rk, snap) + ("<br>" + summary if summary else ""),
                              margin={"t": 110})
            return fig
        traces, layout = allocator_state_traces(None, scale=self.scale, max_height_px=self.max_height_px)
        layout.pop("summary")
        layout["margin"] = {"l": layout.pop("margin_l")}
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

    def _overview_html(self) -> str:
        """The light overview (``mode="auto"``): the rank's memory per request as an inline SVG, drawn
        kernel-side, a line at the request shown. A plotly figure there cost the page a second render
        (and a PNG snapshot of it) at every step; clicking it needs a FigureWidget (``mode="widget"``)."""
        samples = sorted(self.run.samples_of_rank(self.rank), key=lambda s: s.request_index)
        metrics = ("allocated_bytes", "reserved_bytes", "device_used_bytes")
        x = [s.request_index for s in samples]
        values = {m: [int(getattr(s, m)) for s in samples] for m in metrics}
        failed = [s for s in samples if s.status != "ok"]
        sim = " — simulated" if self.run.simulated else ""
        return live_frame_html(self.run.with_samples(samples), {self.rank: (x, values)}, {self.rank: failed},
                               metrics=metrics, ranks=(self.rank,), title=f"rank {self.rank}, request "
                               f"{self.request}{sim}", marker_x=self.request, css_class="memlab-overview",
                               max_width_px=540, panel_px=170.0)

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
        ui["stranded"] = w.Checkbox(value=self.stranded_only, description="only segments with stranded blocks",
                                    indent=False, layout=w.Layout(width="260px"),
                                    tooltip="segments whose free split blocks cannot be returned (inactive split)")

        def stranded_changed(ch: Any) -> None:
            self.stranded_only = bool(ch["new"])
            self._render()

        ui["stranded"].observe(stranded_changed, names="value")
        controls.append(ui["stranded"])
        ui["prev"].on_click(lambda _b: self.step(-1))
        ui["next"].on_click(lambda _b: self.step(+1))
        ui["slider"].observe(lambda ch: self.show(ch["new"]), names="value")
        if self.light:
            ui["state"] = w.Output()
            ui["overview"] = w.HTML(layout=w.Layout(width="540px"))
            self._draw_light()
        else:
            ui["state"] = _figure_widget(self.state_figure())
            ui["overview"] = _figure_widget(self._overview())
            self._wire_overview()
        self._overview_rank = self.rank
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
        def on_click(_t: Any, points: Any, _s: Any) -> None:
            if points.xs:
                self.show(int(points.xs[0]))

        for trace in self._ui["overview"].data:
            trace.on_click(on_click)

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

    def _draw_light(self) -> None:
        """Redraw the allocator state as a plain plotly output and the overview as an inline SVG."""
        out = self._ui["state"]
        out.clear_output(wait=True)
        with out:
            show_figure(self.state_figure())
        self._ui["overview"].value = self._overview_html()

    def _render(self) -> None:
        ui = self._ui
        if self.light:
            self._draw_light()
            ui["stats"].value = self.stats()
            self._overview_rank = self.rank
            return
        snap = self.lookup(self.request, self.rank)
        traces, layout = allocator_state_traces(snap, scale=self.scale, max_segments=self.max_segments,
                                                max_height_px=self.max_height_px,
                                                stranded_only=self.stranded_only)
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
            fw.layout.margin.l = layout["margin_l"]
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



"""Runs and allocator snapshots -> plotly figures. Pure: builds figures, never displays them.

Every function takes plain records (``Run``/``MemorySample`` from ``toolkit.core.records``, snapshot dicts in
the layout of ``torch.cuda.memory._snapshot()``) and returns a ``plotly.graph_objects.Figure`` that can
be checked with ``fig.to_dict()``; ``toolkit.notebook.widgets`` wraps them for live views and ``toolkit.viz.report``
writes them to a self-contained HTML file. Simulated data says "simulated" in every title.

Memory is plotted in GiB (floats computed from the integer byte counts) because plotly's own SI tick
format would print decimal gigabytes; hover texts carry the request's input, tokens and latency.
Large series switch to WebGL traces (``Scattergl``) so a 10,000-request comparison stays interactive.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from toolkit.core.errors import ToolkitError
from toolkit.core.records import MemorySample, Run
from toolkit.core.units import GiB, MiB, format_bytes
from toolkit.core.vocab import WRITE_VAR

__all__ = [
    "BLOCK_STATE_COLORS",
    "MEMORY_METRICS",
    "METRIC_LABELS",
    "PlotError",
    "budget_bytes_of",
    "metric_series",
    "plot_allocator_state",
    "plot_allocator_steps",
    "plot_compare",
    "plot_fragmentation",
    "plot_run",
    "allocator_state_traces",
]


class PlotError(ToolkitError, ValueError):
    """A plot was asked for something the data cannot give (unknown metric, rank, empty input)."""


# Metric name -> legend label. Byte metrics are MemorySample fields; ``fragmentation_bytes`` is derived.
METRIC_LABELS: dict[str, str] = {
    "allocated_bytes": "allocated",
    "allocated_peak_bytes": "allocated peak",
    "reserved_bytes": "reserved",
    "reserved_peak_bytes": "reserved peak",
    "active_bytes": "active",
    "inactive_split_bytes": "inactive split",
    "non_torch_bytes": "non-torch",
    "driver_cached_bytes": "driver cache",
    "device_used_bytes": "device used",
    "fragmentation_bytes": "reserved − allocated",
    "segment_count": "segments",
    "alloc_retries": "alloc retries",
    "num_ooms": "OOMs",
    "visual_tokens": "visual tokens",
    "prompt_tokens": "prompt tokens",
}
MEMORY_METRICS: tuple[str, ...] = (
    "allocated_bytes",
    "allocated_peak_bytes",
    "reserved_bytes",
    "non_torch_bytes",
    "driver_cached_bytes",
    "device_used_bytes",
)
# Shown in the small lower panel: non-torch and the part of it the Ascend driver keeps cached (the rest is the
# fixed consumers: ACL/ATB contexts, HCCL buffers, workspaces; docs/ascend-memory-stack.md).
_NON_TORCH_METRICS = frozenset(("non_torch_bytes", "driver_cached_bytes"))
_METRIC_STYLE: dict[str, dict[str, Any]] = {
    "allocated_bytes": {"color": "#1f77b4"},
    "allocated_peak_bytes": {"color": "#1f77b4", "dash": "dot"},
    "reserved_bytes": {"color": "#2ca02c"},
    "non_torch_bytes": {"color": "#9467bd"},
    "driver_cached_bytes": {"color": "#bcbd22", "dash": "dash"},
    "device_used_bytes": {"color": "#7f7f7f"},
    "fragmentation_bytes": {"color": "#d62728"},
    "inactive_split_bytes": {"color": "#ff7f0e"},
    "segment_count": {"color": "#8c564b"},
    "alloc_retries": {"color": "#e377c2"},
}
# One colour per conf in comparisons (plotly's qualitative "Plotly" palette, then "Dark24").
CONF_COLORS: tuple[str, ...] = (
    "#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692", "#B6E880",
    "#FF97FF", "#FECB52", "#2E91E5", "#E15F99", "#1CA71C", "#FB0D0D", "#DA16E3", "#222A2A",
)
# Block states use torch's vocabulary (docs/allocator.md §5.2); "workspace" is torch_npu's workspace allocator.
BLOCK_STATE_COLORS: dict[str, str] = {
    "active_allocated": "#1f77b4",
    "active_pending_free": "#ff7f0e",
    "inactive": "#d9d9d9",
    "workspace": "#9467bd",
}
_BLOCK_STATE_LABELS = {
    "active_allocated": "allocated",
    "active_pending_free": "pending free",
    "inactive": "free (cached)",
    "workspace": "NPU workspace",
}
# Metrics that can approach the device's capacity (a capacity line next to non-torch only squashes it).
_CAPACITY_METRICS = frozenset(("allocated_bytes", "allocated_peak_bytes", "reserved_bytes", "reserved_peak_bytes",
                               "active_bytes", "device_used_bytes"))
WEBGL_POINTS = 20_000  # above this many points in a figure, use Scattergl (SVG gets sluggish)
TEMPLATE = "plotly_white"
CAPACITY_COLOR = "#d62728"
BUDGET_COLOR = "#ff7f0e"
OOM_COLOR = "#d62728"
_SAMPLE_FIELDS = frozenset(f.name for f in fields(MemorySample))


# -- data extraction -----------------------------------------------------------------------------------


def _check_metric(metric: str) -> None:
    if metric != "fragmentation_bytes" and metric not in _SAMPLE_FIELDS:
        known = ", ".join(sorted(METRIC_LABELS))
        raise PlotError(f"unknown metric {metric!r}: use a MemorySample field, e.g. one of {known}")


def _column(samples: Sequence[MemorySample], name: str) -> np.ndarray:
    if name == "fragmentation_bytes":
        return _column(samples, "reserved_bytes") - _column(samples, "allocated_bytes")
    get = attrgetter(name)
    return np.fromiter((get(s) for s in samples), dtype=np.int64, count=len(samples))


def metric_series(run: Run, metric: str, rank: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(request_index, value)`` of one metric, sorted by request, as int64 arrays.

    ``rank=None`` takes, for each request, the largest value over the ranks (the rank that runs out
    of memory first decides), which is the sample itself for a single-rank run.
    """
    _check_metric(metric)
    samples = run.samples if rank is None else run.samples_of_rank(rank)
    if rank is not None and not samples:
        raise PlotError(f"run {run.name!r} has no samples of rank {rank} (ranks: {list(run.ranks)})")
    req = _column(samples, "request_index")
    val = _column(samples, metric)
    if len(req) == 0:
        return req, val
    if rank is None and len(run.ranks) > 1:
        order = np.argsort(req, kind="stable")
        req, val = req[order], val[order]
        uniq, starts = np.unique(req, return_index=True)
        return uniq, np.maximum.reduceat(val, starts)
    if np.any(req[1:] < req[:-1]):
        order = np.argsort(req, kind="stable")
        req, val = req[order], val[order]
    return req, val


def _gib(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float64) / GiB


def capacity_bytes_of(run: Run) -> int:
    """The device's total memory: the run header's, else the largest ``device_total_bytes`` sampled."""
    if run.device_capacity_bytes > 0:
        return run.device_capacity_bytes
    return max((s.device_total_bytes for s in run.samples), default=0)


def budget_bytes_of(run: Run) -> int | None:
    """The engine's memory budget: ``ceil(total * gpu_memory_utilization)``, as vLLM requests it.

    vLLM's ``requested_memory`` (docs/allocator.md §6, ``vllm/v1/worker/gpu_worker.py``); None when the
    run's engine args do not say ``gpu_memory_utilization``.
    """
    util = run.engine_args.get("gpu_memory_utilization") if run.engine_args else None
    capacity = capacity_bytes_of(run)
    if util is None or capacity <= 0:
        return None
    return math.ceil(capacity * float(util))


_CONF_VARIABLE = WRITE_VAR


def _conf_label(run: Run) -> str:
    """The conf as the allocator got it: ``conf`` (and ``→ effective`` where a policy rewrote it)."""
    conf = run.conf or ""
    effective = run.effective_conf or ""
    if not conf and not effective:
        return "defaults (conf unset)"
    if effective != conf:
        return f"{conf or '(unset)'} → {effective or '(defaults)'}"
    return conf


def _run_title(what: str, run: Run) -> str:
    sim = " — simulated" if run.simulated else ""
    status = f" [{run.status}]" if run.status not in ("ok", "running") else ""
    var = _CONF_VARIABLE.get(run.platform, "conf")
    tp = len(run.ranks)
    sub = [f"{var}: {_conf_label(run)}", run.model.rsplit("/", 1)[-1],
           run.backend + (f", TP {tp}" if tp > 1 else "")]
    # "simulated" before the name: a long name is what a narrow figure clips, and the label must stay
    name = run.name if len(run.name) <= 48 else run.name[:47] + "…"
    return f"{what}{sim}: {html.escape(name)}{status}<br><sup>{html.escape(' · '.join(sub))}</sup>"


def _use_webgl(points: int, webgl: bool | None) -> bool:
    return points > WEBGL_POINTS if webgl is None else webgl


def _request_texts(samples: Sequence[MemorySample]) -> list[str]:
    """One hover line per sample: input, image size, tokens and latency."""
    out = []
    for s in samples:
        parts = []
        if s.input_name:
            parts.append(html.escape(s.input_name))
        if s.image_width_px and s.image_height_px:
            size = f"{s.image_width_px}×{s.image_height_px} px"
            if s.resized_width_px and s.resized_height_px:
                size += f" → {s.resized_width_px}×{s.resized_height_px}"
            parts.append(size)
        parts.append(f"{s.visual_tokens} visual / {s.prompt_tokens} prompt / {s.output_tokens} output tokens")
        parts.append(f"{s.duration_ns / 1e6:.1f} ms")
        out.append(" · ".join(parts))
    return out


# -- per-request memory of one run ----------------------------------------------------------------------


def plot_run(
    run: Run,
    *,
    metrics: Sequence[str] = MEMORY_METRICS,
    budget_bytes: int | None = None,
    webgl: bool | None = None,
    height_px: int | None = None,
    ranks: Sequence[int] | None = None,
) -> go.Figure:
    """Memory of a run, request by request: one panel per rank (tensor parallel), one line per metric.

    Non-torch memory (vLLM's residual: device used − reserved, docs/allocator.md §6) gets its own small
    panel under each rank: it is ~1 GiB next to tens of GiB reserved, and its growth is what vllm-ascend
    PR #5855 was about. Reference lines: the device capacity and the engine's budget (``budget_bytes`` or
    ``budget_bytes_of(run)``). Failed requests are red ✕ markers at their reserved memory, with the
    error on hover; the first OOM gets a vertical line. Hovering shows the input image, tokens, latency.

    Trace order is stable (per rank: ``metrics`` in order, then the failure markers), so a
    ``FigureWidget`` can update traces in place as samples arrive (``toolkit.notebook.widgets.LiveFigure``);
    ``ranks`` fixes the panels before any sample of a rank has arrived.
    """
    for m in metrics:
        _check_metric(m)
    ranks = tuple(ranks) if ranks is not None else (run.ranks or (0,))
    split = bool(_NON_TORCH_METRICS & set(metrics)) and not set(metrics) <= _NON_TORCH_METRICS
    per_rank = 2 if split else 1
    titles = []
    for r in ranks:
        head = f"rank {r}" if len(ranks) > 1 else ""
        titles.append(head)
        if split:
            titles.append(f"non-torch = fixed consumers + driver cache{' (rank ' + str(r) + ')' if len(ranks) > 1 else ''}")
    fig = make_subplots(
        rows=len(ranks) * per_rank, cols=1, shared_xaxes=True, vertical_spacing=0.07 if split else 0.06,
        row_heights=[0.72, 0.28] * len(ranks) if split else None, subplot_titles=titles,
    )
    scatter = go.Scattergl if _use_webgl(len(run.samples) * len(metrics), webgl) else go.Scatter
    for i, rank in enumerate(ranks):
        row = 1 + i * per_rank
        samples = sorted(run.samples_of_rank(rank), key=attrgetter("request_index"))
        for trace in run_rank_traces(samples, metrics, rank=rank, first=i == 0, scatter=scatter):
            lower = split and trace.meta["metric"] in _NON_TORCH_METRICS
            fig.add_trace(trace, row=row + 1 if lower else row, col=1)
        fig.update_yaxes(title_text="GiB", row=row, col=1)
        if split:
            fig.update_yaxes(title_text="GiB", row=row + 1, col=1, rangemode="tozero")
        _add_reference_lines(fig, run, budget_bytes, row=row, label=i == 0)
    rows = len(ranks) * per_rank
    first_oom = next((s for s in sorted(run.samples, key=attrgetter("request_index")) if s.status == "oom"), None)
    if first_oom is not None:
        for row in range(1, rows + 1):
            fig.add_vline(x=first_oom.request_index, row=row, col=1,
                          line={"color": OOM_COLOR, "dash": "dot", "width": 1})
        fig.add_annotation(x=first_oom.request_index, y=1, xref="x", yref="paper", yanchor="bottom",
                           text=f"OOM at request {first_oom.request_index}", showarrow=False,
                           font={"color": OOM_COLOR})
    fig.update_xaxes(title_text="request", row=rows, col=1)
    fig.update_layout(
        title=_run_title("Memory per request", run),
        template=TEMPLATE,
        hovermode="x unified",
        height=height_px or (430 + 330 * (len(ranks) - 1)),
        legend={"orientation": "h", "yanchor": "top", "y": -0.12 if len(ranks) == 1 else -0.06},
        margin={"t": 90},
        meta={"kind": "run", "run": run.name, "simulated": run.simulated, "ranks": list(ranks)},
    )
    return fig


def run_rank_traces(
    samples: Sequence[MemorySample],
    metrics: Sequence[str] = MEMORY_METRICS,
    *,
    rank: int = 0,
    first: bool = True,
    scatter: Callable[..., Any] = go.Scatter,
) -> list[Any]:
    """The traces of one rank (``metrics`` in order, then the failure markers), in ``plot_run``'s order.

    Each trace's ``meta`` says its ``metric`` and ``rank`` (``"failed"`` for the markers).
    """
    x = _column(samples, "request_index").astype(np.int32)
    texts = _request_texts(samples)
    traces: list[Any] = []
    for i, m in enumerate(metrics):
        style = _METRIC_STYLE.get(m, {})
        line = {"color": style.get("color"), "dash": style.get("dash", "solid"), "width": 1.6}
        kwargs: dict[str, Any] = {}
        label = METRIC_LABELS.get(m, m)
        if i == 0:  # the request's description once per hover box (hovermode "x unified")
            kwargs["customdata"] = texts
            template = "<i>%{customdata}</i><br>" + label + ": %{y:.3f} GiB<extra></extra>"
        else:
            template = label + ": %{y:.3f} GiB<extra></extra>"
        traces.append(scatter(
            x=x, y=_gib(_column(samples, m)), mode="lines", name=label, line=line,
            legendgroup=m, showlegend=first, hovertemplate=template, meta={"metric": m, "rank": rank}, **kwargs,
        ))
    failed = [s for s in samples if s.status != "ok"]
    traces.append(scatter(
        x=[s.request_index for s in failed], y=[s.reserved_bytes / GiB for s in failed], mode="markers",
        name="OOM / error", legendgroup="failed", showlegend=first,
        marker={"symbol": "x", "size": 13, "color": OOM_COLOR, "line": {"width": 1, "color": OOM_COLOR}},
        customdata=[html.escape(f"{s.status}: {s.message or ''}")[:300] for s in failed],
        hovertemplate="<b>%{customdata}</b><extra></extra>", meta={"metric": "failed", "rank": rank},
    ))
    return traces


def _add_reference_lines(fig: go.Figure, run: Run, budget_bytes: int | None, *, row: int, label: bool) -> None:
    capacity = capacity_bytes_of(run)
    budget = budget_bytes if budget_bytes is not None else budget_bytes_of(run)
    if capacity > 0:
        kwargs = dict(annotation_text=f"device capacity {format_bytes(capacity)}", annotation_position="top right",
                      annotation_font_color=CAPACITY_COLOR) if label else {}
        fig.add_hline(y=capacity / GiB, row=row, col=1, line={"color": CAPACITY_COLOR, "dash": "dash", "width": 1},
                      **kwargs)
    if budget:
        kwargs = dict(annotation_text=f"engine budget {format_bytes(budget)}", annotation_position="top left",
                      annotation_font_color=BUDGET_COLOR) if label else {}
        fig.add_hline(y=budget / GiB, row=row, col=1, line={"color": BUDGET_COLOR, "dash": "dashdot", "width": 1},
                      **kwargs)


# -- comparison of runs ---------------------------------------------------------------------------------


def plot_compare(
    runs: Sequence[Run],
    metric: str = "reserved_bytes",
    *,
    rank: int | None = None,
    webgl: bool | None = None,
    show_capacity: bool = True,
) -> go.Figure:
    """Several runs on one metric: one colour per conf, the conf string in the legend.

    ``rank=None`` plots, per request, the largest value over ranks. Failed requests are ✕ markers
    in the run's colour. Titles say "simulated" when every run is simulated; in a mix, simulated
    runs are tagged "(sim)" in the legend.
    """
    if not runs:
        raise PlotError("plot_compare needs at least one run")
    _check_metric(metric)
    is_bytes = metric.endswith("_bytes")
    total_points = sum(len(r.samples) for r in runs)
    scatter = go.Scattergl if _use_webgl(total_points, webgl) else go.Scatter
    all_sim = all(r.simulated for r in runs)
    labels = _legend_labels(runs, tag_sim=not all_sim and any(r.simulated for r in runs))
    fig = go.Figure()
    unit = " GiB" if is_bytes else ""
    fmt = ":.3f" if is_bytes else ""
    for i, (run, label) in enumerate(zip(runs, labels)):
        color = CONF_COLORS[i % len(CONF_COLORS)]
        x, v = metric_series(run, metric, rank)
        y = _gib(v) if is_bytes else v
        fig.add_trace(scatter(
            x=x, y=y, mode="lines", name=label, line={"color": color, "width": 1.6}, legendgroup=str(i),
            hovertemplate=f"{html.escape(label)}: %{{y{fmt}}}{unit}<extra></extra>",
            meta={"run": run.name, "conf": run.conf, "effective_conf": run.effective_conf},
        ))
        failed_req = sorted({s.request_index for s in run.samples if s.status != "ok"})
        if failed_req:
            fx, fv = metric_series(run, metric, rank)
            idx = np.searchsorted(fx, failed_req)
            fy = (_gib(fv) if is_bytes else fv)[idx]
            fig.add_trace(scatter(
                x=failed_req, y=fy, mode="markers", name=f"{label}: OOM", legendgroup=str(i), showlegend=False,
                marker={"symbol": "x", "size": 13, "color": color},
                hovertemplate=f"{html.escape(label)}: OOM at request %{{x}}<extra></extra>",
            ))
    if show_capacity and metric in _CAPACITY_METRICS:
        capacities = {capacity_bytes_of(r) for r in runs} - {0}
        if len(capacities) == 1:
            cap = capacities.pop()
            fig.add_hline(y=cap / GiB, line={"color": CAPACITY_COLOR, "dash": "dash", "width": 1},
                          annotation_text=f"device capacity {format_bytes(cap)}",
                          annotation_position="bottom right", annotation_font_color=CAPACITY_COLOR)
    what = METRIC_LABELS.get(metric, metric)
    ranks = {r for run in runs for r in run.ranks}
    rank_note = "" if len(ranks) <= 1 else (" (max over ranks)" if rank is None else f" (rank {rank})")
    sim = " — simulated" if all_sim else ""
    fig.update_layout(
        title=f"{what} per request{rank_note}: {len(runs)} runs{sim}",
        xaxis_title="request", yaxis_title=f"{what}{unit}", hovermode="x unified",
        legend={"title": {"text": "conf"}}, height=460, template=TEMPLATE,
        meta={"kind": "compare", "metric": metric, "runs": [r.name for r in runs], "simulated": all_sim},
    )
    if metric in ("fragmentation_bytes", "inactive_split_bytes", "non_torch_bytes", "driver_cached_bytes",
                  "alloc_retries", "num_ooms"):
        fig.update_yaxes(rangemode="tozero")
    return fig


def _legend_labels(runs: Sequence[Run], *, tag_sim: bool) -> list[str]:
    """The conf string of each run; the run's name instead where it contains the conf and says more
    (e.g. "garbage_collection_threshold:0.8 (fraction 1)"), and the name added where confs repeat."""
    labels = []
    for run in runs:
        conf = _conf_label(run)
        labels.append(run.name if run.conf and run.conf in run.name and run.conf != run.name else conf)
    out = []
    for run, label in zip(runs, labels):
        if labels.count(label) > 1:
            label = f"{label} ({run.name})"
        out.append(label + (" (sim)" if tag_sim and run.simulated else ""))
    return out


# -- fragmentation --------------------------------------------------------------------------------------


def plot_fragmentation(run: Run, *, rank: int | None = None, webgl: bool | None = None) -> go.Figure:
    """Where the cached memory goes, per request: reserved − allocated and inactive split (GiB, top),
    the number of segments (middle) and the cumulative allocation retries (bottom).

    ``reserved − allocated`` is everything the allocator holds but no tensor uses; ``inactive split``
    is the part of it inside segments that still hold live blocks, which ``empty_cache`` cannot give
    back (docs/allocator.md §4.1). Retries count mallocs that had to free the cache and try again.
    """
    ranks = run.ranks if rank is None else (rank,)
    if rank is not None and rank not in run.ranks:
        raise PlotError(f"run {run.name!r} has no rank {rank} (ranks: {list(run.ranks)})")
    ranks = ranks or (0,)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.5, 0.25, 0.25],
                        subplot_titles=("cached but not allocated", "segments", "allocation retries (cumulative)"))
    scatter = go.Scattergl if _use_webgl(len(run.samples) * 4, webgl) else go.Scatter
    for r in ranks:
        suffix = f" (rank {r})" if len(ranks) > 1 else ""
        dash = "solid" if r == ranks[0] else ["dash", "dot", "dashdot", "longdash"][(r - 1) % 4]
        for m, row in (("fragmentation_bytes", 1), ("inactive_split_bytes", 1), ("segment_count", 2),
                       ("alloc_retries", 3)):
            x, v = metric_series(run, m, r) if run.samples else (np.array([]), np.array([]))
            is_bytes = m.endswith("_bytes")
            y = _gib(v) if is_bytes else v
            label = METRIC_LABELS[m] + suffix
            fig.add_trace(scatter(
                x=x, y=y, mode="lines", name=label, line={"color": _METRIC_STYLE[m]["color"], "dash": dash},
                hovertemplate=f"{label}: %{{y{':.3f' if is_bytes else ''}}}{' GiB' if is_bytes else ''}<extra></extra>",
                meta={"metric": m, "rank": r},
            ), row=row, col=1)
    fig.update_yaxes(title_text="GiB", row=1, col=1, rangemode="tozero")
    fig.update_yaxes(title_text="count", row=2, col=1)
    fig.update_yaxes(title_text="count", row=3, col=1, rangemode="tozero")
    fig.update_xaxes(title_text="request", row=3, col=1)
    fig.update_layout(title=_run_title("Fragmentation", run), hovermode="x unified", height=540, template=TEMPLATE,
                      meta={"kind": "fragmentation", "run": run.name, "simulated": run.simulated})
    return fig


# -- allocator state from a snapshot --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _StateRows:
    labels: list[str]  # one per segment row, top to bottom
    traces: dict[str, dict[str, list[Any]]]  # state -> columns (y, base, x, customdata)
    reserved_bytes: int
    allocated_bytes: int
    segments: int
    workspace_bytes: int


def _segments_of(
    snapshot: Mapping[str, Any], device: int | None
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    from toolkit.snapshot import is_normalized, normalize_snapshot  # pure; deferred to keep import light

    try:
        snap = snapshot if is_normalized(snapshot) else normalize_snapshot(snapshot)
    except ToolkitError as err:
        raise PlotError(f"not an allocator snapshot: {err}") from None
    segs = list(snap["segments"])
    ws = list(snap.get("workspace_segments", []))
    if device is not None:
        segs = [s for s in segs if s["device"] == device]
        ws = [s for s in ws if s["device"] == device]
    return segs, ws


def holds_stranded(segment: Mapping[str, Any]) -> bool:
    """A segment with free (inactive) split blocks next to live ones: memory the allocator holds and
    ``empty_cache`` cannot return (``inactive_split``; expandable segments unmap instead, so never)."""
    if segment.get("is_expandable"):
        return False
    states = {b["state"] for b in segment["blocks"]}
    return "inactive" in states and len(states) > 1


def _state_rows(snapshot: Mapping[str, Any], device: int | None, scale: str, max_segments: int | None,
                stranded_only: bool = False) -> _StateRows:
    segs, ws = _segments_of(snapshot, device)
    if stranded_only:
        segs, ws = [s for s in segs if holds_stranded(s)], []
    reserved = sum(s["total_size"] for s in segs)
    allocated = sum(s["allocated_size"] for s in segs)
    rows = [(s, False) for s in segs] + [(s, True) for s in ws]
    if max_segments is not None and len(rows) > max_segments:
        # keep the largest segments; the title says how many were left out
        rows = sorted(rows, key=lambda p: -p[0]["total_size"])[:max_segments]
        rows.sort(key=lambda p: (p[1], p[0]["address"]))
    traces: dict[str, dict[str, list[Any]]] = {
        k: {"y": [], "base": [], "x": [], "customdata": []} for k in BLOCK_STATE_COLORS
    }
    labels = []
    for i, (seg, is_ws) in enumerate(rows):
        total = seg["total_size"]
        kind = "workspace" if is_ws else seg["segment_type"] + (", expandable" if seg["is_expandable"] else "")
        label = f"{i}: {seg['address']:#x} ({kind}, {format_bytes(total)})"
        labels.append(label)
        unit = total if scale == "fraction" else MiB
        seg_info = f"segment {seg['address']:#x}: {format_bytes(total)} {kind}, stream {seg['stream']}"
        for b in seg["blocks"]:
            state = "workspace" if is_ws else b["state"]
            col = traces[state]
            col["y"].append(label)
            col["base"].append((b["address"] - seg["address"]) / unit)
            col["x"].append(b["size"] / unit)
            what = b.get("frames") or ()
            col["customdata"].append(
                (f"<b>{html.escape(what[0]['name'])}</b><br>" if what else "")
                + f"{_BLOCK_STATE_LABELS[state]} block {b['address']:#x}<br>size {format_bytes(b['size'])}"
                f" ({b['size']:,} B), requested {format_bytes(b['requested_size'])}<br>{seg_info}"
            )
    return _StateRows(labels, traces, reserved, allocated, len(segs), sum(s["total_size"] for s in ws))


def allocator_state_traces(
    snapshot: Mapping[str, Any] | None, *, device: int | None = None, scale: str = "bytes",
    max_segments: int | None = 400, max_height_px: int = 1600, stranded_only: bool = False,
) -> tuple[list[go.Bar], dict[str, Any]]:
    """The four block-state bar traces (fixed order: ``BLOCK_STATE_COLORS``) and the layout keys that
    change with the snapshot (row order, height, summary text). ``None`` gives empty traces.

    Shared by ``plot_allocator_state`` and the inspector, which updates a ``FigureWidget`` in place.
    """
    if scale not in ("bytes", "fraction"):
        raise PlotError(f"scale must be 'bytes' or 'fraction', got {scale!r}")
    if snapshot is None:
        rows = _StateRows([], {k: {"y": [], "base": [], "x": [], "customdata": []} for k in BLOCK_STATE_COLORS},
                          0, 0, 0, 0)
    else:
        rows = _state_rows(snapshot, device, scale, max_segments, stranded_only)
    traces = []
    for state, color in BLOCK_STATE_COLORS.items():
        col = rows.traces[state]
        traces.append(go.Bar(
            orientation="h", y=col["y"], x=col["x"], base=col["base"], customdata=col["customdata"],
            name=_BLOCK_STATE_LABELS[state], marker={"color": color, "line": {"color": "white", "width": 0.5}},
            hovertemplate="%{customdata}<extra></extra>", meta={"state": state},
            showlegend=state != "workspace" or bool(col["y"]),
        ))
    n = len(rows.labels)
    shown = "" if snapshot is None else (
        ("only segments holding stranded (inactive split) blocks: " if stranded_only else "")
        + f"{rows.segments} segments, reserved {format_bytes(rows.reserved_bytes)}, "
        f"allocated {format_bytes(rows.allocated_bytes)}"
        + (f", workspace {format_bytes(rows.workspace_bytes)}" if rows.workspace_bytes else "")
        + (f"; {n} largest shown" if n < rows.segments + (1 if rows.workspace_bytes else 0) and max_segments else "")
    )
    # A left margin sized from the labels, not automargin: with a few hundred segment rows, automargin made
    # plotly measure every tick label and draw the figure twice (3-4x the render time, tests/browser).
    layout = {
        "yaxis": {"categoryorder": "array", "categoryarray": rows.labels, "autorange": "reversed",
                  "title": {"text": "segment", "standoff": 4}, "automargin": False, "tickfont": {"size": 10}},
        "margin_l": segment_label_margin(rows.labels),
        "xaxis": {"title": {"text": "offset in segment (MiB)" if scale == "bytes" else "fraction of segment"},
                  "rangemode": "tozero"},
        "height": int(min(max_height_px, max(320, 150 + 18 * n))),
        "summary": shown,
    }
    return traces, layout


def segment_label_margin(labels: Sequence[str]) -> int:
    """A left margin (px) that fits the allocator view's segment labels (10 px font) and the axis title."""
    return int(48 + 6.2 * max((len(str(label)) for label in labels), default=8))


def plot_allocator_state(
    snapshot: Mapping[str, Any],
    *,
    device: int | None = None,
    title: str | None = None,
    scale: str = "bytes",
    max_segments: int | None = 400,
    stranded_only: bool = False,
) -> go.Figure:
    """The allocator at one moment: one row per segment, its blocks coloured by state, sizes on hover.

    ``stranded_only``: only the segments holding stranded blocks (``holds_stranded``). A block's frames
    (what allocated it; the simulator names each block) head its hover text.

    ``snapshot`` is any layout ``toolkit.snapshot.normalize_snapshot`` accepts (CUDA, torch_npu, the
    simulator's). ``scale="fraction"`` stretches every segment to the full width so small segments stay
    readable next to expandable ones of several GiB. At most ``max_segments`` rows (the largest) are
    drawn; the title says so. NPU workspace-allocator segments are drawn in their own colour.
    """
    traces, layout = allocator_state_traces(snapshot, device=device, scale=scale, max_segments=max_segments,
                                            stranded_only=stranded_only)
    sim = bool(snapshot.get("simulated")) if isinstance(snapshot, Mapping) else False
    head = title or "Allocator state"
    if sim and "simulated" not in head.lower():
        head += " — simulated"
    fig = go.Figure(data=traces)
    fig.update_layout(
        title=f"{head}<br><sup>{layout.pop('summary')}</sup>", barmode="overlay", bargap=0.25,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 1.0, "xanchor": "right"},
        hovermode="closest", margin={"t": 90, "l": layout.pop("margin_l")}, template=TEMPLATE,
        meta={"kind": "allocator_state", "simulated": sim}, **layout,
    )
    return fig


def plot_allocator_steps(
    run: Run,
    snapshot_at: Callable[[int, int], Mapping[str, Any] | None],
    *,
    rank: int = 0,
    requests: Sequence[int] | None = None,
    max_steps: int = 200,
    scale: str = "bytes",
    max_segments: int | None = 200,
) -> go.Figure:
    """A static inspector: the allocator state with a plotly slider over requests.

    Works without a kernel or widget front end (an exported HTML report, a front end without
    anywidget), because each slider step carries its own data. Requests without a snapshot show an
    empty state and say so. At most ``max_steps`` requests (evenly spread, always including the first
    failed one) keep the file small.
    """
    indices = sorted({s.request_index for s in run.samples_of_rank(rank)}) if requests is None else list(requests)
    if not indices:
        raise PlotError(f"run {run.name!r} has no requests on rank {rank}")
    if len(indices) > max_steps:
        keep = {indices[round(i * (len(indices) - 1) / (max_steps - 1))] for i in range(max_steps)}
        keep |= {s.request_index for s in run.samples_of_rank(rank) if s.status != "ok"}
        indices = sorted(keep)
    by_req = {s.request_index: s for s in run.samples_of_rank(rank)}
    steps = []
    first_traces: list[go.Bar] | None = None
    first_layout: dict[str, Any] = {}
    margin_l = 0
    for k in indices:
        snap = snapshot_at(k, rank)
        traces, layout = allocator_state_traces(snap, scale=scale, max_segments=max_segments)
        margin_l = max(margin_l, layout.pop("margin_l"))
        sample = by_req.get(k)
        note = layout.pop("summary") or "no allocator snapshot recorded for this request"
        if sample is not None and sample.status != "ok":
            note += f" — {sample.status.upper()}"
        title = f"{_state_title(run, k, rank)}<br><sup>{html.escape(run.name)}: {html.escape(note)}</sup>"
        if first_traces is None:
            first_traces, first_layout = traces, {**layout, "title": title}
        steps.append({
            "method": "update", "label": str(k),
            "args": [
                {key: [getattr(t, key) for t in traces] for key in ("x", "y", "base", "customdata")},
                {"title.text": title, "yaxis.categoryarray": layout["yaxis"]["categoryarray"],
                 "height": layout["height"] + 80},
            ],
        })
    assert first_traces is not None
    fig = go.Figure(data=first_traces)
    first_layout["height"] += 80
    fig.update_layout(
        barmode="overlay", bargap=0.25, hovermode="closest", margin={"t": 90, "l": margin_l}, template=TEMPLATE,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 1.0, "xanchor": "right"},
        sliders=[{"active": 0, "steps": steps, "currentvalue": {"prefix": "request "}, "pad": {"t": 40}}],
        meta={"kind": "allocator_steps", "run": run.name, "simulated": run.simulated, "requests": indices},
        **first_layout,
    )
    return fig


def _state_title(run: Run, request_index: int, rank: int) -> str:
    """"Allocator state after request K, rank R — simulated" (the run's name goes to the subtitle)."""
    sim = " — simulated" if run.simulated else ""
    return f"Allocator state after request {request_index}, rank {rank}{sim}"

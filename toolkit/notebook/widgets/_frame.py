"""The live figure's light frames: ``plot_run``'s panels drawn kernel-side as one small inline SVG.

A frame needs no JavaScript, so the page shows it as soon as the message arrives; plotly.js (about 5 MB,
evaluated by the page the first time a plotly figure renders: 1.5-2 s on a loaded 2-core machine, issue 16)
is not on the path to the first point. ``LiveFigure`` draws these while a run goes and the interactive
plotly figure when it ends (or, in a long run, once the page has had time to load plotly.js).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import numpy as np

from toolkit.core.records import MemorySample, Run
from toolkit.core.units import GiB
from toolkit.viz.plots import (
    _METRIC_STYLE,
    _NON_TORCH_METRICS,
    CAPACITY_COLOR,
    METRIC_LABELS,
    OOM_COLOR,
    _run_title,
    budget_bytes_of,
    capacity_bytes_of,
)

FRAME_CLASS = "memlab-live-frame"
_W = 900  # viewBox width; the SVG scales to the output's width
_LEFT, _RIGHT = 58, 14
_DASH = {"dot": "2,3", "dash": "6,4", "dashdot": "6,3,2,3"}


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _panel(out: list[str], top: float, height: float, x: np.ndarray, series: Sequence[tuple[str, np.ndarray]],
           x_max: float, lines: Sequence[tuple[float, str]], failed: Sequence[MemorySample], label: str,
           marker_x: int | None = None) -> None:
    """One panel: axes box, y ticks (GiB), the series as polylines, reference lines, failure markers."""
    ys = [y for _m, y in series if y.size]
    values = [float(y.min()) for y in ys] + [float(y.max()) for y in ys] + [v for v, _c in lines]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    pad = (hi - lo) * 0.06 or max(abs(hi) * 0.05, 0.01)  # as plotly's autorange: the data, a little margin
    lo, hi = lo - pad, hi + pad
    plot_w = _W - _LEFT - _RIGHT

    def px(xs: np.ndarray) -> np.ndarray:
        return _LEFT + xs * (plot_w / max(x_max, 1.0))

    def py(vs: np.ndarray) -> np.ndarray:
        return top + height - (vs - lo) * (height / (hi - lo))

    out.append(f'<rect x="{_LEFT}" y="{top:.1f}" width="{plot_w}" height="{height:.1f}" fill="#fafafa" '
               'stroke="#ddd"/>')
    for frac in (0.06, 0.5, 0.94):
        v = lo + (hi - lo) * frac
        yy = float(py(np.array([v]))[0])
        out.append(f'<text x="{_LEFT - 4}" y="{yy + 4:.1f}" text-anchor="end">{_fmt(v)}</text>')
    out.append(f'<text x="{_LEFT}" y="{top - 3:.1f}" fill="#555">{html.escape(label)} (GiB)</text>')
    for v, color in lines:
        yy = float(py(np.array([v]))[0])
        out.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="{color}" '
                   'stroke-dasharray="6,4" stroke-width="1"/>')
    if x.size:
        xs = px(x.astype(np.float64))
        for m, y in series:
            style = _METRIC_STYLE.get(m, {})
            dash = _DASH.get(style.get("dash", ""), "")
            pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(xs, py(y)))
            out.append(f'<polyline points="{pts}" fill="none" stroke="{style.get("color", "#333")}" '
                       f'stroke-width="1.6"{f" stroke-dasharray={chr(34)}{dash}{chr(34)}" if dash else ""}/>')
    if marker_x is not None:
        mx = float(px(np.array([float(marker_x)]))[0])
        out.append(f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{top:.1f}" y2="{top + height:.1f}" stroke="black" '
                   'stroke-width="1.5"/>')
    for s in failed:
        cx = float(px(np.array([float(s.request_index)]))[0])
        cy = float(py(np.array([s.reserved_bytes / GiB]))[0])
        out.append(f'<path d="M{cx - 5:.1f},{cy - 5:.1f}L{cx + 5:.1f},{cy + 5:.1f}M{cx - 5:.1f},{cy + 5:.1f}'
                   f'L{cx + 5:.1f},{cy - 5:.1f}" stroke="{OOM_COLOR}" stroke-width="2"/>')


def live_frame_html(run: Run, columns: Mapping[int, tuple[Sequence[int], Mapping[str, Sequence[int]]]],
                    failed: Mapping[int, Sequence[MemorySample]], *, metrics: Sequence[str],
                    ranks: Sequence[int], budget_bytes: int | None = None, note: str = "",
                    title: str | None = None, marker_x: int | None = None, css_class: str = FRAME_CLASS,
                    max_width_px: int = 1000, panel_px: float = 150.0) -> str:
    """The frame as HTML: ``plot_run``'s title (so "simulated" shows), a legend, and per rank the memory
    panel and (as in ``plot_run``) a smaller non-torch panel. ``columns``: per rank, the request indices
    and per metric the byte values (``LiveFigure``'s columns, extended as samples arrive)."""
    split = bool(_NON_TORCH_METRICS & set(metrics)) and not set(metrics) <= _NON_TORCH_METRICS
    upper = [m for m in metrics if not (split and m in _NON_TORCH_METRICS)]
    lower = [m for m in metrics if split and m in _NON_TORCH_METRICS]
    capacity = capacity_bytes_of(run)
    budget = budget_bytes if budget_bytes is not None else budget_bytes_of(run)
    lines = [(capacity / GiB, CAPACITY_COLOR)] if capacity > 0 else []
    if budget:
        lines.append((budget / GiB, "#ff7f0e"))
    x_max = max([max(columns[r][0]) for r in ranks if columns.get(r) and columns[r][0]] + [1])
    n_points = max([len(columns[r][0]) for r in ranks if r in columns] + [0])
    panel_h, lower_h, gap = panel_px, 60.0, 22.0
    body: list[str] = []
    top = 16.0
    for r in ranks:
        x_list, values = columns.get(r, ((), {}))
        x = np.asarray(x_list, dtype=np.int64)
        head = f"rank {r}" if len(ranks) > 1 else "memory"
        _panel(body, top, panel_h, x, [(m, np.asarray(values.get(m, ()), dtype=np.float64) / GiB) for m in upper],
               x_max, lines, failed.get(r, ()), head, marker_x)
        top += panel_h + gap
        if lower:
            _panel(body, top, lower_h, x, [(m, np.asarray(values.get(m, ()), dtype=np.float64) / GiB)
                                            for m in lower], x_max, (), (), "non-torch", marker_x)
            top += lower_h + gap
    body.append(f'<text x="{_LEFT}" y="{top + 2:.1f}">0</text>'
                f'<text x="{_W - _RIGHT}" y="{top + 2:.1f}" text-anchor="end">request {x_max}</text>')
    height = top + 8
    legend = " ".join(
        f'<span style="white-space:nowrap"><span style="display:inline-block;width:18px;height:0;'
        f'border-top:2px {"dotted" if _METRIC_STYLE.get(m, {}).get("dash") == "dot" else "dashed" if _METRIC_STYLE.get(m, {}).get("dash") else "solid"} '
        f'{_METRIC_STYLE.get(m, {}).get("color", "#333")};vertical-align:middle"></span> '
        f'{html.escape(METRIC_LABELS.get(m, m))}</span>' for m in metrics)
    title = _run_title("Memory per request", run) if title is None else title
    note_html = f'<div style="color:#888;font-size:11px">{html.escape(note)}</div>' if note else ""
    return (f'<div class="{css_class}" data-points="{n_points}" data-title="{html.escape(title)}" '
            f'style="font-family:sans-serif;max-width:{max_width_px}px">'
            f'<div style="font-size:15px">{title}</div>'
            f'<div style="font-size:12px;margin:2px 0">{legend}</div>'
            f'<svg viewBox="0 0 {_W} {height:.0f}" width="100%" style="max-height:{height * 1.1:.0f}px" '
            f'font-size="11" font-family="sans-serif" xmlns="http://www.w3.org/2000/svg">{"".join(body)}</svg>'
            f'{note_html}</div>')

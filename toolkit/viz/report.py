"""Export: a self-contained HTML report (works offline) and the samples as CSV or Parquet.

Ascend clusters are often air-gapped, and viewers that ``import`` their JavaScript from a CDN show a
blank page there (PyTorch's memory_viz, pytorch #172896). The report therefore embeds plotly.js once,
inline, and loads nothing at all: no ``<script src=...>``, no stylesheet, no font from the network.
The embedded plotly.js bundle itself mentions map-tile and topojson URLs as string constants; they are
only fetched for geo/map traces, which the report never contains.
"""

from __future__ import annotations

import datetime as _dt
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.core.errors import ToolkitError
from toolkit.core.records import Run
from toolkit.core.summary import summarize_run
from toolkit.core.units import format_bytes
from toolkit.snapshot.by_request import snapshot_lookup

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import plotly.graph_objects as go

__all__ = [
    "ReportError",
    "export_samples",
    "format_summary",
    "html_report",
    "samples_frame",
    "summary_frame",
    "write_html_report",
]

_RUN_COLUMNS = ("run", "conf", "effective_conf", "backend", "platform", "model", "simulated")
SUMMARY_COLUMNS = (
    "run", "conf", "effective_conf", "simulated", "status", "requests", "requests_served", "oom_at_request",
    "peak_reserved_bytes", "peak_allocated_bytes", "peak_non_torch_bytes", "peak_driver_cached_bytes",
    "peak_device_used_bytes", "peak_fragmentation_bytes", "peak_inactive_split_bytes", "max_segments", "alloc_retries",
)
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}


class ReportError(ToolkitError, ValueError):
    """An export was asked for something it cannot write (no runs, unknown file type, existing file)."""


# -- tables --------------------------------------------------------------------------------------------


def summary_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run: requests served, peaks and the first OOM (bytes are ints; max over ranks).

    Columns: ``run``, ``conf``, ``effective_conf``, ``simulated``, ``status``, ``requests``,
    ``requests_served``, ``oom_at_request`` (first request whose sample says ``oom``; None if none),
    ``peak_reserved_bytes`` (the per-request reserved peak), ``peak_allocated_bytes``,
    ``peak_non_torch_bytes``, ``peak_device_used_bytes``, ``peak_fragmentation_bytes`` (max of
    reserved − allocated: cached but not allocated), ``peak_inactive_split_bytes`` (the part of it
    ``empty_cache`` cannot return), ``max_segments``, ``alloc_retries`` (cumulative, at the end).
    """
    import pandas as pd

    rows = []
    for run in runs:
        row = summarize_run(run).as_dict()
        row["run"] = row.pop("name")
        rows.append(row)
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    frame["oom_at_request"] = frame["oom_at_request"].astype("Int64")
    frame.attrs["simulated"] = bool(runs) and all(r.simulated for r in runs)
    return frame


def format_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """The summary for people: byte columns as "1.50 GiB", OOM as "-" when none, short headers."""
    import pandas as pd

    out = frame.copy()
    for col in [c for c in out.columns if c.endswith("_bytes")]:
        out[col] = [format_bytes(int(v)) for v in out[col]]
    if "oom_at_request" in out:
        out["oom_at_request"] = ["-" if pd.isna(v) else str(int(v)) for v in out["oom_at_request"]]
    out.columns = [c.removesuffix("_bytes").replace("_", " ") for c in out.columns]
    return out


def samples_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """Every sample of every run, one row per (run, request, rank): the run's identity columns, then
    every ``MemorySample`` field (bytes stay ints)."""
    import pandas as pd

    if not runs:
        raise ReportError("no runs to export")
    frames = []
    for run in runs:
        f = run.to_frame()
        for i, (col, value) in enumerate(zip(_RUN_COLUMNS, (run.name, run.conf or "", run.effective_conf,
                                                          run.backend, run.platform, run.model, run.simulated))):
            f.insert(i, col, value)
        frames.append(f)
    out = pd.concat(frames, ignore_index=True)
    out.attrs = {"simulated": all(r.simulated for r in runs)}
    return out


def export_samples(runs: Run | Sequence[Run], path: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
    """Write the samples of one or more runs to ``path``: ``.csv`` (``.csv.gz``) or ``.parquet``.

    Parquet needs pyarrow (the project's ``notebook`` extra). Returns the path written.
    """
    runs = [runs] if isinstance(runs, Run) else list(runs)
    p = Path(path)
    name = p.name.lower()
    if not (name.endswith((".csv", ".csv.gz", ".parquet"))):
        raise ReportError(f"{p}: choose a .csv, .csv.gz or .parquet file name")
    if p.exists() and not overwrite:
        raise ReportError(f"{p} exists: choose another name or pass overwrite=True")
    frame = samples_frame(runs)
    p.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".parquet"):
        try:
            import pyarrow  # noqa: F401  (pandas picks it; import here for a clear message)
        except ImportError:
            raise ReportError("writing Parquet needs pyarrow: pip install 'ascend-memlab[notebook]'") from None
        frame.to_parquet(p, index=False)
    else:
        frame.to_csv(p, index=False)
    return p


# -- HTML ----------------------------------------------------------------------------------------------


def _figure_div(fig: go.Figure) -> str:
    import plotly.io as pio

    return pio.to_html(fig, full_html=False, include_plotlyjs=False, config=PLOTLY_CONFIG,
                       default_width="100%")


def html_report(
    runs: Sequence[Run],
    *,
    title: str | None = None,
    metrics: Sequence[str] = ("reserved_bytes", "non_torch_bytes", "fragmentation_bytes"),
    snapshots: Mapping[str, Any] | None = None,
    per_run: bool = True,
) -> str:
    """The report as one HTML string: summary table, comparison plots, each run's memory and
    fragmentation, and (for runs named in ``snapshots``) a static allocator inspector with a slider.

    ``snapshots`` maps a run name to its snapshot source (``snapshot_at(request, rank)``).
    """
    from plotly.offline import get_plotlyjs

    from toolkit.core.version import __version__
    from toolkit.viz.plots import (
        plot_allocator_steps,
        plot_compare,
        plot_fragmentation,
        plot_run,
    )

    runs = list(runs)
    if not runs:
        raise ReportError("no runs to report")
    any_sim = any(r.simulated for r in runs)
    head = title or ("Memory report" + (" — simulated" if all(r.simulated for r in runs) else ""))
    parts = [f"<h1>{html.escape(head)}</h1>"]
    if any_sim:
        sim_names = ", ".join(html.escape(r.name) for r in runs if r.simulated)
        parts.append(f"<p class='sim'><b>Simulated:</b> {sim_names} ran on the toolkit's simulated device, "
                     "not on real hardware.</p>")
    table = format_summary(summary_frame(runs)).to_html(index=False, border=0, classes="summary", escape=True)
    parts.append("<h2>Summary</h2><div class='scroll'>" + table + "</div>")
    if len(runs) > 1:
        parts.append("<h2>Comparison</h2>")
        parts += [_figure_div(plot_compare(runs, m)) for m in metrics]
    for run in runs:
        if not per_run:
            break
        parts.append(f"<h2>{html.escape(run.name)}{' (simulated)' if run.simulated else ''}</h2>")
        if run.message:
            parts.append(f"<p>{html.escape(run.status)}: {html.escape(run.message)}</p>")
        if run.samples:
            parts.append(_figure_div(plot_run(run)))
            parts.append(_figure_div(plot_fragmentation(run)))
        source = (snapshots or {}).get(run.name)
        lookup = snapshot_lookup(source) if source is not None else None
        if lookup is not None and run.samples:
            parts.append("<h3>Allocator state, request by request</h3>")
            parts.append(_figure_div(plot_allocator_steps(run, lookup, rank=run.ranks[0])))
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(f"<footer>ascend-memlab {html.escape(__version__)} · {stamp} · plotly.js embedded, "
                 "nothing is loaded from the network</footer>")
    style = ("body{font-family:sans-serif;margin:1.5em;color:#222}table.summary{border-collapse:collapse;"
             "font-size:13px}table.summary td,table.summary th{padding:3px 8px;border-bottom:1px solid #ddd;"
             "text-align:right}p.sim{background:#fff4e5;border-left:4px solid #ff9800;padding:6px 10px}"
             "footer{margin-top:2em;color:#777;font-size:12px}div.scroll{overflow-x:auto}"
             "table.summary td:nth-child(-n+3){text-align:left}")
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(head)}</title><style>{style}</style>"
        # plotly.js inline, once (the figures below are written with include_plotlyjs=False)
        f"<script type='text/javascript'>{get_plotlyjs()}</script>"
        "</head><body>" + "\n".join(parts) + "</body></html>\n"
    )


def write_html_report(
    runs: Run | Sequence[Run],
    path: str | os.PathLike[str],
    *,
    overwrite: bool = True,
    **kwargs: Any,
) -> Path:
    """Write ``html_report(runs, **kwargs)`` to ``path`` (one file, opens offline). Returns the path."""
    runs = [runs] if isinstance(runs, Run) else list(runs)
    p = Path(path)
    if p.suffix.lower() not in (".html", ".htm"):
        raise ReportError(f"{p}: an HTML report needs a .html file name")
    if p.exists() and not overwrite:
        raise ReportError(f"{p} exists: choose another name or pass overwrite=True")
    text = html_report(runs, **kwargs)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p

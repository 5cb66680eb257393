"""Live views for notebooks: a figure that grows while a run goes, an allocator inspector, a conf sweep.

Kernel side: plotly's ``FigureWidget`` (anywidget-based since plotly 6, plotly PR #4823) and ipywidgets,
both imported only when a view is built. Where the widget front end is missing (VS Code without
anywidget, plotly #5027; ``nbconvert``; a plain script) every view has a static fallback:
``mode="static"`` shows ordinary plotly figures, redrawn through a display handle, and the inspector
becomes a plotly figure with a built-in slider (``toolkit.viz.plots.plot_allocator_steps``), which needs no
kernel at all. ``mode="auto"`` picks the widget when anywidget and ipywidgets import and a kernel runs.

In a fresh page the first plotly figure costs the page 1.5-2 s (JupyterLab's plotly renderer evaluates its
plotly.js then), so ``LiveFigure`` draws light frames while a run goes (an inline SVG built kernel-side,
``_frame``) and the plotly figure when it ends, and has the page load plotly.js mid-run; ``%load_ext
toolkit`` does that too (``toolkit.notebook._preload``). The light inspector's overview is such a frame.

The figures come from ``toolkit.viz`` (pure); these modules only feed and update them. Snapshots for the
inspector go through ``toolkit.snapshot.by_request.snapshot_lookup``, the one lookup the report uses too.
"""

from __future__ import annotations

from toolkit.notebook.widgets._display import WidgetError, widgets_available
from toolkit.notebook.widgets._inspector import Inspector
from toolkit.notebook.widgets._live import LiveFigure
from toolkit.notebook.widgets._sweep import (
    ConfSweep,
    conf_combinations,
    parse_choices,
    seed_runner,
    validate_confs,
)
from toolkit.notebook.widgets._watch import Watched, watch
from toolkit.snapshot.by_request import (
    SnapshotRecorder,
    SnapshotSource,
    snapshot_lookup,
)

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
    "seed_runner",
    "snapshot_lookup",
    "validate_confs",
    "watch",
    "widgets_available",
]

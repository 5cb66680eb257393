"""Load plotly's JavaScript in the page early, once per page (``%load_ext toolkit`` and the live figure).

JupyterLab's plotly renderer evaluates its plotly.js (about 5 MB) the first time it draws a figure in a
page: 1.5-2 s of the page's main thread on a loaded 2-core machine (tests/browser measures it), during
which nothing else in the page draws. Drawing an empty 10-pixel figure early takes that cost before a
figure anyone waits for. Nothing here imports plotly or reaches a network: the figure is a plain dict.
"""

from __future__ import annotations

from typing import Any

PLOTLY_MIME = "application/vnd.plotly.v1+json"
PRELOAD_KIND = "memlab-plotly-preload"  # layout.meta.kind: what a reader of the outputs skips
_WARMUP_FIGURE: dict[str, Any] = {
    "data": [],
    "layout": {"width": 10, "height": 10, "margin": {"l": 0, "r": 0, "t": 0, "b": 0, "pad": 0},
               "xaxis": {"visible": False}, "yaxis": {"visible": False}, "showlegend": False,
               "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
               "meta": {"kind": PRELOAD_KIND}},
    "config": {"displayModeBar": False, "staticPlot": True},
}


def in_kernel() -> bool:
    """True inside a Jupyter kernel (an IPython shell with a kernel), where displays reach a front end."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def preload_plotly() -> bool:
    """In a kernel, display the empty figure (the front end's plotly renderer then loads plotly.js once
    for the page and keeps it); elsewhere do nothing. Returns whether it displayed."""
    if not in_kernel():
        return False
    from IPython.display import display

    display({PLOTLY_MIME: _WARMUP_FIGURE, "text/plain": ""}, raw=True)
    return True

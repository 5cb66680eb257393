"""Where a view shows: kernel or script, widget or static figure (imports ipywidgets and anywidget
only when asked)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from toolkit.core.errors import ToolkitError
from toolkit.notebook._preload import in_kernel

if TYPE_CHECKING:  # pragma: no cover
    import plotly.graph_objects as go


Mode = Literal["auto", "widget", "static"]


class WidgetError(ToolkitError, ValueError):
    """A view was built with input it cannot use (bad mode, no samples, an unusable snapshot source)."""



# -- environment ---------------------------------------------------------------------------------------


def widgets_available() -> bool:
    """True when a kernel runs and ``anywidget`` + ``ipywidgets`` import (plotly 6+'s FigureWidget
    needs anywidget). Says nothing about the front end: where it cannot show widgets, use
    ``mode="static"``."""
    if not in_kernel():
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


def _display(obj: Any, *, display_id: bool = False, raw: bool = False) -> Any:
    """IPython's display when IPython is there; a no-op in plain scripts (figures stay reachable)."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython is a notebook-extra dependency
        return None
    if get_ipython() is None:
        return None
    return display(obj, display_id=display_id, raw=raw) if display_id else display(obj, raw=raw)


PLOTLY_MIME = "application/vnd.plotly.v1+json"


def figure_bundle(fig: go.Figure) -> dict[str, Any]:
    """The figure as plotly's mime type only (JupyterLab, Notebook 7 and VS Code render it with one
    plotly.js per page), plus a text line for front ends without it.

    Not ``display(fig)``: plotly's ``_ipython_display_`` goes through its renderers, which ignore
    ``display_id`` (every update became a new output) and, with the "notebook" renderer, embed plotly.js.
    """
    import json

    title = fig.layout.title.text if fig.layout.title and fig.layout.title.text else "plotly figure"
    return {PLOTLY_MIME: json.loads(fig.to_json()), "text/plain": str(title).split("<br>")[0]}


def show_figure(fig: go.Figure, *, display_id: bool = False) -> Any:
    """Display a figure as ``figure_bundle``; returns the display handle when ``display_id``."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython is a notebook-extra dependency
        return None
    if get_ipython() is None:
        return None
    bundle = figure_bundle(fig)
    return display(bundle, raw=True, display_id=True) if display_id else display(bundle, raw=True)


def update_figure(handle: Any, fig: go.Figure) -> None:
    """Replace what a ``show_figure(..., display_id=True)`` handle shows (one output, redrawn in place)."""
    if handle is not None:
        handle.update(figure_bundle(fig), raw=True)




def html_bundle(html_text: str, text: str) -> dict[str, Any]:
    """An HTML output with a text line for front ends without HTML."""
    return {"text/html": html_text, "text/plain": text}

"""``%mem_plot``, ``%mem_compare``, ``%mem_inspect``: thin magics over ``toolkit.viz.plots``/``widgets``/``report``.

Each parses its line, resolves the runs and calls one function a script could call itself. A RUN is a
name in the user namespace bound to a ``Run`` (or to something that carries runs: ``watch(...)``'s
``Watched``, the seed scenario's result), or the path of a run file (``toolkit.core.records.load_run``;
plain JSON, never executed). Bad input is one line (``UsageError``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

from toolkit.core.errors import ToolkitError
from toolkit.core.records import MemorySample, RecordError, Run, load_run
from toolkit.notebook._magic_args import MagicArgumentParser, split_line

__all__ = ["PlotMagics", "Views", "resolve_runs"]


def mem_plot_parser() -> argparse.ArgumentParser:
    p = MagicArgumentParser(prog="mem_plot", add_help=False,
                description="Plot memory request by request for one or more runs (one figure each).",
                epilog="examples:  %mem_plot run  |  %mem_plot runs/a.jsonl --fragmentation  |  "
                       "%mem_plot run --html out/report.html --export out/samples.parquet")
    p.add_argument("runs", nargs="*", metavar="RUN", help="name bound to a Run, or a run file path")
    p.add_argument("--fragmentation", action="store_true", help="the fragmentation view instead")
    p.add_argument("--metrics", default=None, help="comma-separated MemorySample fields to draw")
    p.add_argument("--html", default=None, metavar="PATH", help="also write a self-contained HTML report")
    p.add_argument("--export", default=None, metavar="PATH", help="also write the samples (.csv or .parquet)")
    return p


def mem_compare_parser() -> argparse.ArgumentParser:
    p = MagicArgumentParser(prog="mem_compare", add_help=False,
                description="Compare runs on one metric (one colour per conf) with a summary table.",
                epilog="examples:  %mem_compare a b  |  %mem_compare seed --metric non_torch_bytes  |  "
                       "%mem_compare a b --rank 1 --html out/compare.html")
    p.add_argument("runs", nargs="+", metavar="RUN", help="names bound to Runs (or to results holding runs), "
                                                          "or run file paths")
    p.add_argument("--metric", default="reserved_bytes", help="a MemorySample field or fragmentation_bytes")
    p.add_argument("--rank", type=int, default=None, help="one rank (default: the largest value over ranks)")
    p.add_argument("--no-table", action="store_true", help="the figure only")
    p.add_argument("--html", default=None, metavar="PATH", help="also write a self-contained HTML report")
    p.add_argument("--export", default=None, metavar="PATH", help="also write the samples (.csv or .parquet)")
    return p


def mem_inspect_parser() -> argparse.ArgumentParser:
    p = MagicArgumentParser(prog="mem_inspect", add_help=False,
                description="Step through a run request by request: allocator state and statistics.",
                epilog="examples:  %mem_inspect watched  |  %mem_inspect run --snapshots recorder --request 120  |"
                       "  %mem_inspect run --static")
    p.add_argument("run", metavar="RUN", help="name bound to a Run (or a watch() result), or a run file path")
    p.add_argument("--snapshots", default=None, metavar="NAME",
                   help="name bound to a snapshot source (snapshot_at(request, rank)) if RUN carries none")
    p.add_argument("--request", type=int, default=None, help="request shown first")
    p.add_argument("--rank", type=int, default=None)
    p.add_argument("--scale", choices=("bytes", "fraction"), default="bytes", help="segment widths")
    p.add_argument("--static", action="store_true", help="a plotly slider instead of widgets")
    return p


def _lookup_name(token: str, user_ns: Mapping[str, Any]) -> tuple[bool, Any]:
    """``name`` or ``name.attr.attr`` in the user namespace (no evaluation of anything else)."""
    head, *rest = token.split(".")
    if not head.isidentifier() or head not in user_ns:
        return False, None
    obj = user_ns[head]
    for attr in rest:
        if not attr.isidentifier() or not hasattr(obj, attr):
            return False, None
        obj = getattr(obj, attr)
    return True, obj


def _runs_of(token: str, obj: Any) -> list[tuple[Run, Any]]:
    """(run, snapshot source or None) pairs carried by a user object."""
    if isinstance(obj, Run):
        return [(obj, None)]
    if isinstance(obj, (str, os.PathLike)):
        return [(_load(str(obj)), None)]
    inner = getattr(obj, "run", None)
    if isinstance(inner, Run):  # toolkit.notebook.widgets.Watched and similar
        return [(inner, getattr(obj, "snapshots", None))]
    many = getattr(obj, "runs", None)
    if isinstance(many, Mapping):
        many = list(many.values())
    if isinstance(many, Sequence) and many and all(isinstance(r, Run) for r in many):
        return [(r, None) for r in many]
    if isinstance(obj, Sequence) and obj and all(isinstance(r, Run) for r in obj):
        return [(r, None) for r in obj]
    raise UsageError(f"{token} is not a Run nor a result holding runs (it is of type {type(obj).__name__})")


def _load(path: str) -> Run:
    try:
        return load_run(path)
    except FileNotFoundError:
        raise UsageError(f"no run file at {path}") from None
    except (RecordError, OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: not a readable run file: {' '.join(str(err).split())[:300]}") from None


def resolve_runs(tokens: Sequence[str], user_ns: Mapping[str, Any]) -> list[tuple[Run, Any]]:
    """Every RUN token as ``(Run, snapshot source or None)``; a name wins over a file of the same name."""
    out: list[tuple[Run, Any]] = []
    for token in tokens:
        found, obj = _lookup_name(token, user_ns)
        if found:
            out.extend(_runs_of(token, obj))
        elif Path(token).is_file():
            out.append((_load(token), None))
        else:
            raise UsageError(f"{token}: no variable of that name holds a Run, and no run file exists at that path")
    return out


# what building a figure or writing an export can raise for bad input (a metric that is not a number, a
# folder that cannot be written): shown as the magic's one-line UsageError, not a traceback
_DISPLAY_ERRORS = (ToolkitError, ValueError, TypeError, KeyError, OSError)
_NUMERIC_FIELDS = tuple(f.name for f in fields(MemorySample) if str(f.type) in ("int", "int | None"))


def _what(err: BaseException) -> str:
    text = " ".join(str(err).split())[:300]
    return text if isinstance(err, ToolkitError) else f"{type(err).__name__}: {text}"


def _check_metrics(prog: str, metrics: Sequence[str]) -> None:
    """Before any figure is built: a metric must be a numeric ``MemorySample`` field (``status`` is not)."""
    from toolkit.viz.plots import MEMORY_METRICS

    bad = [m for m in metrics if m not in _NUMERIC_FIELDS and m not in MEMORY_METRICS]
    if bad or not metrics:
        raise UsageError(f"%{prog}: unknown metric {bad[0] if bad else ''!r} (not a numeric MemorySample field); "
                         f"use some of {', '.join(f for f in _NUMERIC_FIELDS if f.endswith('_bytes'))}")


class Views(list):  # type: ignore[type-arg]
    """Several displayable results of one magic (figures, tables), shown one after the other."""

    def _ipython_display_(self) -> None:
        from IPython.display import display

        for view in self:
            display(view)

    def __repr__(self) -> str:
        return f"Views({', '.join(type(v).__name__ for v in self)})"


@magics_class
class PlotMagics(Magics):
    """The plotting magics. ``PlotMagics(shell)``; ``session`` is optional and only used for its
    ``last_run`` (``%mem_plot`` with no RUN plots it)."""

    def __init__(self, shell: Any, session: Any = None) -> None:
        super().__init__(shell)
        self.session = session

    @property
    def _ns(self) -> Mapping[str, Any]:
        return self.shell.user_ns if self.shell is not None else {}

    def _exports(self, runs: list[Run], html_path: str | None, export_path: str | None,
                 snapshots: Mapping[str, Any] | None = None) -> None:
        from toolkit.viz.report import export_samples, write_html_report

        if html_path:
            write_html_report(runs, html_path, snapshots=snapshots)
            print(f"wrote {html_path}")
        if export_path:
            export_samples(runs, export_path)
            print(f"wrote {export_path}")

    @line_magic
    def mem_plot(self, line: str) -> Any:
        from toolkit.viz.plots import MEMORY_METRICS, plot_fragmentation, plot_run

        args = mem_plot_parser().parse_args(split_line(line, "mem_plot"))
        if args.runs:
            pairs = resolve_runs(args.runs, self._ns)
        else:
            last = getattr(self.session, "last_run", None)  # LLMSession: its own or its engine's latest run
            if not isinstance(last, Run):
                raise UsageError("%mem_plot: name a run, e.g. %mem_plot run (a variable or a run file)")
            pairs = [(last, None)]
        metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip()) if args.metrics else MEMORY_METRICS
        _check_metrics("mem_plot", metrics)
        try:
            figs = [plot_fragmentation(r) if args.fragmentation else plot_run(r, metrics=metrics) for r, _ in pairs]
            snaps = {r.name: s for r, s in pairs if s is not None}
            self._exports([r for r, _ in pairs], args.html, args.export, snaps)
        except _DISPLAY_ERRORS as err:
            raise UsageError(f"%mem_plot: {_what(err)}") from None
        return figs[0] if len(figs) == 1 else Views(figs)

    @line_magic
    def mem_compare(self, line: str) -> Any:
        from toolkit.viz.plots import plot_compare
        from toolkit.viz.report import format_summary, summary_frame

        args = mem_compare_parser().parse_args(split_line(line, "mem_compare"))
        pairs = resolve_runs(args.runs, self._ns)
        if len(pairs) < 2:
            raise UsageError("%mem_compare: give at least two runs (or a result that holds several)")
        runs = [r for r, _ in pairs]
        if args.metric != "fragmentation_bytes":
            _check_metrics("mem_compare", (args.metric,))
        try:
            fig = plot_compare(runs, args.metric, rank=args.rank)
            self._exports(runs, args.html, args.export)
            if args.no_table:
                return fig
            return Views([fig, format_summary(summary_frame(runs))])
        except _DISPLAY_ERRORS as err:
            raise UsageError(f"%mem_compare: {_what(err)}") from None

    @line_magic
    def mem_inspect(self, line: str) -> Any:
        from toolkit.notebook.widgets import Inspector

        args = mem_inspect_parser().parse_args(split_line(line, "mem_inspect"))
        pairs = resolve_runs([args.run], self._ns)
        if len(pairs) != 1:
            raise UsageError(f"%mem_inspect: {args.run} holds {len(pairs)} runs; name one of them")
        run, snaps = pairs[0]
        if args.snapshots is not None:
            found, snaps = _lookup_name(args.snapshots, self._ns)
            if not found:
                raise UsageError(f"%mem_inspect: no variable {args.snapshots!r}")
        try:
            return Inspector(run, snaps, rank=args.rank, request=args.request, scale=args.scale,
                             mode="static" if args.static else "auto")
        except _DISPLAY_ERRORS as err:
            raise UsageError(f"%mem_inspect: {_what(err)}") from None


PlotMagics.mem_plot.__doc__ = mem_plot_parser().format_help()
PlotMagics.mem_compare.__doc__ = mem_compare_parser().format_help()
PlotMagics.mem_inspect.__doc__ = mem_inspect_parser().format_help()

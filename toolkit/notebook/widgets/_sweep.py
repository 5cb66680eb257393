"""``ConfSweep``: a panel that runs one engine per conf combination and compares the runs."""

from __future__ import annotations

import html
import itertools
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.core.errors import ToolkitError
from toolkit.core.records import Run
from toolkit.viz.plots import (
    METRIC_LABELS,
    plot_compare,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import plotly.graph_objects as go

from toolkit.notebook.widgets._display import (
    Mode,
    WidgetError,
    _display,
    _figure_widget,
    _resolve_mode,
    show_figure,
)

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
        # "auto": the panel's figure is a plain plotly output in an Output widget (plotly.js once per page;
        # a FigureWidget ships its own ~5 MB bundle); "widget" keeps a FigureWidget updated in place
        self.mode = "static" if mode == "auto" else _resolve_mode(mode)
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

    def _bad_items(self) -> dict[str, list[tuple[str, str]]]:
        """Per option field, the ``key:value`` items that do not parse on their own, with the reason."""
        out: dict[str, list[tuple[str, str]]] = {}
        for key, text in self.options.items():
            bad = validate_confs([f"{key}:{v}" for v in parse_choices(text) if v is not None],
                                 self.platform, self.version)[1]
            if bad:
                out[key] = bad
        return out

    def field_errors(self) -> dict[str, str]:
        """One line per option field whose own values do not parse (a typo), whatever they are combined with."""
        return {key: ", ".join(repr(c.partition(":")[2]) for c, _ in bad) + f": {bad[0][1]}"
                for key, bad in self._bad_items().items()}

    def preview_lines(self) -> list[str]:
        """What the panel says about the current texts (plain text): the confs to run, then one line per
        field with a typo, then one line per reason combinations are refused (not one per combination)."""
        valid, rejected = self.combinations()
        fields = self.field_errors()
        bad_items = {item for bad in self._bad_items().values() for item, _ in bad}
        lines = [f"{len(valid)} confs: " + ", ".join(c or "defaults" for c in valid)]
        lines += [f"{key}: rejected {why}" for key, why in fields.items()]
        by_reason: dict[str, list[str]] = {}
        for conf, why in rejected:
            if bad_items & set(parse_choices(conf.replace(",", ", "))):  # type: ignore[arg-type]
                continue  # already said, once, on its field's line
            by_reason.setdefault(re.sub(r" at \d+", "", why), []).append(conf)
        for why, confs in by_reason.items():
            lines.append(f"rejected {confs[0]!r}" + (f" and {len(confs) - 1} more" if len(confs) > 1 else "")
                         + f": {why}")
        return lines

    def run(self) -> list[Run]:
        """Run every valid combination (updating the panel after each); returns the runs."""

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
        if self.mode == "widget":
            fw = self._ui["figure"]
            # assigning a layout sends the front end only the keys it has (a relayout merges): without this
            # the previous metric's capacity line and its label would stay on a sub-GiB plot
            fw.layout.shapes = new.layout.shapes  # (update_layout skips empty tuples: assign)
            fw.layout.annotations = new.layout.annotations
            with fw.batch_update():
                fw.data = ()
            fw.add_traces(new.data)
            fw.layout = new.layout
        else:
            self._ui["figure_out"].clear_output(wait=True)
            with self._ui["figure_out"]:
                show_figure(new)
        cols = ["run", "status", "requests_served", "oom_at_request", "peak_reserved_bytes",
                "peak_fragmentation_bytes", "peak_inactive_split_bytes", "peak_non_torch_bytes",
                "peak_driver_cached_bytes", "alloc_retries"]
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
        first, *problems = self.preview_lines()
        lines = [f"<b>{html.escape(first.split(':', 1)[0])}</b>:" + html.escape(first.split(':', 1)[1])]
        lines += [f"<span style='color:#c62828'>{html.escape(p)}</span>" for p in problems]
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


"""toolkit.notebook.widgets: the live figure, the inspector and the conf sweep, driven without a browser.

FigureWidget and ipywidgets objects work without a kernel (their comms are inert), so the widget code
paths run here for real; the browser test (tests/browser/) checks that JupyterLab renders them.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from PIL import Image
from toolkit._testing.factories import make_run, sim_snapshot

from toolkit.viz.plots import MEMORY_METRICS
from toolkit.core.records import Run
from toolkit.core.units import GiB
from toolkit.snapshot.by_request import SnapshotSourceError
from toolkit.notebook.widgets import (
    ConfSweep,
    Inspector,
    LiveFigure,
    SnapshotRecorder,
    WidgetError,
    conf_combinations,
    parse_choices,
    snapshot_lookup,
    validate_confs,
    watch,
    widgets_available,
)

PER_RANK = len(MEMORY_METRICS) + 1


def small_engine(**kwargs: Any):
    from toolkit.engines.sim import SimEngine

    args = dict(conf="", device_capacity_bytes=16 * GiB, max_model_len=8192, max_num_batched_tokens=4096)
    args.update(kwargs)
    return SimEngine("Qwen/Qwen3-VL-2B-Instruct", **args)


def images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (224 + 96 * i, 320 + 32 * (i % 3))) for i in range(n)]


# -- environment ---------------------------------------------------------------------------------------


def test_no_kernel_means_static_and_bad_mode_is_one_line() -> None:
    assert widgets_available() is False  # pytest runs no IPython kernel
    assert LiveFigure(make_run(3)).mode == "static"
    with pytest.raises(WidgetError, match="mode must be"):
        LiveFigure(make_run(3), mode="fancy")  # type: ignore[arg-type]


# -- live figure ---------------------------------------------------------------------------------------


def test_live_figure_batches_and_throttles_redraws() -> None:
    run = make_run(40, ranks=(0, 1))
    live = LiveFigure(run.with_samples(()), ranks=(0, 1), interval_s=3600, mode="widget")
    for i in range(0, len(run.samples), 2):
        live.append(*run.samples[i:i + 2])
    # the first append draws at once; then the hour-long interval holds every redraw back
    assert live.samples_received == 80 and live.flushes == 1
    assert len(live.widget.data[0].x) == 1
    live.finish()
    assert live.flushes == 2
    fw = live.widget
    assert len(fw.data) == 2 * PER_RANK
    for i, rank in enumerate((0, 1)):
        samples = run.samples_of_rank(rank)
        assert list(fw.data[i * PER_RANK].x) == list(range(40))
        for j, m in enumerate(MEMORY_METRICS):
            assert np.allclose(fw.data[i * PER_RANK + j].y, [getattr(s, m) / GiB for s in samples], rtol=0, atol=0)
    assert fw.data[0].customdata[3].startswith("img3.jpg")


def test_live_figure_redraw_interval_and_overhead_bound() -> None:
    run = make_run(30)
    live = LiveFigure(run.with_samples(()), interval_s=0.01, max_overhead=1.0, mode="widget")
    for s in run.samples[:8]:
        time.sleep(0.06)  # samples slower than the interval (and than a redraw): each is drawn as it comes
        live.append(s)
    assert live.flushes == 8 and len(live.widget.data[0].x) == 8
    slow = LiveFigure(run.with_samples(()), interval_s=0.0, max_overhead=0.001, mode="widget")
    t0 = time.perf_counter()
    for s in run.samples:
        slow.append(s)
    elapsed = time.perf_counter() - t0
    # redraws may take at most 0.1 % of the time: after the first one, the next is ~1000x its cost away
    assert slow.flushes < 30 and slow.flush_seconds <= elapsed


def test_live_figure_marks_the_oom_when_finished() -> None:
    run = make_run(oom_at=7)
    live = LiveFigure(run.with_samples(()), interval_s=0, mode="widget")
    for s in run.samples:
        live(s)
    done = live.finish(run)
    assert done is run and live.run is run
    failed = live.widget.data[PER_RANK - 1]
    assert list(failed.x) == [7]
    assert any(a.text == "OOM at request 7" for a in live.widget.layout.annotations)
    assert "[oom]" in live.widget.layout.title.text and "simulated" in live.widget.layout.title.text


def test_live_figure_grows_a_panel_for_a_new_rank() -> None:
    run = make_run(5, ranks=(0, 1))
    live = LiveFigure(run.with_samples(()), interval_s=0, mode="widget")
    assert live.ranks == (0,) and len(live.widget.data) == PER_RANK
    for s in run.samples:
        live.append(s)
    live.flush()  # whatever the throttle held back
    assert live.ranks == (0, 1) and len(live.widget.data) == 2 * PER_RANK
    assert list(live.widget.data[PER_RANK].x) == list(range(5))


def test_live_figure_static_mode_redraws_a_plain_figure() -> None:
    run = make_run(12)
    live = LiveFigure(run.with_samples(()), interval_s=0, mode="static")
    live.append(*run.samples)
    fig = live.widget
    assert type(fig).__name__ == "Figure" and list(fig.data[0].x) == list(range(12))
    assert list(fig.data[2].y) == [s.reserved_bytes / GiB for s in run.samples]
    assert live.figure().to_json() == fig.to_json()


class _Handle:
    def __init__(self, first: dict[str, Any]) -> None:
        self.bundles = [first]

    def update(self, bundle: dict[str, Any], raw: bool = False) -> None:
        assert raw
        self.bundles.append(bundle)


def _shown_through_a_handle(live: LiveFigure, monkeypatch: pytest.MonkeyPatch) -> list[_Handle]:
    """Display ``live`` as a kernel without ipywidgets would: through a display handle (captured)."""
    import toolkit.notebook.widgets._display as display_mod
    import toolkit.notebook.widgets._live as live_mod

    handles: list[_Handle] = []

    def fake_display(obj: Any, *, display_id: bool = False, raw: bool = False) -> _Handle:
        handles.append(_Handle(obj))
        return handles[-1]

    monkeypatch.setattr(live_mod, "widgets_available", lambda: False)
    monkeypatch.setattr(live_mod, "_display", fake_display)
    monkeypatch.setattr(live_mod, "show_figure", lambda fig, display_id=False: fake_display(
        display_mod.figure_bundle(fig), display_id=display_id, raw=True))
    live._ipython_display_()
    return handles


def test_live_figure_draws_light_frames_while_the_run_goes_then_plotly(monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(12, ranks=(0, 1))
    live = LiveFigure(run.with_samples(()), ranks=(0, 1), interval_s=0, max_overhead=1.0)
    (handle,) = _shown_through_a_handle(live, monkeypatch)
    for s in run.samples:
        live.append(s)
        time.sleep(0.002)  # the throttle waits a frame's cost (max_overhead=1): let each sample through
    frames = [b for b in handle.bundles if "text/html" in b]
    assert len(frames) >= 3 and frames == handle.bundles  # no plotly before the run ends
    assert all('class="memlab-live-frame"' in b["text/html"] and "simulated" in b["text/html"] for b in frames)
    assert 'data-points="0"' in frames[0]["text/html"] and 'data-points="12"' in frames[-1]["text/html"]
    assert frames[-1]["text/html"].count("<polyline") == 2 * len(MEMORY_METRICS)  # per rank, per metric
    live.finish(run)
    final = handle.bundles[-1]["application/vnd.plotly.v1+json"]
    assert "simulated" in final["layout"]["title"]["text"] and len(final["data"]) == 2 * PER_RANK
    assert live.plotly_frames == 1 and live.light_frames == len(frames)


def test_live_figure_plotly_after_s_zero_draws_plotly_from_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(4)
    live = LiveFigure(run.with_samples(()), interval_s=0, max_overhead=1.0, plotly_after_s=0)
    (handle,) = _shown_through_a_handle(live, monkeypatch)
    live.append(*run.samples)
    assert all("application/vnd.plotly.v1+json" in b for b in handle.bundles) and live.light_frames == 0


def test_live_figure_throttle_counts_cpu_time_not_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame that took wall time without CPU (a loaded machine) must not hold the next one back."""
    run = make_run(5)
    live = LiveFigure(run.with_samples(()), interval_s=0, max_overhead=0.05)
    _shown_through_a_handle(live, monkeypatch)
    monkeypatch.setattr(live, "_show_light", lambda: time.sleep(0.03))  # 30 ms waiting = 0.6 s by wall time
    for s in run.samples:
        live.append(s)
        time.sleep(0.005)
    assert live.flushes == 5  # by wall time: 1 (the next one 0.6 s later)


def test_live_figure_preloads_plotly_once_after_the_first_points(monkeypatch: pytest.MonkeyPatch) -> None:
    import IPython.display

    import toolkit.notebook._preload as preload
    import toolkit.notebook.widgets._live as live_mod

    shown: list[Any] = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: shown.append(obj))
    monkeypatch.setattr(preload, "in_kernel", lambda: True)
    monkeypatch.setattr(live_mod, "_PRELOAD_DELAY_S", 0.0)

    class _Out:
        def clear_output(self, wait: bool = False) -> None:
            shown.append("clear")

        def __enter__(self) -> None:
            return None

        def __exit__(self, *exc: Any) -> None:
            return None

    run = make_run(6)
    live = LiveFigure(run.with_samples(()), interval_s=0, max_overhead=1.0)
    live._out, live._shown_at = _Out(), time.perf_counter()
    for s in run.samples:
        live.append(s)
    preloads = [o for o in shown if isinstance(o, dict) and "application/vnd.plotly.v1+json" in o]
    assert len(preloads) == 1
    fig = preloads[0]["application/vnd.plotly.v1+json"]
    assert fig["data"] == [] and fig["layout"]["meta"]["kind"] == preload.PRELOAD_KIND


def test_preload_outside_a_kernel_does_nothing() -> None:
    from toolkit.notebook._preload import preload_plotly

    assert preload_plotly() is False


def test_allocator_view_sizes_its_margin_instead_of_automargin() -> None:
    from toolkit.viz.plots import plot_allocator_state, segment_label_margin

    _, snap, _ = sim_snapshot()
    fig = plot_allocator_state(snap)
    labels = list(fig.layout.yaxis.categoryarray)
    assert fig.layout.yaxis.automargin is False and fig.layout.margin.l == segment_label_margin(labels)
    assert segment_label_margin(labels) >= 48 + 6 * max(len(x) for x in labels)


def test_light_inspector_overview_is_an_svg_frame_at_the_request() -> None:
    engine = small_engine()
    watched = watch(engine, images(4), live=False, max_tokens=8, progress=False)
    ins = Inspector(watched.run, watched.snapshots, request=2)
    page = ins._overview_html()
    assert 'class="memlab-overview"' in page and "rank 0, request 2 — simulated" in page
    assert 'stroke="black"' in page and page.count("<polyline") == 3


# -- snapshots and engines -----------------------------------------------------------------------------


class _FakeDevice:
    def __init__(self) -> None:
        self.calls = 0

    def snapshot(self) -> dict[str, Any]:
        self.calls += 1
        return {"segments": [], "device_traces": [[]], "n": self.calls}


class _Result:
    def __init__(self, i: int, status: str = "ok") -> None:
        self.request_index, self.status = i, status


def test_snapshot_recorder_every_and_failures() -> None:
    dev = _FakeDevice()
    rec = SnapshotRecorder(dev, every=3)
    for i in range(10):
        rec(_Result(i, "oom" if i == 7 else "ok"))
    assert rec.requests == [0, 3, 6, 7, 9]
    assert rec.snapshot_at(7, 1)["n"] == 4 and rec.snapshot_at(8, 0) is None
    bounded = SnapshotRecorder(_FakeDevice(), max_snapshots=3)
    for i in range(10):
        bounded(_Result(i, "oom" if i == 2 else "ok"))
    assert len(bounded) == 3 and 2 in bounded.requests and 9 in bounded.requests
    with pytest.raises(SnapshotSourceError):
        SnapshotRecorder(dev, every=0)


def test_snapshot_lookup_accepts_sources_mappings_and_callables() -> None:
    snap = {"segments": []}
    assert snapshot_lookup(None)(1, 0) is None
    assert snapshot_lookup({(1, 0): snap})(1, 0) is snap and snapshot_lookup({1: snap})(1, 3) is snap
    assert snapshot_lookup(lambda k, r: snap if k == 2 else None)(2, 0) is snap
    with pytest.raises(SnapshotSourceError, match="snapshot_at"):
        snapshot_lookup(42)


def test_engines_report_each_result_to_on_result_once_its_samples_are_kept() -> None:
    engine = small_engine()
    seen: list[int] = []
    run = engine.run_images(images(3), max_tokens=8, progress=False,
                            on_result=lambda r: seen.append(r.request_index))
    assert seen == [0, 1, 2] and [s.request_index for s in run.samples] == [0, 1, 2]


def test_watch_refuses_an_engine_it_cannot_follow() -> None:
    class Blind:
        def header(self):
            return make_run(0)

        def run_images(self, images, **kwargs):
            raise AssertionError("must not run")

    with pytest.raises(WidgetError, match="on_result"):
        watch(Blind(), [], record_snapshots=False, show=False)


def test_watch_a_simulated_run_live_with_snapshots() -> None:
    engine = small_engine(tensor_parallel_size=2)
    watched = watch(engine, images(6), mode="widget", interval_s=0, max_tokens=8, progress=False)
    run = watched.run
    assert run.simulated and run.status == "ok" and len(run.samples) == 12 and run.ranks == (0, 1)
    assert len(watched.live.widget.data) == 2 * PER_RANK
    assert list(watched.live.widget.data[PER_RANK].x) == list(range(6))
    assert watched.snapshots.requests == list(range(6))
    snap = watched.snapshots.snapshot_at(5, 1)
    assert snap["simulated"] is True
    reserved = sum(s["total_size"] for s in snap["segments"])
    assert reserved == run.samples_of_rank(1)[-1].reserved_bytes  # the snapshot is the state after request 5
    ins = watched.inspect(mode="widget")
    assert ins.request == 5 and "[simulated]" in repr(watched)


# -- inspector -----------------------------------------------------------------------------------------


def test_inspector_steps_through_requests_and_updates_the_plot() -> None:
    engine = small_engine()
    watched = watch(engine, images(6), mode="widget", live=False, max_tokens=8, progress=False)
    ins = Inspector(watched.run, watched.snapshots, request=2, mode="widget")
    box = ins.widget
    state = ins._ui["state"]
    assert "after request 2, rank 0 — simulated" in state.layout.title.text
    before = [tuple(t.x) for t in state.data]
    ins.step(+1)
    assert ins.request == 3 and ins._ui["slider"].value == 3
    assert "after request 3," in state.layout.title.text
    ins.show(0)
    after = [tuple(t.x) for t in state.data]
    assert after != before  # request 0 and request 2 leave different allocator states
    ins.step(-5)
    assert ins.request == 0  # clamped
    ins._ui["slider"].value = 4  # what the browser does
    assert ins.request == 4 and "after request 4," in state.layout.title.text
    assert ins._ui["overview"].layout.shapes[-1].x0 == 4
    assert "reserved" in ins._ui["stats"].value and type(box).__name__ == "VBox"


def test_inspector_without_snapshots_and_with_failures() -> None:
    run = make_run(9, oom_at=6, ranks=(0, 1))
    ins = Inspector(run, None, mode="widget")
    assert ins.request == 6 and ins.first_failure == 6  # opens at the failure
    assert type(ins.widget).__name__ == "VBox"
    assert "no allocator snapshot recorded" in ins._ui["state"].layout.title.text
    assert "OOM" in ins._ui["state"].layout.title.text
    assert "first failure (6)" == ins._ui["failure"].description
    ins.show(3, rank=1)
    assert ins.rank == 1 and ins._ui["overview"].data[0].meta["rank"] == 1
    stats = ins.stats(3, 1)
    assert "+100.00 MiB" in stats  # allocated grew by 100 MiB from request 2 to 3
    assert "OK" in stats and "4032×3024 → 1024×768" in stats and "1003 / 1033 / 64" in stats
    with pytest.raises(WidgetError, match="no rank 7"):
        Inspector(run, None, rank=7)
    with pytest.raises(WidgetError, match="no samples"):
        Inspector(run.with_samples(()), None)
    with pytest.raises(WidgetError, match="needs a Run"):
        Inspector("run.jsonl", None)  # type: ignore[arg-type]


def test_inspector_static_fallback_is_a_plotly_slider() -> None:
    _, snap, _ = sim_snapshot()
    run = make_run(5)
    ins = Inspector(run, {2: snap}, mode="static")
    fig = ins.static_figure()
    assert len(fig.layout.sliders[0].steps) == 5
    assert "no allocator snapshot" in ins.state_figure(1).layout.title.text
    assert "segments" in ins.state_figure(2).layout.title.text


# -- conf sweep ----------------------------------------------------------------------------------------


def test_parse_choices_and_combinations() -> None:
    assert parse_choices("-, True") == [None, "True"]
    assert parse_choices(" 128 ,256,256, unset") == ["128", "256", None]
    assert parse_choices("[256:1,>:4], 2") == ["[256:1,>:4]", "2"]
    combos = conf_combinations({"expandable_segments": [None, "True"], "max_split_size_mb": [None, "256"]})
    assert combos == ["", "max_split_size_mb:256", "expandable_segments:True",
                      "expandable_segments:True,max_split_size_mb:256"]


def test_validate_confs_uses_the_real_parser() -> None:
    ok, rejected = validate_confs(["", "expandable_segments:True", "expandable_segments:True,max_split_size_mb:256",
                                   "page_size:2g"], platform="npu")
    assert ok == ["", "expandable_segments:True"]
    assert [c for c, _ in rejected] == ["expandable_segments:True,max_split_size_mb:256", "page_size:2g"]
    assert "cannot be combined" in rejected[0][1] and "\n" not in rejected[0][1]


def test_conf_sweep_runs_each_valid_combination() -> None:
    calls: list[tuple[str, float | None]] = []

    def runner(conf: str, fraction: float | None) -> Run:
        calls.append((conf, fraction))
        return make_run(6, conf=conf, name=conf or "default", scale=1 + len(calls))

    sweep = ConfSweep(runner, memory_fraction=1.0, mode="widget",
                      options={"expandable_segments": "-, True", "max_split_size_mb": "-, 256"})
    box = sweep.widget
    assert "3 confs" in sweep._ui["preview"].value and "rejected" in sweep._ui["preview"].value
    runs = sweep.run()
    assert [c for c, _ in calls] == ["", "max_split_size_mb:256", "expandable_segments:True"]
    assert all(f == 1.0 for _, f in calls) and len(runs) == 3
    assert len(sweep._ui["figure"].data) == 3
    assert "peak reserved" in sweep._ui["table"].value and "done: 3 simulated runs" in sweep._ui["status"].value
    table = sweep.table()
    assert table["requests_served"].tolist() == [6, 6, 6]
    sweep._ui["metric"].value = "non_torch_bytes"
    assert "non-torch" in sweep._ui["figure"].layout.title.text
    assert type(box).__name__ == "VBox"


def test_conf_sweep_limits_combinations_and_reports_in_the_panel() -> None:
    sweep = ConfSweep(lambda c, f: make_run(), max_combinations=2, mode="widget",
                      options={"max_split_size_mb": "-, 128, 256, 512"})
    with pytest.raises(WidgetError, match="at most 2"):
        sweep.combinations()
    assert type(sweep.widget).__name__ == "VBox"
    assert "at most 2" in sweep._ui["preview"].value and sweep._ui["run"].disabled


@pytest.mark.slow
def test_conf_sweep_with_the_seed_scenario(tmp_path) -> None:
    from toolkit.notebook.widgets import seed_runner

    sweep = ConfSweep(seed_runner(3, tmp_path), options={"expandable_segments": "-, True"}, mode="widget")
    runs = sweep.run()
    assert [r.effective_conf for r in runs] == ["", "expandable_segments:True"]
    assert all(r.simulated and r.requests_served == 3 for r in runs)


def test_conf_sweep_keeps_going_when_one_engine_cannot_start() -> None:
    from toolkit.engines.sim import EngineError

    def runner(conf: str, fraction: float | None) -> Run:
        if conf == "max_split_size_mb:256":
            raise EngineError("simulated engine start failed: no room for the KV cache")
        return make_run(4, conf=conf, name=conf or "default")

    sweep = ConfSweep(runner, mode="widget", options={"max_split_size_mb": "-, 256"})
    sweep.widget  # noqa: B018 - builds the panel
    runs = sweep.run()
    assert [r.conf for r in runs] == [""]
    assert sweep.failed == [("max_split_size_mb:256", "simulated engine start failed: no room for the KV cache")]
    assert "1 could not start (max_split_size_mb:256: simulated engine start failed" in sweep._ui["status"].value

"""The Ascend driver layer reaches the views: snapshot, inspector, per-request figure, summary tables."""

from __future__ import annotations

from dataclasses import replace

from toolkit._testing.factories import make_run
from toolkit.core.summary import summarize_run
from toolkit.core.units import MiB
from toolkit.notebook.widgets._inspector import stats_html
from toolkit.sim import SimDevice
from toolkit.viz.plots import plot_run
from toolkit.viz.report import summary_frame


def _cached_device() -> SimDevice:
    dev = SimDevice("npu", "", capacity_bytes=8 << 30, context_bytes=0)
    ptrs = [dev.malloc(20 * MiB) for _ in range(4)]
    for p in ptrs:
        dev.free(p)
    dev.empty_cache()  # torch gives the segments back: the driver keeps (some of) them cached
    return dev


def test_simulated_snapshot_lists_the_driver_heaps_and_their_cache() -> None:
    dev = _cached_device()
    heaps = dev.snapshot()["simulator"]["driver_heaps"]
    assert heaps and sum(h["cached_bytes"] for h in heaps) == dev.driver_cached_bytes > 0
    assert dev.memory_reserved() == 0


def test_inspector_stats_show_the_heaps_beside_the_segments() -> None:
    dev = _cached_device()
    sample = make_run(1).samples[0]
    text = stats_html(sample, None, dev.snapshot())
    assert "driver heaps" in text and "(simulated)" in text
    assert "driver heaps" not in stats_html(sample, None, SimDevice("cuda", "").snapshot())


def test_figure_puts_the_driver_cache_in_the_non_torch_panel() -> None:
    fig = plot_run(make_run(3))
    by_metric = {t.meta["metric"]: t for t in fig.data if t.meta and "metric" in t.meta}
    assert by_metric["driver_cached_bytes"].yaxis == by_metric["non_torch_bytes"].yaxis
    assert by_metric["driver_cached_bytes"].yaxis != by_metric["reserved_bytes"].yaxis


def test_summary_and_report_carry_the_peak_driver_cache() -> None:
    run = make_run(4)
    samples = tuple(replace(s, driver_cached_bytes=(s.request_index + 1) * MiB) for s in run.samples)
    run = replace(run, samples=samples)
    assert summarize_run(run).peak_driver_cached_bytes == 4 * MiB
    assert int(summary_frame([run]).iloc[0]["peak_driver_cached_bytes"]) == 4 * MiB

"""toolkit.viz.plots: runs and snapshots -> plotly figures, checked through ``fig.to_dict()``-level data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from toolkit.viz.plots import (
    BLOCK_STATE_COLORS,
    MEMORY_METRICS,
    PlotError,
    budget_bytes_of,
    metric_series,
    plot_allocator_state,
    plot_allocator_steps,
    plot_compare,
    plot_fragmentation,
    plot_run,
)
from toolkit.core.units import GiB, MiB
from toolkit._testing.factories import make_run, sim_snapshot

from trace_paths import REAL_TRACE as TRACE


# -- plot_run --------------------------------------------------------------------------------------


def test_plot_run_draws_every_metric_exactly() -> None:
    run = make_run(12)
    fig = plot_run(run)
    by_metric = {t.meta["metric"]: t for t in fig.data}
    assert list(by_metric) == [*MEMORY_METRICS, "failed"]
    for m in MEMORY_METRICS:
        expected = np.array([getattr(s, m) for s in run.samples]) / GiB
        assert np.array_equal(np.asarray(by_metric[m].x), np.arange(12))
        assert np.allclose(np.asarray(by_metric[m].y), expected, rtol=0, atol=0)
    # non-torch has its own panel (yaxis2), the rest share the first
    assert by_metric["non_torch_bytes"].yaxis == "y2" and by_metric["reserved_bytes"].yaxis == "y"
    assert len(fig.data[-1].x) == 0  # no failures


def test_plot_run_hover_carries_image_tokens_and_latency() -> None:
    fig = plot_run(make_run(3))
    first = fig.data[0]
    assert "4032×3024 px → 1024×768" in first.customdata[2]
    assert "1002 visual / 1032 prompt / 64 output tokens" in first.customdata[2]
    assert "22.0 ms" in first.customdata[2]
    assert "%{customdata}" in first.hovertemplate and fig.layout.hovermode == "x unified"


def test_plot_run_reference_lines_and_oom_marker() -> None:
    run = make_run(oom_at=6)
    fig = plot_run(run)
    hlines = sorted(s.y0 for s in fig.layout.shapes if s.y0 == s.y1)
    assert budget_bytes_of(run) == math.ceil(64 * GiB * 0.9)
    assert hlines == [pytest.approx(math.ceil(64 * GiB * 0.9) / GiB), pytest.approx(64.0)]
    failed = fig.data[-1]
    assert list(failed.x) == [6] and failed.y[0] == pytest.approx(run.samples[-1].reserved_bytes / GiB)
    assert "NPU out of memory" in failed.customdata[0]
    texts = [a.text for a in fig.layout.annotations]
    assert "OOM at request 6" in texts and any("engine budget 57.60 GiB" in t for t in texts if t)
    assert any(s.x0 == 6 and s.x1 == 6 for s in fig.layout.shapes)
    assert "[oom]" in fig.layout.title.text


def test_plot_run_says_simulated_only_when_simulated() -> None:
    assert "simulated" in plot_run(make_run(simulated=True)).layout.title.text
    assert "simulated" not in plot_run(make_run(simulated=False)).layout.title.text


def test_plot_run_one_panel_per_rank_with_one_legend() -> None:
    run = make_run(5, ranks=(0, 1))
    fig = plot_run(run)
    per_rank = len(MEMORY_METRICS) + 1
    assert len(fig.data) == 2 * per_rank
    assert [t.meta["rank"] for t in fig.data] == [0] * per_rank + [1] * per_rank
    assert sum(bool(t.showlegend) for t in fig.data if t.meta["metric"] != "failed") == len(MEMORY_METRICS)
    rank1_alloc = fig.data[per_rank].y
    assert rank1_alloc[0] == pytest.approx((10 * GiB + 7 * MiB) / GiB)
    titles = [a.text for a in fig.layout.annotations]
    assert "rank 0" in titles and "rank 1" in titles and "TP 2" in fig.layout.title.text


def test_plot_run_rejects_unknown_metric_in_one_line() -> None:
    with pytest.raises(PlotError, match="unknown metric 'reserved'"):
        plot_run(make_run(), metrics=("reserved",))


def test_plot_run_of_an_empty_run_has_the_layout_of_a_full_one() -> None:
    empty = make_run().with_samples(())
    fig = plot_run(empty, ranks=(0, 1))
    assert len(fig.data) == 2 * (len(MEMORY_METRICS) + 1) and all(len(t.x) == 0 for t in fig.data)
    json.loads(fig.to_json())


# -- compare ----------------------------------------------------------------------------------------


def test_compare_one_colour_per_conf_and_conf_in_legend() -> None:
    runs = [make_run(conf="", name="default"), make_run(conf="max_split_size_mb:256", name="ms", scale=2),
            make_run(conf="expandable_segments:True", name="es", oom_at=4)]
    fig = plot_compare(runs, "reserved_bytes")
    lines = [t for t in fig.data if t.mode == "lines"]
    assert [t.name for t in lines] == ["defaults (conf unset)", "max_split_size_mb:256", "expandable_segments:True"]
    assert len({t.line.color for t in lines}) == 3
    assert lines[1].y[3] == pytest.approx(runs[1].samples[3].reserved_bytes / GiB)
    markers = [t for t in fig.data if t.mode == "markers"]
    assert len(markers) == 1 and list(markers[0].x) == [4] and markers[0].marker.color == lines[2].line.color
    assert "simulated" in fig.layout.title.text and fig.layout.legend.title.text == "conf"


def test_compare_labels_duplicates_and_mixed_simulation() -> None:
    runs = [make_run(conf="expandable_segments:True", name="a"),
            make_run(conf="expandable_segments:True", name="b", simulated=False)]
    fig = plot_compare(runs)
    assert [t.name for t in fig.data] == ["expandable_segments:True (a) (sim)", "expandable_segments:True (b)"]
    assert "simulated" not in fig.layout.title.text


def test_compare_takes_the_worst_rank_per_request() -> None:
    run = make_run(4, ranks=(0, 1))
    x, v = metric_series(run, "allocated_bytes")
    assert list(x) == [0, 1, 2, 3]
    assert list(v) == [s.allocated_bytes for s in run.samples if s.rank == 1]
    x0, v0 = metric_series(run, "allocated_bytes", rank=0)
    assert list(v0) == [s.allocated_bytes for s in run.samples if s.rank == 0]
    fig = plot_compare([run, make_run(4)], rank=None)
    assert "(max over ranks)" in fig.layout.title.text
    with pytest.raises(PlotError, match="no samples of rank 5"):
        metric_series(run, "allocated_bytes", rank=5)


def test_compare_uses_webgl_for_big_runs_and_fragmentation_metric() -> None:
    big = [make_run(6000, name=f"r{i}") for i in range(4)]
    fig = plot_compare(big, "fragmentation_bytes")
    assert all(t.type == "scattergl" for t in fig.data)
    s = big[0].samples[5]
    assert fig.data[0].y[5] == pytest.approx((s.reserved_bytes - s.allocated_bytes) / GiB)
    assert plot_compare(big[:1], webgl=False).data[0].type == "scatter"


def test_compare_errors() -> None:
    with pytest.raises(PlotError, match="at least one run"):
        plot_compare([])
    with pytest.raises(PlotError, match="unknown metric"):
        plot_compare([make_run()], "bogus_bytes")


# -- fragmentation --------------------------------------------------------------------------------


def test_fragmentation_view_values_and_panels() -> None:
    run = make_run(9)
    fig = plot_fragmentation(run)
    by = {t.meta["metric"]: t for t in fig.data}
    s = run.samples[4]
    assert by["fragmentation_bytes"].y[4] == pytest.approx((s.reserved_bytes - s.allocated_bytes) / GiB)
    assert by["inactive_split_bytes"].y[4] == pytest.approx(s.inactive_split_bytes / GiB)
    assert list(by["segment_count"].y) == [20 + i for i in range(9)]
    assert list(by["alloc_retries"].y) == [i // 4 for i in range(9)]
    assert (by["fragmentation_bytes"].yaxis, by["segment_count"].yaxis, by["alloc_retries"].yaxis) == ("y", "y2", "y3")
    assert "Fragmentation" in fig.layout.title.text and "simulated" in fig.layout.title.text
    with pytest.raises(PlotError, match="no rank 3"):
        plot_fragmentation(run, rank=3)


# -- allocator state ------------------------------------------------------------------------------


def test_allocator_state_rows_blocks_and_states() -> None:
    dev, snap, (a, b, c, big) = sim_snapshot()
    fig = plot_allocator_state(snap)
    by_state = {t.meta["state"]: t for t in fig.data}
    assert list(by_state) == list(BLOCK_STATE_COLORS)
    alloc = by_state["active_allocated"]
    # every live allocation is one allocated block; sizes in MiB, offsets inside their segment
    sizes = sorted(round(x * MiB) for x in alloc.x)
    expected = sorted(dev.block_at(p).size for p in (a, c, big))
    assert sizes == expected
    assert all(base >= 0 for base in alloc.base)
    assert len(by_state["inactive"].x) >= 1  # the freed 5 MiB block (and split remainders)
    assert len(by_state["workspace"].x) == 1 and round(by_state["workspace"].x[0] * MiB) >= 4 * MiB
    n_segments = len(set(fig.layout.yaxis.categoryarray))
    assert n_segments == len(fig.layout.yaxis.categoryarray)  # unique row labels
    assert any("workspace" in lbl for lbl in fig.layout.yaxis.categoryarray)
    assert "simulated" in fig.layout.title.text
    assert "allocated" in alloc.customdata[0] and "requested" in alloc.customdata[0]


def test_allocator_state_fraction_scale_fills_each_row() -> None:
    _, snap, _ = sim_snapshot()
    fig = plot_allocator_state(snap, scale="fraction")
    widths: dict[str, float] = {}
    for t in fig.data:
        for y, x in zip(t.y, t.x):
            widths[y] = widths.get(y, 0.0) + x
    assert all(w == pytest.approx(1.0) for w in widths.values())
    with pytest.raises(PlotError, match="scale must be"):
        plot_allocator_state(snap, scale="log")


def test_allocator_state_rejects_non_snapshots() -> None:
    with pytest.raises(PlotError, match="not an allocator snapshot"):
        plot_allocator_state({"segments": "nope"})


@pytest.mark.skipif(not TRACE.exists(), reason="the real CUDA trace is not on this machine")
def test_allocator_state_of_the_real_cuda_trace() -> None:
    from toolkit.snapshot import load_snapshot, summarize

    snap = load_snapshot(TRACE)
    full = plot_allocator_state(snap, max_segments=None)
    assert len(full.layout.yaxis.categoryarray) == 516
    total = sum(x for t in full.data for x in t.x) * MiB
    assert total == pytest.approx(summarize(snap)["reserved_bytes"], rel=1e-12)
    capped = plot_allocator_state(snap)
    assert len(capped.layout.yaxis.categoryarray) == 400 and "400 largest shown" in capped.layout.title.text
    assert "simulated" not in capped.layout.title.text


def test_allocator_steps_slider_carries_each_request() -> None:
    run = make_run(6, oom_at=5)
    _, snap, _ = sim_snapshot()
    snaps = {1: snap, 5: snap}
    fig = plot_allocator_steps(run, lambda k, r: snaps.get(k))
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == [str(k) for k in range(6)]
    data_update, layout_update = steps[0].args
    assert all(len(x) == 0 for x in data_update["x"])
    assert "no allocator snapshot" in layout_update["title.text"]
    assert len(steps[1].args[0]["x"][0]) > 0 and "OOM" in steps[5].args[1]["title.text"]
    many = plot_allocator_steps(make_run(500, oom_at=333), lambda k, r: None, max_steps=20)
    labels = [s.label for s in many.layout.sliders[0].steps]
    assert len(labels) <= 21 and "333" in labels and labels[0] == "0" and labels[-1] == "333"

"""toolkit.viz.report: summary tables, CSV/Parquet export, and a self-contained (offline) HTML report."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from toolkit._testing.factories import make_run, sim_snapshot

from toolkit.viz.report import (
    ReportError,
    export_samples,
    format_summary,
    html_report,
    samples_frame,
    summary_frame,
    write_html_report,
)
from toolkit.core.units import MiB
from toolkit.snapshot.by_request import SnapshotSourceError


def two_runs():
    return [make_run(10, conf="", name="default"), make_run(8, conf="max_split_size_mb:256", name="ms", oom_at=5,
                                                           ranks=(0, 1))]


def test_summary_frame_values() -> None:
    default, ms = two_runs()
    frame = summary_frame([default, ms]).set_index("run")
    d = frame.loc["default"]
    assert d["requests"] == 10 and d["requests_served"] == 10 and pd.isna(d["oom_at_request"])
    assert d["peak_reserved_bytes"] == max(s.reserved_peak_bytes for s in default.samples)
    assert d["peak_fragmentation_bytes"] == max(s.reserved_bytes - s.allocated_bytes for s in default.samples)
    assert d["peak_inactive_split_bytes"] == 32 * MiB and d["alloc_retries"] == 2 and d["max_segments"] == 29
    m = frame.loc["ms"]
    assert m["requests"] == 6 and m["requests_served"] == 5 and m["oom_at_request"] == 5 and m["status"] == "oom"
    # max over ranks: rank 1 allocates 7 MiB more
    assert m["peak_allocated_bytes"] == max(s.allocated_peak_bytes for s in ms.samples if s.rank == 1)
    assert frame["peak_reserved_bytes"].dtype.kind == "i"
    assert frame.attrs["simulated"] is True


def test_format_summary_is_for_people() -> None:
    out = format_summary(summary_frame(two_runs()))
    assert list(out["oom at request"]) == ["-", "5"]
    assert out["peak inactive split"][0] == "32.00 MiB"
    assert "peak reserved" in out.columns


def test_samples_frame_and_export_round_trip(tmp_path: Path) -> None:
    runs = two_runs()
    frame = samples_frame(runs)
    assert len(frame) == 10 + 2 * 6
    assert list(frame.columns[:7]) == ["run", "conf", "effective_conf", "backend", "platform", "model", "simulated"]
    for suffix in ("csv", "parquet", "csv.gz"):
        path = export_samples(runs, tmp_path / f"samples.{suffix}")
        back = pd.read_parquet(path) if suffix == "parquet" else pd.read_csv(path)
        assert len(back) == len(frame)
        assert back["reserved_bytes"].tolist() == frame["reserved_bytes"].tolist()  # exact ints
        assert back["reserved_bytes"].dtype.kind == "i"
        ms = back[back["run"] == "ms"]
        assert ms["status"].tolist().count("oom") == 2  # both ranks failed at request 5
    one = export_samples(runs[0], tmp_path / "one.csv")
    assert len(pd.read_csv(one)) == 10


def test_export_errors(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="choose a .csv, .csv.gz or .parquet"):
        export_samples(two_runs(), tmp_path / "x.xlsx")
    (tmp_path / "x.csv").write_text("keep")
    with pytest.raises(ReportError, match="exists"):
        export_samples(two_runs(), tmp_path / "x.csv", overwrite=False)
    assert (tmp_path / "x.csv").read_text() == "keep"
    with pytest.raises(ReportError, match="no runs"):
        samples_frame([])


def _outside_plotlyjs(text: str) -> str:
    """The report with the one inline plotly.js bundle cut out (it names map-tile URLs as constants)."""
    scripts = list(re.finditer(r"<script type='text/javascript'>(.*?)</script>", text, flags=re.S))
    bundle = max(scripts, key=lambda m: len(m.group(1)))
    assert "plotly.js v" in bundle.group(1)[:2000]  # plotly.js's own banner: the bundle is embedded
    return text[: bundle.start()] + text[bundle.end():]


def test_html_report_is_self_contained(tmp_path: Path) -> None:
    _, snap, _ = sim_snapshot()
    runs = two_runs()
    path = write_html_report(runs, tmp_path / "r.html", snapshots={"ms": lambda k, r: snap})
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=", text, flags=re.I)
    assert "<script src=\"http" not in text and "<link" not in text.lower()
    rest = _outside_plotlyjs(text)
    assert not re.search(r"https?://", rest), re.findall(r"https?://[^\s'\"]+", rest)[:5]
    assert "cdn" not in rest.lower()
    assert text.count("plotly.js v") == 1  # embedded once, not per figure
    assert rest.count("Plotly.newPlot") == 3 + 2 * 2 + 1  # 3 comparisons, 2 per run, 1 inspector
    assert "Simulated:" in rest and "oom" in rest and "sliders" in rest


def test_html_report_errors(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="needs a .html"):
        write_html_report(two_runs(), tmp_path / "r.txt")
    with pytest.raises(ReportError, match="no runs"):
        html_report([])
    with pytest.raises(SnapshotSourceError, match="snapshot_at"):
        html_report(two_runs(), snapshots={"ms": 42})


def test_html_report_of_a_real_run_says_nothing_about_simulation() -> None:
    real = make_run(5, simulated=False, name="npu-run")
    text = _outside_plotlyjs(html_report([real]))
    assert "Simulated:" not in text and "— simulated" not in text and "(simulated)" not in text
    assert "<td>False</td>" in text  # the summary's simulated column
    assert "Memory report</title>" in text


def test_report_takes_the_snapshots_replay_steps_gives(tmp_path: Path) -> None:
    # the case from issue 10: the report and the inspector accept the same snapshot source
    from toolkit.replay import replay_steps
    from trace_paths import REAL_TRACE

    run, snaps = replay_steps(REAL_TRACE, steps=4)
    out = write_html_report([run], tmp_path / "r.html", snapshots={run.name: snaps})
    text = Path(out).read_text()
    assert "allocator" in text.lower() and text.count("plotly-graph-div") >= 2

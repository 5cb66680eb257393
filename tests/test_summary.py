"""toolkit.core.summary: one "OOM at" and one "peak reserved" for every view (table, report, scenario, repro)."""

from __future__ import annotations

from dataclasses import replace

from toolkit._testing.factories import make_run
from toolkit.core.summary import oom_at_request, summarize_run
from toolkit.core.units import MiB
from toolkit.viz.report import summary_frame


def test_oom_at_is_the_first_oom_sample() -> None:
    run = make_run(8, oom_at=5)
    assert oom_at_request(run) == 5 and summarize_run(run).oom_at_request == 5


def test_oom_without_a_sample_is_the_request_after_the_last_one() -> None:
    # a real engine that dies cannot answer the probe: its run ends "oom" after the last measured request
    ok = make_run(4)
    died = replace(ok, status="oom")
    assert oom_at_request(ok) is None and oom_at_request(died) == 4
    assert oom_at_request(replace(ok, status="oom", samples=())) == 0


def test_peak_reserved_counts_the_per_request_peak_over_all_ranks() -> None:
    run = make_run(6, ranks=(0, 1))
    expected = max(max(s.reserved_peak_bytes, s.reserved_bytes) for s in run.samples)
    assert summarize_run(run).peak_reserved_bytes == expected
    # make rank 1's value after one request the largest of all: the peak follows it
    big = replace(run.samples[3], reserved_bytes=expected + 5 * MiB)
    bumped = replace(run, samples=(*run.samples[:3], big, *run.samples[4:]))
    assert big.rank == 1 and summarize_run(bumped).peak_reserved_bytes == expected + 5 * MiB


def test_report_table_and_scenario_use_the_same_numbers() -> None:
    from toolkit.engines.scenarios import ConfSummary, ScenarioConf

    run = replace(make_run(5, ranks=(0, 1)), status="oom")
    row = summary_frame([run]).iloc[0]
    conf = ConfSummary.of(ScenarioConf(""), run, sent=9, run_path=None, seconds=0.0)
    s = summarize_run(run)
    assert int(row["oom_at_request"]) == conf.oom_at_request == s.oom_at_request == 5
    assert int(row["peak_reserved_bytes"]) == conf.peak_reserved_bytes == s.peak_reserved_bytes
    assert int(row["alloc_retries"]) == conf.alloc_retries == s.alloc_retries

"""Parallel sweeps give the serial sweep's results, on a process pool and on a local Dask cluster.

The serial sweep (``SerialExecutor``: each task runs at submit, in this process) is the reference: a
replay and a seeded simulated engine are deterministic, so any executor must return equal rows in the
same (task) order. The real recordings are swept where present; a simulated recording (bytes) is swept
everywhere, so the test never needs the shared traces to fail.
"""

from __future__ import annotations

import dataclasses
import pickle
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from toolkit.core.errors import ToolkitError
from toolkit.replay.sweep import SerialExecutor, map_tasks, sweep_replays
from toolkit.sim import SimDevice

from trace_paths import TRACES, needs_real_trace

CONFS = (None, "expandable_segments:True", "max_split_size_mb:64")


def _recording() -> bytes:
    """A small simulated recording (bytes of its snapshot): fragmentation-prone mixed sizes."""
    dev = SimDevice("cuda", "", capacity_bytes=8 << 30, context_bytes=0, torch_version="2.8")
    dev.record_history()
    live = []
    for i in range(400):
        live.append(dev.malloc((i * 7919 % 97 + 1) * (1 << 16)))
        if i % 3 == 2:
            dev.free(live.pop(i % len(live)))
    return pickle.dumps(dev.snapshot())


def _untimed(sample: object) -> object:
    # wall clock at the request, and the wall time the simulation took
    return dataclasses.replace(sample, started_at_ns=0, duration_ns=0)  # type: ignore[type-var]


def _exactness_independent(rows: list[dict]) -> None:
    # under the recorded conf a simulated recording replays exactly: a property of the simulator, not
    # of the executor, so a wrong row (e.g. results shuffled between tasks) shows up here too
    for row in rows:
        if row["asked_conf"] is None:
            assert row["exact"], row["fidelity"]


def test_process_pool_sweep_equals_serial_sweep() -> None:
    src = _recording()
    serial = sweep_replays([src], CONFS, executor=SerialExecutor(), progress=False)
    with ProcessPoolExecutor(max_workers=2) as pool:
        parallel = sweep_replays([src], CONFS, executor=pool, progress=False)
    assert parallel == serial
    assert [r["asked_conf"] for r in serial] == list(CONFS)  # task order, whatever finished first
    assert len({r["peak_reserved_bytes"] for r in serial}) > 1  # the confs really differ
    _exactness_independent(serial)


def test_default_executor_uses_a_local_process_pool() -> None:
    src = _recording()
    assert sweep_replays([src], CONFS[:2], progress=False) == sweep_replays(
        [src], CONFS[:2], executor=SerialExecutor(), progress=False)


@needs_real_trace
def test_sweep_of_real_recordings_equals_serial() -> None:
    assert TRACES is not None
    paths = [TRACES / "cuda-transformer-forward-a.pickle", TRACES / "cuda-torch29-training.pickle"]
    serial = sweep_replays(paths, CONFS[:2], executor=SerialExecutor(), progress=False)
    with ProcessPoolExecutor(max_workers=2) as pool:
        parallel = sweep_replays(paths, CONFS[:2], executor=pool, progress=False)
    assert parallel == serial
    assert [(r["source"], r["asked_conf"]) for r in serial] == [(p.name, c) for p in paths for c in CONFS[:2]]
    _exactness_independent(serial)


def test_dask_executor_gives_the_serial_results() -> None:
    distributed = pytest.importorskip(
        "dask.distributed", reason="dask[distributed] is not installed (pip install -e '.[dev]' brings it)")
    src = _recording()
    serial = sweep_replays([src], CONFS, executor=SerialExecutor(), progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        rows = sweep_replays([src], CONFS, executor=client.get_executor(), progress=False)
    assert rows == serial


def test_seed_scenario_on_a_process_pool_equals_the_serial_run(tmp_path: Path) -> None:
    from toolkit.engines.scenarios import seed_scenario

    confs = ("", "expandable_segments:True")
    serial = seed_scenario(4, confs, out_dir=tmp_path / "serial")
    with ProcessPoolExecutor(max_workers=2) as pool:
        parallel = seed_scenario(4, confs, out_dir=tmp_path / "parallel", executor=pool)
    assert list(parallel.runs) == list(serial.runs)
    for name in serial.runs:
        assert [_untimed(x) for x in parallel.runs[name].samples] == [_untimed(x) for x in serial.runs[name].samples]
    strip = ("seconds", "run_path")  # wall time, and the out_dir each was asked to write to
    for a, b in zip(parallel.summaries, serial.summaries):
        assert {k: v for k, v in dataclasses.asdict(a).items() if k not in strip} == {
            k: v for k, v in dataclasses.asdict(b).items() if k not in strip}
        assert Path(a.run_path).is_file() and Path(a.run_path).parent == tmp_path / "parallel" / "runs"


def test_progress_bar_stays_off_without_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    assert not sys.stderr.isatty()
    assert map_tasks(abs, [-1, -2, 3], SerialExecutor(), progress=True) == [1, 2, 3]
    assert capsys.readouterr().err == ""


def test_errors_reach_the_caller_and_bad_sources_are_refused() -> None:
    with pytest.raises(ZeroDivisionError):
        map_tasks(lambda x: 1 // x, [1, 0], SerialExecutor(), progress=False)
    with pytest.raises(ToolkitError, match="path or the snapshot's bytes"):
        sweep_replays([{"segments": []}], progress=False)  # type: ignore[list-item]

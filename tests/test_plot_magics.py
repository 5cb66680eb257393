"""%mem_plot, %mem_compare, %mem_inspect through a real IPython InteractiveShell."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from toolkit._testing.factories import make_run, sim_snapshot

from toolkit.notebook._plot_magics import PlotMagics, Views, resolve_runs
from toolkit.core.records import RunWriter
from toolkit.notebook.widgets import Inspector


@pytest.fixture
def shell():
    ip = InteractiveShell.instance()
    ip.register_magics(PlotMagics(ip))
    yield ip
    InteractiveShell.clear_instance()


def write_run(path: Path, run) -> Path:
    with RunWriter(path, run, fsync=False) as w:
        w.append(*run.samples)
        w.finish(run.status, run.message)
    return path


def test_mem_plot_a_name_and_a_file(shell, tmp_path: Path) -> None:
    shell.user_ns["a"] = make_run(7, name="a")
    fig = shell.run_line_magic("mem_plot", "a")
    assert fig.layout.meta["run"] == "a" and len(fig.data[0].x) == 7
    path = write_run(tmp_path / "b.jsonl", make_run(4, name="from-file"))
    views = shell.run_line_magic("mem_plot", f"a {path}")
    assert isinstance(views, Views) and [v.layout.meta["run"] for v in views] == ["a", "from-file"]
    frag = shell.run_line_magic("mem_plot", "a --fragmentation")
    assert frag.layout.meta["kind"] == "fragmentation"
    only = shell.run_line_magic("mem_plot", "a --metrics reserved_bytes,allocated_bytes")
    assert [t.meta["metric"] for t in only.data] == ["reserved_bytes", "allocated_bytes", "failed"]


def test_mem_plot_exports(shell, tmp_path: Path, capsys) -> None:
    shell.user_ns["a"] = make_run(5)
    shell.run_line_magic("mem_plot", f"a --html {tmp_path / 'r.html'} --export {tmp_path / 's.csv'}")
    assert (tmp_path / "r.html").stat().st_size > 1_000_000  # plotly.js inline
    assert (tmp_path / "s.csv").read_text().count("\n") == 6
    assert "wrote" in capsys.readouterr().out


def test_mem_plot_without_a_run_uses_the_session_or_says_what_to_do(shell) -> None:
    with pytest.raises(UsageError, match="name a run"):
        shell.run_line_magic("mem_plot", "")
    magics = PlotMagics(shell, session=SimpleNamespace(last_run=make_run(3, name="last")))
    shell.register_magics(magics)
    assert shell.run_line_magic("mem_plot", "").layout.meta["run"] == "last"


def test_mem_compare_runs_and_results_holding_runs(shell) -> None:
    shell.user_ns["a"] = make_run(5, conf="", name="a")
    shell.user_ns["b"] = make_run(5, conf="expandable_segments:True", name="b")
    views = shell.run_line_magic("mem_compare", "a b --metric non_torch_bytes")
    fig, table = views
    assert [t.name for t in fig.data] == ["defaults (conf unset)", "expandable_segments:True"]
    assert fig.layout.meta["metric"] == "non_torch_bytes" and list(table["run"]) == ["a", "b"]
    shell.user_ns["seed"] = SimpleNamespace(runs={"x": make_run(3, name="x"), "y": make_run(3, name="y")})
    fig = shell.run_line_magic("mem_compare", "seed --no-table")
    assert fig.layout.meta["runs"] == ["x", "y"]


def test_mem_inspect_a_watched_run_and_explicit_snapshots(shell) -> None:
    _, snap, _ = sim_snapshot()
    watched = SimpleNamespace(run=make_run(4, name="w"), snapshots=SimpleNamespace(snapshot_at=lambda k, r: snap))
    shell.user_ns["watched"] = watched
    ins = shell.run_line_magic("mem_inspect", "watched --request 2")
    assert isinstance(ins, Inspector) and ins.request == 2 and ins.snapshot() is snap
    shell.user_ns["run"] = make_run(4)
    shell.user_ns["snaps"] = {1: snap}
    ins = shell.run_line_magic("mem_inspect", "run --snapshots snaps --request 1 --static --scale fraction")
    assert ins.mode == "static" and ins.scale == "fraction" and ins.snapshot() is snap


@pytest.mark.parametrize(
    ("magic", "line", "fragment"),
    [
        ("mem_plot", "nosuch", "nosuch: no variable of that name holds a Run, and no run file"),
        ("mem_plot", "x", "x is not a Run nor a result holding runs (it is of type int)"),
        ("mem_plot", "a --metrics bogus", "unknown metric 'bogus'"),
        ("mem_plot", "a --export out.xlsx", "choose a .csv"),
        ("mem_plot", "a --bogus", "unrecognized arguments"),
        ("mem_plot", "'unclosed", "could not read the line"),
        ("mem_compare", "a", "at least two runs"),
        ("mem_compare", "", "the following arguments are required"),
        ("mem_compare", "a a --metric bogus", "unknown metric"),
        ("mem_compare", "a a --rank 9", "no samples of rank 9"),
        ("mem_inspect", "a --snapshots nope", "no variable 'nope'"),
        ("mem_inspect", "a --rank 3", "no rank 3"),
        ("mem_inspect", "a --snapshots x", "snapshot_at"),
        ("mem_inspect", "seed", "holds 2 runs"),
        ("mem_inspect", "a --scale log", "invalid choice"),
    ],
)
def test_bad_input_is_one_usage_error_line(shell, magic: str, line: str, fragment: str) -> None:
    shell.user_ns.update(a=make_run(3), x=3, seed=SimpleNamespace(runs=[make_run(2), make_run(2)]))
    with pytest.raises(UsageError) as err:
        shell.run_line_magic(magic, line)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_a_broken_run_file_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "sample"}\n')
    with pytest.raises(UsageError, match="not a readable run file"):
        resolve_runs([str(bad)], {})
    pickled = tmp_path / "evil.jsonl"
    pickled.write_bytes(b"\x80\x04\x95")  # a pickle is never loaded as one
    with pytest.raises(UsageError, match="not a readable run file"):
        resolve_runs([str(pickled)], {})


def test_help_text_comes_from_the_parsers() -> None:
    assert "usage: mem_compare" in (PlotMagics.mem_compare.__doc__ or "")
    assert "--snapshots NAME" in (PlotMagics.mem_inspect.__doc__ or "")

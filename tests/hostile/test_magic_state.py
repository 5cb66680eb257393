"""Magics validate before they change any state (real IPython shell, the extension as a user loads it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from toolkit.workload.photos import generate_photo_set


@pytest.fixture
def shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    for var in ("PYTORCH_NPU_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"):
        monkeypatch.delenv(var, raising=False)
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "toolkit")
    yield ip
    ip.run_line_magic("unload_ext", "toolkit")
    InteractiveShell.clear_instance()


def _session(ip):
    return ip.magics_manager.registry["ToolkitMagics"].session


def test_a_refused_conf_does_not_switch_the_platform(shell) -> None:
    with pytest.raises(UsageError):
        shell.run_line_magic("alloc_conf", "--platform cuda expandable_segmentz:True")
    with pytest.raises(UsageError):
        shell.run_line_magic("alloc_conf", "--platform cuda --version 99.9")
    assert _session(shell).platform == "npu"
    shell.run_line_magic("alloc_conf", "expandable_segments:True")
    assert os.environ["PYTORCH_NPU_ALLOC_CONF"] == "expandable_segments:True"
    assert "PYTORCH_CUDA_ALLOC_CONF" not in os.environ


@pytest.mark.parametrize("var", ["get_ipython", "__builtins__", "In", "Out", "_", "_i1", "exit", "print", "for"])
def test_as_refuses_ipython_and_python_names(shell, var: str) -> None:
    with pytest.raises(UsageError, match="--as"):
        shell.run_line_magic("ascend_llm", f"Qwen/Qwen3-VL-8B-Instruct --backend sim --as {var}")
    assert callable(shell.user_ns["get_ipython"])
    assert shell.magics_manager.registry["EngineMagics"].llm_session.engine is None  # nothing started


@pytest.mark.parametrize("name", ["../..", "../escape", "/tmp/abs", "a/b", ".hidden"])
def test_run_names_never_leave_the_run_folder(shell, name: str) -> None:
    with pytest.raises(UsageError, match="--name"):
        shell.run_line_magic("ascend_llm", f"Qwen/Qwen3-VL-8B-Instruct --backend sim --name {name}")


def test_bare_mem_plot_finds_the_run_made_through_the_bound_engine(shell, tmp_path: Path) -> None:
    photos = generate_photo_set(tmp_path / "photos", 3, seed=1)
    with pytest.raises(UsageError, match="name a run"):
        shell.run_line_magic("mem_plot", "")
    shell.run_line_magic("ascend_llm", "Qwen/Qwen3-VL-8B-Instruct --backend sim")
    run = shell.user_ns["llm"].run_images(photos[:2], progress=False, max_tokens=8)  # as the README shows
    fig = shell.run_line_magic("mem_plot", "")
    assert run.name in str(fig.layout.title.text) or len(fig.data) > 0
    assert list((tmp_path / "runs").glob("*.jsonl"))  # the run file stayed in runs/
    with pytest.raises(UsageError, match="unknown metric 'status'"):
        shell.run_line_magic("mem_plot", "--metrics status")
    with pytest.raises(UsageError, match="mem_plot"):
        shell.run_line_magic("mem_plot", "--export /proc/forbidden/x.csv")

"""Every python/ipython code block of README.md runs exactly as written in a fresh IPython shell.

A new user pastes the README's "In a notebook" block into a cell, or line by line: both must work, with
the trailing ``# comments``, making its own photos and the runs it compares. Each block runs in a real
``InteractiveShell`` (the same input transformations as a Jupyter kernel: ``%magic`` lines, comments), in
an empty temporary folder, with no allocator variable set. Then a few things the block promises are checked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```(python|ipython)\n(.*?)^```", re.S | re.M)


def readme_blocks() -> list[str]:
    return [code for _, code in BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))]


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[InteractiveShell]:
    """A new shell in an empty folder, no allocator conf in the environment, figures not opened anywhere."""
    import plotly.io as pio

    for var in [v for v in os.environ if v.startswith(("PYTORCH_", "MEMLAB_"))]:
        monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pio.renderers, "default", "json")  # a terminal shell would open a browser tab
    InteractiveShell.clear_instance()
    shell = InteractiveShell.instance()
    shell.history_manager.enabled = False
    yield shell
    if "llm" in shell.user_ns:
        shell.run_line_magic("ascend_llm", "--stop") if shell.user_ns.get("llm") is not None else None
    InteractiveShell.clear_instance()
    # the magics wrote into os.environ; monkeypatch restores only what it saw, so drop the rest
    for var in [v for v in os.environ if v.startswith("PYTORCH_")]:
        del os.environ[var]


def _run(shell: InteractiveShell, code: str) -> Any:
    result = shell.run_cell(code, store_history=False)
    err = result.error_before_exec or result.error_in_exec
    if err is not None:
        pytest.fail(f"README block failed at:\n{code}\n{type(err).__name__}: {err}", pytrace=False)
    return result.result


def test_readme_has_the_notebook_block() -> None:
    blocks = readme_blocks()
    assert blocks and any("%load_ext toolkit" in b for b in blocks)


@pytest.mark.parametrize("block", range(len(readme_blocks())))
def test_block_runs_as_one_cell(fresh: InteractiveShell, block: int) -> None:
    _run(fresh, readme_blocks()[block])
    _check_notebook_block(fresh)


@pytest.mark.parametrize("block", range(len(readme_blocks())))
def test_block_runs_pasted_line_by_line(fresh: InteractiveShell, block: int) -> None:
    results = {}
    for line in readme_blocks()[block].splitlines():
        if line.strip():
            results[line.split("#")[0].strip()] = _run(fresh, line)
    _check_notebook_block(fresh, results)


def _check_notebook_block(shell: InteractiveShell, results: dict[str, Any] | None = None) -> None:
    """What the "In a notebook" block promises, beyond running."""
    ns = shell.user_ns
    if "run_default" not in ns:
        return
    from toolkit.core.records import Run, load_run
    from toolkit.notebook.widgets import Inspector

    default, expandable = ns["run_default"], ns["run_expandable"]
    assert isinstance(default, Run) and isinstance(expandable, Run)
    # the one-call --platform cuda --version 2.9 did not stay: both engines ran on npu with the conf asked for
    assert default.platform == expandable.platform == "npu"
    assert default.effective_conf == "expandable_segments:False"
    assert expandable.effective_conf == "expandable_segments:True"
    assert default.status == expandable.status == "ok" and default.requests_served == 20
    # requests are numbered from 0 in each run, and each run says where it is on disk
    assert min(s.request_index for s in expandable.samples) == 0
    assert default.path is not None and load_run(default.path).samples == default.samples
    if results is not None:  # %mem_inspect after run_images shows the allocator state, not an empty view
        inspector = results["%mem_inspect run_default"]
        assert isinstance(inspector, Inspector) and inspector.snapshot() is not None
        assert inspector.snapshot()["segments"]

"""The layer contracts (pyproject.toml [tool.importlinter]) hold, and would fail on a forbidden import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (pip install -e '.[dev]')")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    # the copy is imported from its own folder, never the installed toolkit
    return subprocess.run([str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          capture_output=True, text=True, timeout=180, env={"PYTHONPATH": str(root), "PATH": ""})


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    shutil.copytree(ROOT / "toolkit", root / "toolkit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_tree_keeps_every_contract(tree_copy: Path) -> None:
    proc = _lint(tree_copy)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.mark.parametrize(("module", "line", "broken"), [
    ("toolkit/sim/_forbidden.py", "import torch\n", "pure core never imports torch"),
    ("toolkit/worker/_forbidden.py", "import toolkit.notebook.widgets\n", "worker side never imports the notebook"),
    ("toolkit/core/_forbidden.py", "import toolkit.engines.sim\n", "Layers"),
])
def test_a_forbidden_import_breaks_a_contract(tree_copy: Path, module: str, line: str, broken: str) -> None:
    path = tree_copy / module
    path.write_text(line)
    try:
        proc = _lint(tree_copy)
    finally:
        path.unlink()
    assert proc.returncode != 0
    assert broken in proc.stdout and "BROKEN" in proc.stdout

"""`vllm_ascend/` in this repository must never shadow the real vllm-ascend plugin (docs/design.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_folder_exists_and_is_not_a_package():
    folder = REPO / "vllm_ascend"
    assert folder.is_dir()
    assert not (folder / "__init__.py").exists()
    assert not list(folder.glob("*.so")), "an extension module would make the folder importable"


def test_running_from_repo_root_imports_the_real_plugin(tmp_path):
    real = tmp_path / "site" / "vllm_ascend"
    real.mkdir(parents=True)
    (real / "__init__.py").write_text("REAL_PLUGIN = True\n")
    code = "import vllm_ascend, sys; print(vllm_ascend.__file__); print(getattr(vllm_ascend, 'REAL_PLUGIN', False))"
    # cwd = repo root puts the repository (and its vllm_ascend/ folder) first on sys.path, as in a notebook.
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[0] == str(real / "__init__.py")
    assert out[1] == "True"


def test_without_the_plugin_the_folder_is_at_most_an_empty_namespace():
    code = "import importlib.util as u; s = u.find_spec('vllm_ascend'); print(s is None or s.origin is None)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"

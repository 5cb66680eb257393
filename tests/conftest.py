"""Shared test set-up: markers that skip with a loud reason, and the slow fixtures computed once.

- ``@pytest.mark.torch``: the test imports torch (the CPU build the test command installs); without torch it is
  skipped, never errored, so the pure suite runs on a machine with nothing but the core deps.
- The seed scenario (300 photos x 4 confs, the slowest fixture) is computed once per test session. Its tests
  share one xdist group (``--dist loadgroup``), so under ``-n 2`` it is not computed on both workers.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

HAS_TORCH = importlib.util.find_spec("torch") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_torch = pytest.mark.skip(reason="TORCH MISSING: this test needs torch (the test command installs "
                                         "torch==2.13.0, CPU build)")
    for item in items:
        if "torch" in item.keywords and not HAS_TORCH:
            item.add_marker(skip_torch)


@pytest.fixture(scope="session")
def seed_result(tmp_path_factory: pytest.TempPathFactory):  # -> ScenarioResult
    """The seed scenario of vllm-ascend PR #5855 on the simulated NPU, once per session (see the module doc)."""
    from toolkit.engines.scenarios import seed_scenario

    return seed_scenario(300, out_dir=tmp_path_factory.mktemp("seed"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]

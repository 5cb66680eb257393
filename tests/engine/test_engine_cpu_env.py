"""The CPU-test-environment fix for torchvision (``toolkit.engines.vllm._cpu_env``) and the tiny model."""

from __future__ import annotations

import importlib.metadata
import sys

import pytest

from engine_helpers import run_scenario
from toolkit.engines.vllm import _cpu_env


def test_the_fix_is_inert_outside_a_cpu_torch(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "2.13.0+cu130")
    before = list(sys.meta_path)
    assert _cpu_env.activate() is False
    assert sys.meta_path == before
    with pytest.raises(SystemExit, match="not a \\+cpu build"):
        monkeypatch.setattr(sys, "prefix", "/somewhere/venv")
        _cpu_env.install()


def test_the_finder_only_touches_torchvision_meta_registrations():
    finder = _cpu_env._Finder()
    assert finder.find_spec("json", None) is None
    assert finder.find_spec("torchvision", None) is None


@pytest.mark.slow
def test_cpu_engine_env_imports_torchvision_and_builds_a_deterministic_tokenizer(vllm_python, tmp_path):
    facts = run_scenario(vllm_python, "tokenizer_determinism", tmp_path, tmp_path, tmp_path / "facts.json")
    assert facts["torchvision_ops_loaded"] is False  # the CUDA build's ops cannot load here...
    assert facts["same"] and facts["vocab"] == facts["want_vocab"]  # ... yet torchvision imported

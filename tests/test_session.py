"""The plain API behind %alloc_conf: validate, write where the next engine reads, restore, refuse when too late."""

from __future__ import annotations

import sys
import types

import pytest

from toolkit.conf import ConfError
from toolkit.core.errors import TooLateError, ToolkitError
from toolkit.notebook.conf_session import Session

NPU = "PYTORCH_NPU_ALLOC_CONF"


def test_construction_touches_nothing():
    env = {"PYTORCH_ALLOC_CONF": "x"}
    Session(env)
    assert env == {"PYTORCH_ALLOC_CONF": "x"}


def test_set_conf_writes_canonical_string_and_moves_competitor_away():
    env = {"PYTORCH_ALLOC_CONF": "max_split_size_mb:256", "HOME": "/root"}
    s = Session(env)
    status = s.set_conf("expandable_segments:True, page_size:1g")
    assert env[NPU] == str(status.effective.conf)
    assert "PYTORCH_ALLOC_CONF" not in env  # torch_npu master refuses both variables set
    assert status.effective.variable == NPU
    assert status.effective.conf.expandable_segments is True
    assert any("unset PYTORCH_ALLOC_CONF" in n for n in status.notes)


def test_reset_restores_exactly():
    env = {"PYTORCH_ALLOC_CONF": "max_split_size_mb:256"}
    s = Session(env)
    s.set_conf("expandable_segments:True")
    s.set_conf("expandable_segments:False")
    s.reset_conf()
    assert env == {"PYTORCH_ALLOC_CONF": "max_split_size_mb:256"}
    assert "nothing to reset" in s.reset_conf().notes[0]


def test_invalid_conf_changes_nothing():
    env: dict[str, str] = {}
    with pytest.raises(ConfError):
        Session(env).set_conf("expandable_segments:True,max_split_size_mb:256")  # NPU: exclusive
    assert env == {}


def test_check_does_not_touch_environment():
    env: dict[str, str] = {}
    status = Session(env).check_conf("expandable_segments:True", platform="cuda", version="2.9")
    assert env == {} and status.conf.platform == "cuda"


def test_cuda_platform_writes_cuda_variable():
    env = {"PYTORCH_HIP_ALLOC_CONF": "a"}
    Session(env, platform="cuda").set_conf("max_split_size_mb:128")
    assert env == {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:128"}


def test_unknown_platform_is_clear():
    with pytest.raises(ToolkitError, match="unknown platform"):
        Session({}, platform="tpu")


def test_status_of_the_npu_shows_the_vllm_ascend_rewrite():
    status = Session({NPU: "page_size:1g"}).status()
    assert status.after_policy is not None
    assert status.after_policy.upstream.after[NPU] == "page_size:1g,expandable_segments:True"
    assert status.after_policy.effective.conf.expandable_segments is True
    text = str(status)
    assert "page_size:1g" in text and "expandable_segments" in text


@pytest.fixture
def npu_already_initialised(monkeypatch):
    mod = types.ModuleType("torch_npu")
    mod.npu = types.SimpleNamespace(is_initialized=lambda: True)
    monkeypatch.setitem(sys.modules, "torch_npu", mod)


def test_too_late_in_process_engine_is_refused(npu_already_initialised):
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    with pytest.raises(TooLateError, match="Restart the kernel"):
        Session(env).set_conf("expandable_segments:True")
    assert NPU not in env


def test_too_late_for_this_kernel_still_reaches_engine_processes(npu_already_initialised):
    env: dict[str, str] = {}
    status = Session(env).set_conf("expandable_segments:True")
    assert env[NPU] == "expandable_segments:True"
    assert any("engine processes started from now on" in n for n in status.notes)

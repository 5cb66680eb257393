"""Too-late detection reads only what is already imported, and the session refuses to pretend."""

from __future__ import annotations

import types

import pytest

from toolkit.conf import guard


def fake_torch(cuda_init: bool) -> types.ModuleType:
    torch = types.ModuleType("torch")
    torch.cuda = types.SimpleNamespace(is_initialized=lambda: cuda_init)
    return torch


def fake_torch_npu(npu_init: bool) -> types.ModuleType:
    mod = types.ModuleType("torch_npu")
    mod.npu = types.SimpleNamespace(is_initialized=lambda: npu_init)
    return mod


def test_nothing_imported_means_nothing_initialised():
    state = guard.inspect_allocators({})
    assert state == guard.AllocatorState(False, False, False, False)
    assert state.initialized_platforms == ()


def test_imported_but_untouched_is_not_too_late():
    state = guard.inspect_allocators({"torch": fake_torch(False), "torch_npu": fake_torch_npu(False)})
    assert state.torch_imported and state.torch_npu_imported
    assert state.initialized_platforms == ()


@pytest.mark.parametrize(("cuda", "npu", "expected"), [(True, False, ("cuda",)), (False, True, ("npu",)),
                                                      (True, True, ("npu", "cuda"))])
def test_initialised_devices_are_reported(cuda, npu, expected):
    state = guard.inspect_allocators({"torch": fake_torch(cuda), "torch_npu": fake_torch_npu(npu)})
    assert state.initialized_platforms == expected


def test_a_broken_build_does_not_break_the_check():
    torch = types.ModuleType("torch")
    torch.cuda = types.SimpleNamespace(is_initialized=lambda: 1 / 0)
    assert guard.inspect_allocators({"torch": torch}).cuda_initialized is False


def test_engine_mode_from_environment():
    assert guard.engine_runs_in_process({"VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    assert not guard.engine_runs_in_process({})
    assert "Restart the kernel" in guard.too_late_message("npu", in_process=True)
    assert "engine processes started from now on" in guard.too_late_message("cuda", in_process=False)

"""One definition of the engine knobs: EngineArgs (vLLM's) and SimOptions (the simulator's), for both engines."""

from __future__ import annotations

import pytest

from toolkit.core.errors import EngineError
from toolkit.engines.sim import SimEngine, SimOptions
from toolkit.workload.engine_args import SIM_DEFAULTS, EngineArgs


def test_sim_engine_takes_the_dataclasses_or_their_fields_by_name() -> None:
    a = SimEngine(tensor_parallel_size=2, max_model_len=8192, memory_fraction=1.0, device_capacity_bytes=64 << 30)
    b = SimEngine(engine_args=EngineArgs(tensor_parallel_size=2, max_model_len=8192),
                  sim=SimOptions(memory_fraction=1.0, device_capacity_bytes=64 << 30))
    assert a.engine_args == b.engine_args and a.options == b.options
    assert a.engine_args.max_num_seqs == SIM_DEFAULTS["max_num_seqs"]  # unset: the simulator's default
    assert a.budget.num_blocks == b.budget.num_blocks


def test_an_unknown_knob_is_one_line_with_the_nearest_name() -> None:
    with pytest.raises(EngineError, match="tensor_parallel_size") as err:
        SimEngine(tensor_parallel_sise=2)
    assert "\n" not in str(err.value)


def test_the_real_engine_refuses_the_same_typo_before_starting_anything() -> None:
    from toolkit.engines.vllm.engine import VllmEngine

    with pytest.raises(EngineError, match="did you mean max_model_len"):
        VllmEngine("/no/model", backend="cpu", max_model_lenn=4096)


def test_a_real_engine_passes_only_what_was_given() -> None:
    args = EngineArgs(tensor_parallel_size=2, limit_mm_per_prompt={"image": 1})
    assert args.given() == {"tensor_parallel_size": 2, "limit_mm_per_prompt": {"image": 1}}
    assert set(EngineArgs.SIMULATED) <= set(EngineArgs.names())


def test_the_driver_layer_can_be_switched_off_for_an_a_b_comparison() -> None:
    on, off = SimEngine(max_model_len=8192), SimEngine(max_model_len=8192, driver=False)
    assert on.device.driver_heaps() and not off.device.driver_heaps()

"""Request rounding, pool choice and segment sizes of the simulated allocators (docs/allocator.md §2.3-2.5)."""

from __future__ import annotations

import pytest

from toolkit.sim import SimDevice
from toolkit.sim.rounding import allocation_size, divisions_for, round_size, roundup_power2_next_division

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


@pytest.mark.parametrize(
    ("nbytes", "pad", "expected"),
    [
        (1, 0, 512),
        (512, 0, 512),
        (513, 0, 1024),
        (1000, 0, 1024),
        (MiB, 0, MiB),
        (5_000_000, 0, 5_000_192),
        # NPU: +32 B before rounding (spec 2.3): 512 -> 544 -> 1024; 1 MiB -> 1 MiB + 512
        (480, 32, 512),
        (481, 32, 1024),
        (512, 32, 1024),
        (MiB, 32, MiB + 512),
    ],
)
def test_round_size(nbytes: int, pad: int, expected: int) -> None:
    assert round_size(nbytes, pad_bytes=pad) == expected


def test_roundup_power2_next_division() -> None:
    assert roundup_power2_next_division(1200 * MiB + 1, 4) == 1280 * MiB  # steps of 256 MiB above 1 GiB
    assert roundup_power2_next_division(1280 * MiB, 4) == 1280 * MiB  # already on a step
    assert roundup_power2_next_division(GiB, 4) == GiB  # powers of two stay
    assert roundup_power2_next_division(3 * MiB, 2) == 3 * MiB  # 2 divisions of [2, 4) MiB: 2, 3
    assert roundup_power2_next_division(3 * MiB + 1, 2) == 4 * MiB
    assert roundup_power2_next_division(700, 1024) == 1024  # step would be 0: next power of two


def test_divisions_interval_index() -> None:
    table = tuple(range(16))
    assert divisions_for(MiB, table) == 0  # < 2 MiB -> interval 0
    assert divisions_for(2 * MiB - 1, table) == 0
    assert divisions_for(2 * MiB, table) == 1
    assert divisions_for(256 * MiB, table) == 8
    assert divisions_for(64 * GiB, table) == 15  # clamped


def test_roundup_table_guard_and_use() -> None:
    table = (4,) * 16
    # guard n > 512 * d: small requests stay 512-rounded
    assert round_size(1500, table) == 1536
    assert round_size(2049, table) == 2560  # floor 2048, step 512 -> 2560
    assert round_size(600 * MiB + 3, table) == 640 * MiB
    dev = SimDevice("cuda", "roundup_power2_divisions:4", torch_version="2.7", context_bytes=0)
    dev.malloc(600 * MiB + 3)
    assert dev.memory_allocated() == 640 * MiB
    # the list form: [256:1,512:2,>:8] -> below 512 MiB 1 division, [512 MiB, 1 GiB) 2, above 8
    dev = SimDevice("cuda", "roundup_power2_divisions:[256:1,512:2,>:8]", context_bytes=0)
    dev.malloc(600 * MiB)
    assert dev.memory_allocated() == 768 * MiB  # 2 divisions in [512, 1024) MiB
    dev.malloc(300 * MiB + 1)
    assert dev.memory_allocated() == 768 * MiB + 300 * MiB + 512  # 1 division: plain 512 rounding


@pytest.mark.parametrize(
    ("rounded", "expected"),
    [(512, 2 * MiB), (MiB, 2 * MiB), (MiB + 512, 20 * MiB), (10 * MiB - 512, 20 * MiB), (10 * MiB, 10 * MiB),
     (10 * MiB + 1, 12 * MiB), (33 * MiB, 34 * MiB)],
)
def test_allocation_size(rounded: int, expected: int) -> None:
    assert allocation_size(rounded) == expected


def test_allocation_size_options() -> None:
    assert allocation_size(3 * MiB, large_segment_bytes=64 * MiB) == 64 * MiB
    assert allocation_size(3 * MiB, page_1g=True) == GiB  # NPU page_size:1g, large pool
    assert allocation_size(3 * GiB + 1, page_1g=True) == 4 * GiB


def test_pool_choice_cuda_vs_npu_pad() -> None:
    """A 1 MiB tensor is small-pool on CUDA but large-pool (20 MiB segment) on NPU because of the pad."""
    cuda = SimDevice("cuda", "", context_bytes=0)
    cuda.malloc(MiB)
    stats = cuda.memory_stats()
    assert stats["reserved_bytes.small_pool.current"] == 2 * MiB
    assert stats["reserved_bytes.large_pool.current"] == 0
    npu = SimDevice("npu", "", context_bytes=0)
    npu.malloc(MiB)
    stats = npu.memory_stats()
    assert stats["reserved_bytes.small_pool.current"] == 0
    assert stats["reserved_bytes.large_pool.current"] == 20 * MiB
    assert stats["allocated_bytes.large_pool.current"] == MiB + 512
    npu.malloc(480)
    assert npu.memory_stats()["allocated_bytes.small_pool.current"] == 512
    assert SimDevice("npu", "", npu_pad_bytes=0, context_bytes=0).settings.pad_bytes == 0


def test_large_segment_size_and_1g_pages() -> None:
    dev = SimDevice("cuda", "large_segment_size_mb:64", torch_version="2.11", context_bytes=0)
    dev.malloc(3 * MiB)
    assert dev.memory_reserved() == 64 * MiB
    npu = SimDevice("npu", "page_size:1g", context_bytes=0)
    npu.malloc(3 * MiB)
    npu.malloc(1000)  # the small pool keeps 2 MiB segments
    assert npu.memory_reserved() == GiB + 2 * MiB

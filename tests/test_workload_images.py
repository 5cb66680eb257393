"""Qwen-VL image pipeline: smart_resize, patch grid and token counts against transformers' behaviour."""

from __future__ import annotations

import pytest

from toolkit.workload.images import ImageSizeError, ProcessorSpec, image_grid, largest_image_grid, smart_resize
from toolkit.workload.presets import load_preset

QWEN3 = load_preset("Qwen/Qwen3-VL-8B-Instruct").processor
QWEN25 = load_preset("Qwen/Qwen2.5-VL-7B-Instruct").processor


def test_factors_follow_patch_times_merge() -> None:
    assert QWEN3.factor == 32 and QWEN25.factor == 28
    assert (QWEN3.min_pixels, QWEN3.max_pixels) == (256 * 256, 4096 * 4096)
    assert (QWEN25.min_pixels, QWEN25.max_pixels) == (56 * 56, 28 * 28 * 16384)


@pytest.mark.parametrize(
    ("h", "w", "factor", "lo", "hi", "expected"),
    [
        # 12 MP photo, Qwen3-VL: 3024/32 = 94.5 -> Python's round gives 94 (banker's rounding), not 95
        (3024, 4032, 32, 65536, 16777216, (3008, 4032)),
        (4032, 3024, 32, 65536, 16777216, (4032, 3008)),
        # same photo, Qwen2.5-VL published bounds: both sides already multiples of 28, under max
        (3024, 4032, 28, 3136, 12845056, (3024, 4032)),
        # Qwen2-VL processor defaults (max 28*28*1280): scaled down by beta = sqrt(hw/max), floored
        (3024, 4032, 28, 56 * 56, 28 * 28 * 1280, (840, 1148)),
        # too small: scaled up by sqrt(min/hw) and ceiled: 100x100 on Qwen3-VL -> 256x256
        (100, 100, 32, 65536, 16777216, (256, 256)),
        # over the max: a 24 MP camera photo on Qwen3-VL
        (4000, 6000, 32, 65536, 16777216, (3328, 4992)),  # beta=1.19604: 3344.4->3328, 5016.6->4992
        # vLLM's profiling image: 9999999^2 resized under the limit
        (9999999, 9999999, 32, 65536, 16777216, (4096, 4096)),
    ],
)
def test_smart_resize_vectors(h, w, factor, lo, hi, expected) -> None:
    got = smart_resize(h, w, factor, lo, hi)
    assert got == expected
    assert got[0] % factor == 0 and got[1] % factor == 0
    assert lo <= got[0] * got[1] <= hi


def test_extreme_aspect_ratio_is_rejected_like_upstream() -> None:
    with pytest.raises(ImageSizeError, match="aspect ratio must be smaller than 200"):
        smart_resize(10, 2010, 28)
    assert smart_resize(10, 2000, 28, 3136, 12845056)  # exactly 200 is allowed
    with pytest.raises(ImageSizeError, match="positive"):
        smart_resize(0, 10)


def test_grid_and_tokens_of_a_12mp_photo() -> None:
    g = image_grid(4032, 3024, QWEN3)
    assert (g.resized_width_px, g.resized_height_px) == (4032, 3008)
    assert (g.grid_t, g.grid_h, g.grid_w) == (1, 188, 252)
    assert g.num_patches == 47376 and g.visual_tokens == 11844
    assert g.patch_dim == 3 * 2 * 16 * 16
    g25 = image_grid(4032, 3024, QWEN25)
    assert (g25.grid_h, g25.grid_w, g25.visual_tokens) == (216, 288, 15552)
    assert g25.patch_dim == 3 * 2 * 14 * 14


def test_largest_image_is_what_vllm_profiles_with() -> None:
    g3 = largest_image_grid(QWEN3)
    assert (g3.resized_width_px, g3.resized_height_px, g3.visual_tokens) == (4096, 4096, 16384)
    g25 = largest_image_grid(QWEN25)
    assert (g25.resized_width_px, g25.visual_tokens) == (3584, 16384)
    # no image the processor accepts has more tokens
    for w, h in [(8064, 2304), (6000, 4000), (4032, 3024), (1179, 2556), (100, 100)]:
        assert image_grid(w, h, QWEN3).visual_tokens <= g3.visual_tokens


def test_spec_is_plain_data() -> None:
    spec = ProcessorSpec(patch_size=14, merge_size=2, temporal_patch_size=2, min_pixels=3136, max_pixels=1003520)
    assert image_grid(448, 448, spec).visual_tokens == (448 // 28) ** 2

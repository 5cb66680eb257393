"""The image pipeline of the Qwen-VL family: resize rule, patch grid, visual-token count (pure).

What a real processor does with a photo decides how big every activation of the vision encoder is, so
this follows the transformers source exactly:

* ``smart_resize`` is ``transformers.models.qwen2_vl.image_processing_qwen2_vl.smart_resize`` (used by
  Qwen2-VL, Qwen2.5-VL and, through ``Qwen2VLImageProcessorFast``, Qwen3-VL): both sides become
  multiples of ``factor = patch_size * merge_size`` (28 for Qwen2/2.5-VL's 14-px patches, 32 for
  Qwen3-VL's 16-px patches) by Python's ``round`` (banker's rounding: 94.5 -> 94), then, if the area is
  above ``max_pixels`` both sides are scaled by ``beta = sqrt(h*w/max_pixels)`` and *floored* to the
  factor (never below one factor), or if below ``min_pixels`` scaled up and *ceiled*. Aspect ratios
  above 200 are rejected, as upstream does.
* One still image becomes ``grid_t = 1`` temporal patch (the processor repeats the frame to
  ``temporal_patch_size`` = 2 and groups by 2), ``grid_h = H / patch``, ``grid_w = W / patch``;
  ``pixel_values`` has ``grid_t*grid_h*grid_w`` rows of ``3 * temporal * patch * patch`` values
  (``_preprocess`` in the same file), and the merger turns every ``merge_size**2`` patches into one
  visual token, so ``visual_tokens = patches // merge_size**2``.
* Default pixel bounds come from the models' published ``preprocessor_config.json`` (see the presets):
  Qwen2/2.5-VL ``min_pixels=3136`` (56*56), ``max_pixels=12845056`` (28*28*16384); Qwen3-VL
  ``size={"shortest_edge": 65536, "longest_edge": 16777216}`` (256*256 .. 4096*4096).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from toolkit.core.errors import ToolkitError


class ImageSizeError(ToolkitError, ValueError):
    """An image the Qwen-VL processors would reject (too thin or too small)."""


@dataclass(frozen=True, slots=True)
class ProcessorSpec:
    """The image-processor numbers that shape the vision input."""

    patch_size: int
    merge_size: int
    temporal_patch_size: int
    min_pixels: int
    max_pixels: int
    in_channels: int = 3

    @property
    def factor(self) -> int:
        """Both resized sides are multiples of this (patch size x merge size)."""
        return self.patch_size * self.merge_size


@dataclass(frozen=True, slots=True)
class ImageGrid:
    """What the vision encoder sees for one image."""

    width_px: int  # original
    height_px: int
    resized_width_px: int
    resized_height_px: int
    grid_t: int
    grid_h: int
    grid_w: int
    merge_size: int
    patch_dim: int  # values per pixel_values row: channels * temporal * patch * patch

    @property
    def num_patches(self) -> int:
        """Rows of ``pixel_values`` = the vision encoder's sequence length."""
        return self.grid_t * self.grid_h * self.grid_w

    @property
    def visual_tokens(self) -> int:
        """``<|image_pad|>`` tokens in the prompt = rows of the merger's output."""
        return self.num_patches // (self.merge_size * self.merge_size)

    @property
    def resized_key(self) -> tuple[int, int]:
        """Images with the same key produce the same allocation program."""
        return (self.resized_height_px, self.resized_width_px)


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 14 * 14 * 4 * 1280) -> tuple[int, int]:
    """Return ``(resized_height, resized_width)`` exactly as transformers' Qwen2-VL processor does.

    Example: a 12-megapixel phone photo on Qwen3-VL (factor 32, max 16777216):
    ``smart_resize(3024, 4032, 32, 65536, 16777216) == (3008, 4032)`` (3024/32 = 94.5 rounds to 94).
    Defaults are the function's own (``Qwen2VLImageProcessor`` passes its min/max pixels).
    """
    if height <= 0 or width <= 0:
        raise ImageSizeError(f"image size must be positive, got {width}x{height}")
    if max(height, width) / min(height, width) > 200:
        raise ImageSizeError(
            f"absolute aspect ratio must be smaller than 200, got {max(height, width) / min(height, width)}"
            f" ({width}x{height}): the processor rejects such an image")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def image_grid(width: int, height: int, spec: ProcessorSpec) -> ImageGrid:
    """Resize a ``width x height`` still image and return its patch grid and token counts."""
    rh, rw = smart_resize(height, width, spec.factor, spec.min_pixels, spec.max_pixels)
    # a still image is repeated to temporal_patch_size frames, then grouped by temporal_patch_size
    grid_t = 1
    return ImageGrid(
        width_px=width, height_px=height, resized_width_px=rw, resized_height_px=rh,
        grid_t=grid_t, grid_h=rh // spec.patch_size, grid_w=rw // spec.patch_size,
        merge_size=spec.merge_size,
        patch_dim=spec.in_channels * spec.temporal_patch_size * spec.patch_size * spec.patch_size,
    )


def largest_image_grid(spec: ProcessorSpec) -> ImageGrid:
    """The image vLLM profiles with: the one with the most visual tokens the processor allows.

    vLLM's Qwen-VL processing info (``get_image_size_with_most_features``) asks ``smart_resize`` for a
    square image of ``max_pixels`` (``9999999 x 9999999`` resized under the limit); a square of side
    ``floor(sqrt(max_pixels)/factor)*factor`` is what that returns. For Qwen3-VL: 4096 x 4096, 16384
    tokens; for Qwen2.5-VL (max 12845056): 3584 x 3584, 16384 tokens.
    """
    side = max(spec.factor, math.isqrt(spec.max_pixels) // spec.factor * spec.factor)
    return image_grid(side, side, spec)

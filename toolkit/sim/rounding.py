"""Request rounding and segment sizing (docs/allocator.md §2.3–2.5).

Pure functions; the device inlines the common no-option case for speed and calls these otherwise.
Source: ``round_size``, ``roundup_power2_next_division``, ``get_allocation_size`` in
``c10/cuda/CUDACachingAllocator.cpp``; torch_npu adds a 32-byte pad before rounding and 1 GiB
large-pool segments with ``page_size:1g``.
"""

from __future__ import annotations

from collections.abc import Sequence

from toolkit.sim.constants import (
    EXTRA_LARGE_BUFFER_BYTES,
    LARGE_BUFFER_BYTES,
    MIN_BLOCK_BYTES,
    MIN_LARGE_ALLOC_BYTES,
    ROUND_LARGE_BYTES,
    SMALL_BUFFER_BYTES,
    SMALL_SIZE_BYTES,
)


def divisions_for(nbytes: int, table: Sequence[int]) -> int:
    """The ``roundup_power2_divisions`` entry for a size: interval ``clamp(floor(log2 n) - 20, 0, 15)``."""
    index = nbytes.bit_length() - 1 - 20
    return table[min(max(index, 0), 15)]


def roundup_power2_next_division(nbytes: int, divisions: int) -> int:
    """Round up to the next of ``divisions`` equal steps between two powers of two.

    Example: ``roundup_power2_next_division(1200 * 2**20 + 1, 4) == 1280 * 2**20``.
    """
    if nbytes & (nbytes - 1) == 0:
        return nbytes
    floor2 = 1 << (nbytes.bit_length() - 1)
    step = floor2 >> (divisions.bit_length() - 1)
    if step == 0:
        return floor2 << 1
    floored = nbytes & ~(step - 1)
    return nbytes if floored == nbytes else floored + step


def round_size(nbytes: int, table: Sequence[int] | None = None, pad_bytes: int = 0) -> int:
    """Block size the allocator uses for a request of ``nbytes`` (NPU: ``pad_bytes=32``).

    Examples: CUDA ``round_size(1000) == 1024``; NPU ``round_size(512, pad_bytes=32) == 1024`` and
    ``round_size(2**20, pad_bytes=32) == 2**20 + 512`` (which moves a 1 MiB tensor to the large pool).
    """
    n = nbytes + pad_bytes
    if n < MIN_BLOCK_BYTES:
        return MIN_BLOCK_BYTES
    if table:
        d = divisions_for(n, table)
        if d > 1 and n > MIN_BLOCK_BYTES * d:
            return roundup_power2_next_division(n, d)
    return -(-n // MIN_BLOCK_BYTES) * MIN_BLOCK_BYTES


def is_small(rounded_bytes: int) -> bool:
    """Pool choice: rounded requests of at most 1 MiB live in the small pool."""
    return rounded_bytes <= SMALL_SIZE_BYTES


def allocation_size(
    rounded_bytes: int, large_segment_bytes: int = LARGE_BUFFER_BYTES, page_1g: bool = False
) -> int:
    """Size of the device allocation made when no cached block fits (``get_allocation_size``).

    <= 1 MiB -> 2 MiB; < 10 MiB -> the large segment size (20 MiB); else a multiple of 2 MiB
    (NPU ``page_size:1g``: large-pool segments are multiples of 1 GiB).
    """
    if rounded_bytes <= SMALL_SIZE_BYTES:
        return SMALL_BUFFER_BYTES
    if page_1g:
        return -(-rounded_bytes // EXTRA_LARGE_BUFFER_BYTES) * EXTRA_LARGE_BUFFER_BYTES
    if rounded_bytes < MIN_LARGE_ALLOC_BYTES:
        return large_segment_bytes
    return -(-rounded_bytes // ROUND_LARGE_BYTES) * ROUND_LARGE_BYTES

"""Allocator constants shared by the CUDA and NPU caching allocators (docs/allocator.md §2.1).

Source: ``c10/cuda/CUDACachingAllocator.cpp`` and torch_npu ``NPUCachingAllocator.cpp`` (same values).
"""

from __future__ import annotations

KiB = 1024
MiB = 1024**2
GiB = 1024**3

MIN_BLOCK_BYTES = 512  # kMinBlockSize: every block size is a multiple of this
SMALL_SIZE_BYTES = 1 * MiB  # kSmallSize: rounded requests <= this use the small pool
SMALL_BUFFER_BYTES = 2 * MiB  # kSmallBuffer: small-pool segment size and small expandable page
LARGE_BUFFER_BYTES = 20 * MiB  # kLargeBuffer: segment for (1 MiB, 10 MiB) requests, large page
MIN_LARGE_ALLOC_BYTES = 10 * MiB  # kMinLargeAlloc
ROUND_LARGE_BYTES = 2 * MiB  # kRoundLarge: large segments are multiples of this
EXTRA_LARGE_BUFFER_BYTES = 1 * GiB  # NPU kExtraLargeBuffer (page_size:1g)
ALIGN_ROUND_LARGE_BYTES = 16 * KiB  # NPU kAlignRoundLarge (base_addr_aligned_kb max/default)
NPU_PAD_BYTES = 32  # torch_npu adds 32 B to every request before rounding
WORKSPACE_ROUND_BYTES = 2 * MiB  # NPUWorkspaceAllocator rounds its blocks to 2 MiB

SIZE_MAX = 2**64 - 1  # "unlimited" max_split_size (std::numeric_limits<size_t>::max())

"""Fixed non-torch consumers of device memory on Ascend: named constants, each with its source.

None of them depends on the allocator conf; they are the floor of vLLM's "non-torch" figure. Where no
source gives a number, the constant says so (an order of magnitude to be replaced by a measurement).
"""

from __future__ import annotations

MiB = 1 << 20
GiB = 1 << 30

# ACL/runtime context (device-side runtime memory of a fresh process): no public source gives a figure;
# an order of magnitude, to be set from mem_get_info() of a fresh process (toolkit.sim.device default).
ACL_CONTEXT_BYTES = 1 * GiB

# HCCL_BUFFSIZE default: 200 MB per communication domain (Ascend HCCL environment-variable reference,
# "HCCL_BUFFSIZE ... default 200"). The simulated engine allocates one buffer per TP domain.
HCCL_BUFFSIZE_BYTES = 200 * MiB

# ATB TilingBufferPool allocated after vLLM's memory profiling and not accounted for: vllm-ascend issue
# #14300 (about 98 MiB per rank).
ATB_TILING_POOL_BYTES = 98 * MiB

# The vision attention's ATB scratch (torch_npu._npu_flash_attention_unpad): 9 x blockDim x 1 MiB in
# hicann/ascend-transformer-boost flash_attention_tiling.cpp; 20 cube cores on 910B -> 180 MiB, served by
# the NPU workspace allocator rounded to 2 MiB (NPUWorkspaceAllocator.cpp:129-130) -> 182 MiB.
VISION_ATTENTION_CUBE_CORES = 20
VISION_ATTENTION_SCRATCH_BYTES = 9 * VISION_ATTENTION_CUBE_CORES * MiB

__all__ = ["ACL_CONTEXT_BYTES", "ATB_TILING_POOL_BYTES", "HCCL_BUFFSIZE_BYTES", "VISION_ATTENTION_CUBE_CORES",
           "VISION_ATTENTION_SCRATCH_BYTES"]

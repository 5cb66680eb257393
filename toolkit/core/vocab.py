"""The project's vocabulary, defined once: platforms, backends and the allocator's environment variables.

``platform`` is the one word for "which caching allocator" (``npu``: torch_npu's NPUCachingAllocator,
``cuda``: PyTorch's CUDACachingAllocator); ``backend`` is where an engine runs (``sim`` models a platform,
``cpu`` is real vLLM on host memory, ``cuda``/``npu`` are real devices).
"""

from __future__ import annotations

from typing import Literal

Platform = Literal["npu", "cuda"]
PLATFORMS: tuple[Platform, ...] = ("npu", "cuda")

# Where %ascend_llm can run an engine; "auto" picks npu > cuda > sim without importing torch.
ENGINE_BACKENDS: tuple[str, ...] = ("sim", "cpu", "cuda", "npu")
BACKEND_CHOICES: tuple[str, ...] = ("auto", *ENGINE_BACKENDS)
REAL_BACKENDS: tuple[str, ...] = ("cpu", "cuda", "npu")  # a real vLLM engine
# What a worker-side probe reads: a device allocator, or host memory for the cpu backend.
PROBE_BACKENDS: tuple[str, ...] = ("npu", "cuda", "host")

# The variables a caching allocator reads its conf from (torch_npu: NPUCachingAllocator.cpp / c10 AllocatorConfig;
# PyTorch: c10/core/AllocatorConfig.cpp). Read order per version lives in toolkit.conf._environ.
NPU_VAR = "PYTORCH_NPU_ALLOC_CONF"
GENERIC_VAR = "PYTORCH_ALLOC_CONF"
CUDA_VAR = "PYTORCH_CUDA_ALLOC_CONF"
HIP_VAR = "PYTORCH_HIP_ALLOC_CONF"
CONF_VARS: tuple[str, ...] = (NPU_VAR, GENERIC_VAR, CUDA_VAR, HIP_VAR)
# The variable the toolkit writes for a platform (the platform's own, read first by every version).
WRITE_VAR: dict[str, str] = {"npu": NPU_VAR, "cuda": CUDA_VAR}

"""The vLLM engine arguments the workload model depends on, validated once (pure)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from toolkit.core.errors import ToolkitError
from toolkit.core.vocab import PLATFORMS
from toolkit.workload.presets import DTYPE_BYTES, Preset

# vLLM's KV block size when the user gives none: 16 tokens on CUDA (CacheConfig default), 128 on Ascend
# (vllm-ascend's platform check_and_update_config sets block_size 128 for its attention backends).
DEFAULT_BLOCK_SIZE = {"cuda": 16, "npu": 128}


class EngineArgsError(ToolkitError, ValueError):
    """Engine arguments vLLM itself would reject (the message says which and why)."""


@dataclass(frozen=True, slots=True)
class EngineArgs:
    """The subset of ``vllm.LLM(...)`` arguments that decide device memory.

    ``dtype="auto"`` takes the preset's (bfloat16 for every Qwen-VL preset). ``block_size=None`` takes the
    platform default. ``max_num_batched_tokens`` is also the chunked-prefill chunk size (vLLM V1 always
    chunks prefills at this budget).
    """

    tensor_parallel_size: int = 1
    max_model_len: int = 32768
    max_num_seqs: int = 8
    max_num_batched_tokens: int = 8192
    gpu_memory_utilization: float = 0.9
    dtype: str = "auto"
    block_size: int | None = None

    def resolved(self, preset: Preset, platform: str) -> ResolvedArgs:
        """Check the arguments against the model and platform the way vLLM's config does."""
        if platform not in PLATFORMS:
            raise EngineArgsError(f"platform must be one of {PLATFORMS}, got {platform!r}")
        tp = self.tensor_parallel_size
        if not isinstance(tp, int) or tp < 1:
            raise EngineArgsError(f"tensor_parallel_size must be a positive int, got {tp!r}")
        text, vision = preset.text, preset.vision
        if text.num_attention_heads % tp:
            raise EngineArgsError(f"Total number of attention heads ({text.num_attention_heads}) must be "
                                  f"divisible by tensor parallel size ({tp}).")
        if vision.num_heads % tp:
            raise EngineArgsError(f"vision heads ({vision.num_heads}) must be divisible by tensor parallel "
                                  f"size ({tp})")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise EngineArgsError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        for name in ("max_model_len", "max_num_seqs", "max_num_batched_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise EngineArgsError(f"{name} must be a positive int, got {value!r}")
        if self.max_model_len > text.max_position_embeddings:
            raise EngineArgsError(f"max_model_len {self.max_model_len} exceeds the model's "
                                  f"max_position_embeddings {text.max_position_embeddings}")
        dtype = preset.dtype if self.dtype == "auto" else self.dtype
        if dtype not in DTYPE_BYTES:
            raise EngineArgsError(f"dtype must be 'auto' or one of {sorted(DTYPE_BYTES)}, got {self.dtype!r}")
        block = self.block_size or DEFAULT_BLOCK_SIZE[platform]
        return ResolvedArgs(args=self, platform=platform, dtype=dtype, dtype_bytes=DTYPE_BYTES[dtype],
                            block_size=block)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ResolvedArgs:
    args: EngineArgs
    platform: str
    dtype: str
    dtype_bytes: int
    block_size: int

    @property
    def tp(self) -> int:
        return self.args.tensor_parallel_size

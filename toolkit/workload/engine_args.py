"""The vLLM engine arguments the workload model depends on, validated once (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar

from toolkit.core.errors import ToolkitError
from toolkit.core.vocab import PLATFORMS
from toolkit.workload.presets import DTYPE_BYTES, Preset

# vLLM's KV block size when the user gives none: 16 tokens on CUDA (CacheConfig default), 128 on Ascend
# (vllm-ascend's platform check_and_update_config sets block_size 128 for its attention backends).
DEFAULT_BLOCK_SIZE = {"cuda": 16, "npu": 128}


class EngineArgsError(ToolkitError, ValueError):
    """Engine arguments vLLM itself would reject (the message says which and why)."""


# What the simulator assumes for an argument nobody gave (a real engine leaves it to vLLM instead).
SIM_DEFAULTS: dict[str, Any] = {"tensor_parallel_size": 1, "max_model_len": 32768, "max_num_seqs": 8,
                                "max_num_batched_tokens": 8192, "gpu_memory_utilization": 0.9, "dtype": "auto"}


@dataclass(frozen=True)
class EngineArgs:
    """The ``vllm.LLM(...)`` arguments that decide device memory: the one definition every engine shares.

    None means "not given": a real engine passes only what is set and leaves the rest to vLLM; the simulated
    engine fills ``SIM_DEFAULTS`` (``simulated()``). ``dtype="auto"`` takes the preset's (bfloat16 for every
    Qwen-VL preset); ``block_size=None`` the platform default. ``max_num_batched_tokens`` is also the
    chunked-prefill chunk size (vLLM V1 always chunks prefills at this budget). The fields after
    ``block_size`` exist only on a real engine (the simulator does not model them).
    """

    tensor_parallel_size: int | None = None
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float | None = None
    dtype: str | None = None
    block_size: int | None = None
    enforce_eager: bool | None = None
    enable_sleep_mode: bool | None = None
    limit_mm_per_prompt: Mapping[str, int] | None = None
    mm_processor_cache_gb: float | None = None
    kv_cache_memory_bytes: int | None = None
    seed: int | None = None

    # the arguments the simulator models (toolkit.workload); the others only act on a real engine
    SIMULATED: ClassVar[tuple[str, ...]] = ("tensor_parallel_size", "max_model_len", "max_num_seqs",
                                            "max_num_batched_tokens", "gpu_memory_utilization", "dtype",
                                            "block_size")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def split(cls, knobs: Mapping[str, Any]) -> tuple[EngineArgs, dict[str, Any]]:
        """(the engine arguments among ``knobs``, the rest) so that constructors take them as keywords."""
        names = set(cls.names())
        return cls(**{k: v for k, v in knobs.items() if k in names}), {k: v for k, v in knobs.items() if k not in names}

    def given(self) -> dict[str, Any]:
        """The arguments that were set, for ``vllm.LLM(**...)``."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        if "limit_mm_per_prompt" in out:
            out["limit_mm_per_prompt"] = dict(out["limit_mm_per_prompt"])
        return out

    def simulated(self) -> EngineArgs:
        """These arguments with the simulator's defaults where none was given."""
        return replace(self, **{k: v for k, v in SIM_DEFAULTS.items() if getattr(self, k) is None})

    def resolved(self, preset: Preset, platform: str) -> ResolvedArgs:
        """Check the arguments against the model and platform the way vLLM's config does (simulator defaults
        for what was not given)."""
        if any(getattr(self, k) is None for k in SIM_DEFAULTS):
            return self.simulated().resolved(preset, platform)
        if platform not in PLATFORMS:
            raise EngineArgsError(f"platform must be one of {PLATFORMS}, got {platform!r}")
        tp = self.tensor_parallel_size
        util, max_len = self.gpu_memory_utilization, self.max_model_len
        seqs, batched = self.max_num_seqs, self.max_num_batched_tokens
        assert tp is not None and util is not None and max_len is not None and seqs is not None \
            and batched is not None  # simulated() filled them
        if not isinstance(tp, int) or tp < 1:
            raise EngineArgsError(f"tensor_parallel_size must be a positive int, got {tp!r}")
        text, vision = preset.text, preset.vision
        if text.num_attention_heads % tp:
            raise EngineArgsError(f"Total number of attention heads ({text.num_attention_heads}) must be "
                                  f"divisible by tensor parallel size ({tp}).")
        if vision.num_heads % tp:
            raise EngineArgsError(f"vision heads ({vision.num_heads}) must be divisible by tensor parallel "
                                  f"size ({tp})")
        if not 0.0 < util <= 1.0:
            raise EngineArgsError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        for name in ("max_model_len", "max_num_seqs", "max_num_batched_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise EngineArgsError(f"{name} must be a positive int, got {value!r}")
        if max_len > text.max_position_embeddings:
            raise EngineArgsError(f"max_model_len {self.max_model_len} exceeds the model's "
                                  f"max_position_embeddings {text.max_position_embeddings}")
        dtype = preset.dtype if self.dtype == "auto" else self.dtype
        if dtype not in DTYPE_BYTES:
            raise EngineArgsError(f"dtype must be 'auto' or one of {sorted(DTYPE_BYTES)}, got {self.dtype!r}")
        block = self.block_size or DEFAULT_BLOCK_SIZE[platform]
        return ResolvedArgs(args=self, platform=platform, dtype=dtype, dtype_bytes=DTYPE_BYTES[dtype],
                            block_size=block, tp=tp, max_model_len=max_len, max_num_seqs=seqs,
                            max_num_batched_tokens=batched, gpu_memory_utilization=util)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ResolvedArgs:
    """Engine arguments checked against one model and platform, every value concrete."""

    args: EngineArgs
    platform: str
    dtype: str
    dtype_bytes: int
    block_size: int
    tp: int
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    gpu_memory_utilization: float

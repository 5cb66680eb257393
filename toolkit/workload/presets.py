"""Published configuration numbers of real Qwen-VL models, read from small JSON files (pure).

Each ``presets/<name>.json`` holds the numbers of the model's published ``config.json`` and
``preprocessor_config.json`` on the Hugging Face hub (URLs in its ``sources``), normalised to one shape
for Qwen2.5-VL (text fields at the top level upstream) and Qwen3-VL (``text_config``). Architecture
facts that are not numbers in the config but decide tensor shapes are fields too, with the transformers
module they come from: Qwen2.5-VL's vision MLP is gated SiLU with RMSNorm and window attention
(``modeling_qwen2_5_vl.py``), Qwen3-VL's is plain GELU(tanh) with LayerNorm, learned position embeddings
and DeepStack mergers (``modeling_qwen3_vl.py``); Qwen2 text has a qkv bias, Qwen3 text a q/k RMSNorm.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from toolkit.core.errors import ToolkitError
from toolkit.workload.images import ProcessorSpec

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


class PresetError(ToolkitError, ValueError):
    """Unknown model preset or a malformed preset file."""


@dataclass(frozen=True, slots=True)
class TextConfig:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    attention_bias: bool
    qk_norm: bool


@dataclass(frozen=True, slots=True)
class VisionConfig:
    depth: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    in_channels: int
    patch_size: int
    spatial_merge_size: int
    temporal_patch_size: int
    out_hidden_size: int
    hidden_act: str
    mlp: str  # "gated" (SiLU gate*up) | "plain" (fc1 -> act -> fc2)
    norm: str  # "layernorm" | "rmsnorm"
    patch_embed_bias: bool
    num_position_embeddings: int  # 0: no learned position embedding
    deepstack_visual_indexes: tuple[int, ...]
    window_size: int  # 0: full attention in every block
    fullatt_block_indexes: tuple[int, ...]

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def merged_hidden(self) -> int:
        """Width of the merger's input: ``merge_size**2`` patches concatenated."""
        return self.hidden_size * self.spatial_merge_size**2


@dataclass(frozen=True, slots=True)
class Preset:
    name: str  # file stem, e.g. "qwen3-vl-8b-instruct"
    model: str  # hub id, e.g. "Qwen/Qwen3-VL-8B-Instruct"
    family: str  # "qwen3_vl" | "qwen2_5_vl"
    dtype: str
    text: TextConfig
    vision: VisionConfig
    processor: ProcessorSpec
    sources: tuple[str, ...]
    parameters_published: str | None

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]


def _names() -> list[str]:
    folder = resources.files("toolkit.workload") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def list_presets() -> list[str]:
    """Hub ids of the models with a preset."""
    return [load_preset(n).model for n in _names()]


def load_preset(model: str) -> Preset:
    """The preset for a hub id (``"Qwen/Qwen3-VL-8B-Instruct"``) or a file stem (``"qwen3-vl-8b-instruct"``).

    A local path or an unknown id is an error listing the known models: the simulator needs published
    numbers, it never guesses an architecture.
    """
    stem = model.rstrip("/").rsplit("/", 1)[-1].lower()
    if stem not in _names():
        raise PresetError(f"no workload preset for model {model!r}; known: {', '.join(list_presets())}")
    return _load(stem)


@cache
def _load(stem: str) -> Preset:
    raw = json.loads((resources.files("toolkit.workload") / "presets" / f"{stem}.json").read_text("utf-8"))
    try:
        vision = dict(raw["vision"])
        vision["deepstack_visual_indexes"] = tuple(vision["deepstack_visual_indexes"])
        vision["fullatt_block_indexes"] = tuple(vision["fullatt_block_indexes"])
        proc = {k: v for k, v in raw["processor"].items() if k != "source"}
        preset = Preset(
            name=stem, model=raw["model"], family=raw["family"], dtype=raw["dtype"],
            text=TextConfig(**raw["text"]), vision=VisionConfig(**vision), processor=ProcessorSpec(**proc),
            sources=tuple(raw["sources"]), parameters_published=raw.get("parameters_published"),
        )
    except (KeyError, TypeError) as exc:
        raise PresetError(f"preset {stem}.json is malformed: {exc}") from None
    if preset.dtype not in DTYPE_BYTES:
        raise PresetError(f"preset {stem}.json: unknown dtype {preset.dtype!r}")
    return preset

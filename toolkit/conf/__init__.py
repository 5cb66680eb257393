"""Allocator configuration strings: parse, validate, format and explain (pure; never imports torch).

Models, release by release, what ``PYTORCH_NPU_ALLOC_CONF`` (torch_npu) and ``PYTORCH_CUDA_ALLOC_CONF`` /
``PYTORCH_ALLOC_CONF`` (PyTorch) parsers accept, so a string can be checked before any engine starts.
The model replays upstream's token walk (``_legacy``: CUDA <= 2.9 and torch_npu <= 26.1.0; ``_unified``:
c10's ConfigTokenizer + device hook for CUDA >= 2.10 and torch_npu master) and is checked against the
installed torch 2.13 parser by ``tests/test_conf_differential.py``. Upstream resets some options on
every re-parse at run time; a conf here always means "a fresh process that parsed this string".

CONTRACT (the simulator codes against it):

    parse(text, platform="npu", version=None) -> AllocConf      # raises ConfError (a ValueError)
    AllocConf: frozen dataclass
        .platform: "npu" | "cuda"
        .version: str                    # resolved dialect version
        .options: Mapping[str, value]    # typed values of the keys given (duplicates: last wins)
        .warnings: tuple[ConfWarning, ...]
        str(conf) -> canonical string; .get(key); .with_option(key, value)
        behaviour properties (defaults applied):
            expandable_segments: bool
            max_split_size_bytes: int | None            # None = unlimited
            max_non_split_rounding_bytes: int           # 20 MiB default (2.11+: = large segment size)
            roundup_power2_divisions: tuple[int, ...]   # 16 entries, interval table of spec 2.4
            garbage_collection_threshold: float         # 0.0 = off
            per_process_memory_fraction: float | None
            large_segment_size_bytes: int               # 20 MiB default
            expandable_large_page_bytes: int            # large-pool page of expandable segments
            page_size_1g: bool                          # NPU page_size:1g
            base_addr_aligned_kb: int                   # NPU, default 16
            multi_stream_lazy_reclaim: bool             # NPU
            backend: str                                # CUDA "native" | "cudaMallocAsync"
"""

from __future__ import annotations

from toolkit.conf.dialects import (
    ALIASES,
    CUDA_VERSIONS,
    KNOWN_KEYS,
    NPU_VERSIONS,
    SUPPORTED_VERSIONS,
    KeyInfo,
    keys_for,
)
from toolkit.conf._environ import CONF_VARS, EffectiveConf, conf_from_environ, read_order
from toolkit.conf._errors import ConfError, ConfWarning
from toolkit.conf.explain import Explanation, explain
from toolkit.conf._model import AllocConf, format_conf, parse

parse_conf = parse  # the name toolkit/__init__.py re-exports

__all__ = [
    "ALIASES",
    "AllocConf",
    "CONF_VARS",
    "CUDA_VERSIONS",
    "ConfError",
    "ConfWarning",
    "EffectiveConf",
    "Explanation",
    "KNOWN_KEYS",
    "KeyInfo",
    "NPU_VERSIONS",
    "SUPPORTED_VERSIONS",
    "conf_from_environ",
    "explain",
    "format_conf",
    "keys_for",
    "parse",
    "parse_conf",
    "read_order",
]

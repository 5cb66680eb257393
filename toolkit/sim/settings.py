"""Behaviour switches of one simulated device, resolved once from (platform, conf, torch version).

The device reads these plain attributes on its hot path instead of asking the conf object each time.
Where a switch depends on the torch release rather than on the conf string, the rule and its
source are noted next to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, overload

from toolkit.core.vocab import Platform
from toolkit.sim.constants import (
    EXTRA_LARGE_BUFFER_BYTES,
    LARGE_BUFFER_BYTES,
    NPU_PAD_BYTES,
    SIZE_MAX,
    SMALL_BUFFER_BYTES,
)

TieBreak = Literal["address", "registration"]

# Free blocks of equal size: CUDA orders the default pools' free sets by (stream, size, ptr) in every
# release modelled, torch_npu likewise. Source: ``BlockComparatorSize`` in c10/cuda/CUDACachingAllocator.cpp
# (pytorch/pytorch eb42ad6eca0c, a main newer than 2.9): no registration_counter in it; that counter
# only orders MemPool registration. docs/allocator.md §2.2 says recent CUDA (2.10+ [I]) breaks ties by
# registration_counter: the recordings contradict it and win (cuda-torch29-training, torch >= 2.9:
# 2162/2162 allocations at their recorded address with address order, 484/2162 with registration
# order). "registration" stays available as an explicit ``tie_break`` for experiments.
REGISTRATION_TIE_BREAK_FROM: tuple[int, int] | None = None
# The CUDA OOM hint names PYTORCH_ALLOC_CONF from 2.10 (docs/allocator.md §2.14, user log with 2.10.0).
OOM_HINT_ALLOC_CONF_FROM = (2, 10)


@overload
def parse_version(version: str) -> tuple[int, int]: ...
@overload
def parse_version(version: None) -> None: ...
@overload
def parse_version(version: str | None) -> tuple[int, int] | None: ...
def parse_version(version: str | None) -> tuple[int, int] | None:
    """``"2.7.1+cu126"`` -> ``(2, 7)``; None stays None. Raises ValueError on a non-version string."""
    if version is None:
        return None
    head = str(version).strip().lstrip("v").split("+")[0].split(".")
    try:
        return int(head[0]), int(head[1]) if len(head) > 1 else 0
    except ValueError:
        raise ValueError(f"torch_version {version!r} is not a version like '2.7' or '2.10.0'") from None


@dataclass(frozen=True, slots=True)
class SimSettings:
    """Every conf- or version-dependent behaviour the simulator needs, with defaults applied."""

    platform: Platform
    conf_text: str
    pad_bytes: int  # NPU +32 B before rounding
    max_split_bytes: int  # SIZE_MAX = unlimited
    max_non_split_rounding_bytes: int
    divisions: tuple[int, ...]  # 16 roundup_power2_divisions entries; () when unset
    gc_threshold: float  # 0.0 = off
    memory_fraction: float | None
    expandable: bool
    large_segment_bytes: int  # segment for 1-10 MiB requests
    large_page_bytes: int  # expandable large-pool page
    small_page_bytes: int  # expandable small-pool page
    page_1g: bool  # NPU page_size:1g
    base_addr_aligned_bytes: int  # NPU, only with expandable segments
    multi_stream_lazy_reclaim: bool  # NPU
    tie_break: TieBreak
    oom_conf_var: str  # env var named in the CUDA OOM hint

    @property
    def max_split_unlimited(self) -> bool:
        return self.max_split_bytes == SIZE_MAX


def _get(conf: Any, name: str, default: Any) -> Any:
    value = getattr(conf, name, default)
    return default if value is None and default is not None else value


def resolve_settings(
    platform: Platform,
    conf: Any,
    torch_version: str | None = None,
    *,
    tie_break: TieBreak | None = None,
    npu_pad_bytes: int | None = None,
) -> SimSettings:
    """Build :class:`SimSettings` from an ``AllocConf`` (``toolkit.conf``) or any object with its properties.

    Raises ValueError for a backend the simulator does not model (``cudaMallocAsync``).
    """
    if platform not in ("cuda", "npu"):
        raise ValueError(f"platform must be 'cuda' or 'npu', got {platform!r}")
    backend = _get(conf, "backend", "native") or "native"
    if backend != "native":
        raise ValueError(
            f"backend:{backend} is not simulated: the simulator models the native caching allocator only"
        )
    version = parse_version(torch_version or getattr(conf, "version", None))
    if tie_break is None:
        since = REGISTRATION_TIE_BREAK_FROM
        recent = platform == "cuda" and since is not None and version is not None and version >= since
        tie_break = "registration" if recent else "address"
    elif tie_break not in ("address", "registration"):
        raise ValueError(f"tie_break must be 'address' or 'registration', got {tie_break!r}")
    max_split = _get(conf, "max_split_size_bytes", None)
    divisions = tuple(_get(conf, "roundup_power2_divisions", ()) or ())
    if divisions and len(divisions) != 16:
        raise ValueError(f"roundup_power2_divisions must have 16 entries, got {len(divisions)}")
    if not any(d > 1 for d in divisions):
        divisions = ()  # no entry changes rounding: keep the fast path
    large_segment = int(_get(conf, "large_segment_size_bytes", LARGE_BUFFER_BYTES))
    page_1g = platform == "npu" and bool(_get(conf, "page_size_1g", False))
    expandable = bool(_get(conf, "expandable_segments", False))
    aligned_kb = int(_get(conf, "base_addr_aligned_kb", 16)) if platform == "npu" else 0
    fraction = _get(conf, "per_process_memory_fraction", None)
    if fraction is not None and float(fraction) >= 1.0:
        fraction = None  # 1.0 is the default: no limit is set (set_fraction stays false)
    pad = NPU_PAD_BYTES if platform == "npu" else 0
    if npu_pad_bytes is not None:
        if platform != "npu":
            raise ValueError("npu_pad_bytes applies to platform='npu' only")
        pad = int(npu_pad_bytes)
    recent_cuda = platform == "cuda" and version is not None and version >= OOM_HINT_ALLOC_CONF_FROM
    oom_var = "PYTORCH_ALLOC_CONF" if recent_cuda else "PYTORCH_CUDA_ALLOC_CONF"
    return SimSettings(
        platform=platform,
        conf_text=str(conf) if conf is not None else "",
        pad_bytes=pad,
        max_split_bytes=SIZE_MAX if max_split is None else int(max_split),
        max_non_split_rounding_bytes=int(_get(conf, "max_non_split_rounding_bytes", LARGE_BUFFER_BYTES)),
        divisions=divisions,
        gc_threshold=float(_get(conf, "garbage_collection_threshold", 0.0) or 0.0),
        memory_fraction=None if fraction is None else float(fraction),
        expandable=expandable,
        large_segment_bytes=large_segment,
        large_page_bytes=EXTRA_LARGE_BUFFER_BYTES if page_1g else int(_get(conf, "expandable_large_page_bytes", large_segment)),
        small_page_bytes=SMALL_BUFFER_BYTES,
        page_1g=page_1g,
        base_addr_aligned_bytes=aligned_kb * 1024,
        multi_stream_lazy_reclaim=platform == "npu" and bool(_get(conf, "multi_stream_lazy_reclaim", False)),
        tie_break=tie_break,
        oom_conf_var=oom_var,
    )

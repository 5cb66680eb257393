"""Which keys each (platform, release) accepts, what they mean, and how a version string is resolved.

Sources: docs/allocator.md §1.4 (CUDA, from the wheel headers of each release) and §1.5 (torch_npu tags and
branches); "2.13" is what the installed torch 2.13.0+cpu really does (its ``AllocatorConfig.h`` and
``c10/cuda/CUDAAllocatorConfig.h`` key lists, and libc10.so probed directly). Versions are *dialects*:
"2.12" has no release notes we could read and is treated like "2.13"; torch_npu "26.2.0" is master of
the spec (torch 2.13 line).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from toolkit.conf._errors import ConfError

Platform = Literal["npu", "cuda"]
CUDA_VERSIONS: tuple[str, ...] = ("2.6", "2.7", "2.8", "2.9", "2.10", "2.11", "2.13")
NPU_VERSIONS: tuple[str, ...] = ("7.2.0", "7.3.0", "7.3.1", "26.0.0", "26.1.0", "26.2.0")
SUPPORTED_VERSIONS: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {"npu": NPU_VERSIONS, "cuda": CUDA_VERSIONS}
)
NEWEST = MappingProxyType({"npu": NPU_VERSIONS[-1], "cuda": CUDA_VERSIONS[-1]})
# First release that parses with c10's unified ConfigTokenizer parser instead of its own legacy lexer.
UNIFIED_FROM = MappingProxyType({"npu": "26.2.0", "cuda": "2.10"})


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One conf key: its value type, default and meaning, and the first release of each platform with it."""

    name: str
    kind: Literal["bool", "mib", "count", "kib", "fraction", "choice", "roundup"]
    meaning: str
    default: object
    default_text: str
    cuda_since: str | None = None
    npu_since: str | None = None
    accelerator_since: str | None = None  # CUDA release from which c10's generic config parses it


# Canonical order (also the order of canonical strings): behaviour first, then locks/flags, then pinned host.
_KEYS = (
    KeyInfo("backend", "choice", "selects the CUDA allocator implementation: the native caching allocator or "
            "CUDA's own cudaMallocAsync pool (read when torch is imported)", "native", "native", cuda_since="2.6"),
    KeyInfo("expandable_segments", "bool", "maps physical pages into one growing virtual segment per stream "
            "instead of a new device allocation per segment, which avoids fragmentation when sizes vary",
            False, "False", "2.6", "7.2.0", "2.10"),
    KeyInfo("max_split_size_mb", "mib", "cached blocks of at least this size are never split, so large "
            "free blocks are not carved up by small requests", None, "unlimited", "2.6", "7.2.0", "2.10"),
    KeyInfo("max_non_split_rounding_mb", "mib", "an oversize request may reuse a cached oversize block at "
            "most this much larger", 20, "20 MiB (PyTorch 2.11+: equal to large_segment_size_mb)",
            "2.6", "26.2.0", "2.10"),
    KeyInfo("garbage_collection_threshold", "fraction", "when reserved memory exceeds this fraction of the "
            "allowed memory, idle whole cached segments are freed, oldest first (needs a memory fraction)",
            0.0, "0 (off)", "2.6", "7.2.0", "2.10"),
    KeyInfo("roundup_power2_divisions", "roundup", "rounds request sizes up to one of N steps between powers "
            "of two, per size interval, so slightly different sizes share cached blocks", 0, "0 (512-byte rounding)",
            "2.6", "7.3.0", "2.10"),
    KeyInfo("large_segment_size_mb", "mib", "device segment size for 1-10 MiB requests and the large-pool "
            "expandable page size", 20, "20 MiB", "2.11", "26.1.0", "2.11"),
    KeyInfo("segment_size_mb", "mib", "large-pool page size of expandable segments (deprecated in 26.1.0 "
            "for large_segment_size_mb)", None, "unset (20 MiB pages)", npu_since="7.3.0"),
    KeyInfo("page_size", "choice", "with 1g the large pool uses 1 GiB huge pages and 1 GiB-granular segments "
            "(needs CANN 8.1.RC1+ and driver 25.0.RC1+, else ignored with a warning)", None,
            "unset (2 MiB huge pages)", npu_since="7.2.0"),
    KeyInfo("base_addr_aligned_kb", "kib", "with expandable segments, requests of 2 MiB or more start at an "
            "address aligned to this many KiB", 16, "16 KiB", npu_since="7.2.0"),
    KeyInfo("per_process_memory_fraction", "fraction", "caps this process's device memory at this fraction "
            "of the total, like set_per_process_memory_fraction() at allocator start", None,
            "unset (1.0, no cap)", "2.10", "26.1.0"),
    KeyInfo("multi_stream_lazy_reclaim", "bool", "skips polling cross-stream events on every malloc; blocks "
            "used on other streams are reclaimed later", False, "False", npu_since="26.0.0"),
    KeyInfo("release_lock_on_cudamalloc", "bool", "drops the allocator mutex around cudaMalloc so other "
            "threads can allocate meanwhile", False, "False", cuda_since="2.6"),
    KeyInfo("release_lock_on_npumalloc", "bool", "drops the allocator mutex around the device malloc",
            False, "False", npu_since="26.2.0"),
    KeyInfo("throw_on_cudamalloc_oom", "bool", "raises out-of-memory before calling cudaMalloc when the "
            "allocation would not fit", False, "False", cuda_since="2.13"),
    KeyInfo("throw_on_npumalloc_oom", "bool", "raises out-of-memory before the device malloc when the "
            "allocation would not fit", False, "False", npu_since="26.2.0"),
    KeyInfo("graph_capture_record_stream_reuse", "bool", "lets blocks used via record_stream be reused "
            "during CUDA graph capture", False, "False", cuda_since="2.9"),
    KeyInfo("pinned_use_cuda_host_register", "bool", "pinned host memory is malloc'ed and registered with "
            "cudaHostRegister instead of cudaHostAlloc", False, "False", cuda_since="2.6"),
    KeyInfo("pinned_num_register_threads", "count", "threads used to register pinned host memory (a power "
            "of two, at most 128)", 1, "1", cuda_since="2.6"),
    KeyInfo("pinned_use_background_threads", "bool", "the pinned host allocator processes its events on a "
            "background thread", False, "False", "2.6", "26.0.0", "2.10"),
    KeyInfo("pinned_reserve_segment_size_mb", "mib", "pre-reserves one pinned host segment of this size",
            0, "0 (none)", "2.10", "26.0.0"),
    KeyInfo("pinned_max_round_threshold_mb", "mib", "pinned host requests above this size are not rounded "
            "up to a power of two", None, "unlimited", "2.13", "26.2.0", "2.13"),
    KeyInfo("pinned_max_cached_size_mb", "mib", "freed pinned host blocks above this size are returned "
            "instead of cached", None, "unlimited", "2.13", "26.2.0", "2.13"),
    KeyInfo("pinned_free_catch_all", "bool", "pinned host frees also catch memory not allocated by the "
            "caching host allocator", False, "False", cuda_since="2.13"),
    KeyInfo("pin_memory_expandable_segments", "bool", "pinned host memory uses expandable segments (needs "
            "CANN 8.5.0+ and driver 25.5.0+, else switched off with a warning)", False, "False",
            npu_since="7.3.1"),
    KeyInfo("pinned_mem_register", "bool", "pinned host memory is registered host memory (needs CANN 8.5.0 "
            "and driver 26.0.rc1, else switched off with a warning)", False, "False", npu_since="26.0.0"),
)

KNOWN_KEYS: MappingProxyType[str, KeyInfo] = MappingProxyType({k.name: k for k in _KEYS})
# ROCm spellings that CUDA builds accept too (the cuda token is split in the source to dodge hipify).
ALIASES = MappingProxyType(
    {"release_lock_on_hipmalloc": "release_lock_on_cudamalloc",
     "pinned_use_hip_host_register": "pinned_use_cuda_host_register"}
)


def _index(platform: str, version: str) -> int:
    return SUPPORTED_VERSIONS[platform].index(version)


@dataclass(frozen=True, slots=True)
class Dialect:
    """One (platform, release) pair: which parser runs and which keys it knows."""

    platform: Platform
    version: str

    def at_least(self, version: str) -> bool:
        return _index(self.platform, self.version) >= _index(self.platform, version)

    @property
    def unified(self) -> bool:
        """True when c10's ConfigTokenizer-based parser (+ device hook) is used."""
        return self.at_least(UNIFIED_FROM[self.platform])

    @property
    def product(self) -> str:
        return "torch_npu" if self.platform == "npu" else "PyTorch"

    @property
    def label(self) -> str:
        return f"{self.platform}, {self.product} {self.version}"

    @property
    def keys(self) -> tuple[str, ...]:
        return keys_for(self.platform, self.version)

    @property
    def accelerator_keys(self) -> frozenset[str]:
        """Keys parsed by c10's generic AcceleratorAllocatorConfig (unified dialects only)."""
        if not self.unified:
            return frozenset()
        torch_version = self.version if self.platform == "cuda" else "2.13"  # NPU master pairs with 2.13
        return frozenset(
            k.name for k in _KEYS
            if k.accelerator_since and _index("cuda", torch_version) >= _index("cuda", k.accelerator_since)
        )

    @property
    def device_keys(self) -> frozenset[str]:
        """Keys parsed by the device hook (CUDAAllocatorConfig / NPUAllocatorConfig), aliases included."""
        own = frozenset(self.keys) - self.accelerator_keys
        if self.platform == "cuda":
            own |= {a for a, k in ALIASES.items() if k in own}
        return own


def keys_for(platform: str, version: str | None = None) -> tuple[str, ...]:
    """The canonical key names ``platform`` at ``version`` (None: newest) accepts, in canonical order."""
    dialect = resolve_dialect(platform, version)
    since = "cuda_since" if dialect.platform == "cuda" else "npu_since"
    return tuple(
        k.name for k in _KEYS
        if getattr(k, since) is not None and dialect.at_least(getattr(k, since))
    )


_CUDA_RE = re.compile(r"^v?(\d+)\.(\d+)(?:\.\d+)?(?:(?:a|b|rc|\.dev|\.post)\d*)*(?:\+[\w.]+)?$")
_NPU_RE = re.compile(r"^v?(\d+\.\d+\.\d+)(?:[.-]?(?:rc|post|alpha|beta)\d*)?$")


def resolve_dialect(platform: str, version: str | None = None) -> Dialect:
    """Normalise ``platform``/``version`` (aliases like "2.11.0+cu128", "v7.3.0", "v2.11.0-26.1.0")."""
    if not isinstance(platform, str) or platform.strip().lower() not in SUPPORTED_VERSIONS:
        raise ConfError(
            f"unknown platform {platform!r}", suggestion="use platform='npu' (torch_npu) or 'cuda' (PyTorch)"
        )
    plat: Platform = platform.strip().lower()  # type: ignore[assignment]
    if version is None:
        return Dialect(plat, NEWEST[plat])
    raw = str(version).strip()
    resolved = _resolve_cuda(raw) if plat == "cuda" else _resolve_npu(raw)
    if resolved is None:
        listed = ", ".join(SUPPORTED_VERSIONS[plat])
        hint = f"supported {plat} versions: {listed}"
        if plat == "npu" and re.match(r"^v?2\.\d+", raw):
            hint = ("torch_npu wheel numbers follow PyTorch; pass the Ascend Extension release instead "
                    f"(branch v2.11.0-26.1.0 -> 26.1.0): {listed}")
        raise ConfError(f"unsupported {plat} version {raw!r}", suggestion=hint)
    return Dialect(plat, resolved)


def _resolve_cuda(raw: str) -> str | None:
    m = _CUDA_RE.match(raw.lower())
    if m is None:
        return None
    short = f"{int(m.group(1))}.{int(m.group(2))}"
    if short == "2.12":  # no 2.12 sources read: behaves like the 2.13 we can test
        short = "2.13"
    return short if short in CUDA_VERSIONS else None


def _resolve_npu(raw: str) -> str | None:
    text = raw.lower()
    if text in ("master", "main"):
        return NPU_VERSIONS[-1]
    branch = re.match(r"^v?\d+\.\d+\.\d+-(\d+\.\d+\.\d+)$", text)  # v2.11.0-26.1.0
    if branch:
        text = branch.group(1)
    text = re.sub(r"-pytorch[\d.]+$", "", text)  # v7.2.0-pytorch2.7.1
    m = _NPU_RE.match(text)
    if m is None:
        return None
    return m.group(1) if m.group(1) in NPU_VERSIONS else None

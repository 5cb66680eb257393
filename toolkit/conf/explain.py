"""One human sentence per option: what it does, its default, and what this value does."""

from __future__ import annotations

from typing import NamedTuple

from toolkit.conf._walk import MiB
from toolkit.conf.dialects import KNOWN_KEYS
from toolkit.conf._model import AllocConf, format_value


class Explanation(NamedTuple):
    """One row of :func:`explain`: a table cell pair, or one line via ``str()``."""

    option: str  # "max_split_size_mb:512", "warning" or "(defaults)"
    sentence: str

    def __str__(self) -> str:
        return f"{self.option} -- {self.sentence}"


def explain(conf: AllocConf) -> list[Explanation]:
    """Rows for the options of ``conf`` (canonical order), then one per warning.

    Example:
        >>> from toolkit.conf import parse
        >>> str(explain(parse("max_split_size_mb:512", platform="cuda"))[0])[:60]
        'max_split_size_mb:512 -- cached blocks of at least this size'
    """
    rows = []
    for key, value in conf.items:
        info = KNOWN_KEYS[key]
        rows.append(Explanation(f"{key}:{format_value(conf.dialect, key, value)}",
                                f"{info.meaning}; default {info.default_text}; here: {_effect(conf, key, value)}."))
    if not rows:
        rows.append(Explanation("(defaults)", f"no options: the {conf.dialect.product} {conf.version} defaults "
                                              "apply (no expandable segments, no max split size, 512-byte "
                                              "rounding, no garbage collection)."))
    rows.extend(Explanation("warning", w.message) for w in conf.warnings)
    return rows


def _size(nbytes: int) -> str:
    """Whole-unit sizes for interval bounds ("2 MiB", "1 GiB")."""
    for unit, scale in (("GiB", 1024 * MiB), ("MiB", MiB), ("KiB", 1024)):
        if nbytes >= scale and nbytes % scale == 0:
            return f"{nbytes // scale} {unit}"
    return f"{nbytes} bytes"


def roundup_summary(table: tuple[int, ...]) -> str:
    """Group the 16 division entries into size ranges: '< 512 MiB: 1, 512 MiB-1 GiB: 2, >= 1 GiB: 4'."""
    parts, start = [], 0
    for j in range(1, len(table) + 1):
        if j == len(table) or table[j] != table[start]:
            lo = None if start == 0 else _size((1 << start) * MiB)
            hi = None if j == len(table) else _size((1 << j) * MiB)
            label = (f"< {hi}" if lo is None and hi is not None else f">= {lo}" if hi is None and lo is not None
                     else "all sizes" if lo is None else f"{lo}-{hi}")
            divisions = table[start]
            parts.append(f"{label}: {'512-byte rounding' if divisions <= 1 else f'{divisions} steps per power of 2'}")
            start = j
    return ", ".join(parts)


def _effect(conf: AllocConf, key: str, value: object) -> str:
    npu = conf.platform == "npu"
    if key == "expandable_segments":
        if not value:
            return "off, one device allocation per segment"
        fallback = (" (torch_npu falls back to False with a warning when the driver cannot reserve virtual "
                    "memory)" if npu else "")
        return f"on, large-pool pages of {_size(conf.expandable_large_page_bytes)}{fallback}"
    if key == "max_split_size_mb":
        return f"blocks of {_size(conf.max_split_size_bytes or 0)} or more are never split"
    if key == "max_non_split_rounding_mb":
        return f"an oversize request may take a cached block up to {_size(conf.max_non_split_rounding_bytes)} larger"
    if key == "garbage_collection_threshold":
        share = f"{float(value):.0%}"  # type: ignore[arg-type]
        return f"idle segments are freed once reserved memory passes {share} of the allowed memory"
    if key == "roundup_power2_divisions":
        return roundup_summary(conf.roundup_power2_divisions)
    if key == "large_segment_size_mb":
        return f"1-10 MiB requests get {_size(conf.large_segment_size_bytes)} segments"
    if key == "segment_size_mb":
        return f"expandable large-pool pages of {value} MiB unless large_segment_size_mb or page_size:1g say otherwise"
    if key == "page_size":
        return "the large pool maps 1 GiB pages and allocates 1 GiB-granular segments"
    if key == "base_addr_aligned_kb":
        active = "" if conf.expandable_segments else " (inactive: expandable_segments is off)"
        return f"expandable blocks of 2 MiB or more start {value} KiB-aligned{active}"
    if key == "per_process_memory_fraction":
        return f"this process may use at most {float(value):.0%} of device memory"  # type: ignore[arg-type]
    if key == "backend":
        return ("the native caching allocator" if value == "native" else
                "CUDA's cudaMallocAsync pool: the native-allocator keys do nothing and the simulator cannot model it")
    info = KNOWN_KEYS[key]
    if info.kind == "bool":
        return "on" if value else "off"
    if info.kind == "mib":
        return f"{value} MiB"
    return str(value)

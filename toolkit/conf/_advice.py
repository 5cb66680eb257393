"""Warnings for strings upstream accepts but that are pointless, risky or deprecated (docs/allocator.md §1.6).

Each warning carries the upstream text when torch/torch_npu prints one itself, else ``upstream=None``.
"""

from __future__ import annotations

from collections.abc import Mapping

from toolkit.conf._walk import roundup_table
from toolkit.conf.dialects import Dialect
from toolkit.conf._errors import ConfWarning


def advise(dialect: Dialect, options: Mapping[str, object], counts: Mapping[str, int]) -> list[ConfWarning]:
    """All warnings for a string that parsed to ``options`` (``counts``: how often each key appeared)."""
    out: list[ConfWarning] = []
    add = lambda key, message, upstream=None: out.append(ConfWarning(key, message, upstream))  # noqa: E731
    o, npu, cuda = options, dialect.platform == "npu", dialect.platform == "cuda"

    for key, count in counts.items():
        if count > 1:
            how = ("later values are applied on top of earlier ones" if key == "roundup_power2_divisions"
                   else "the last value wins")
            add(key, f"{key} is given {count} times: {how}")

    if o.get("backend") == "cudaMallocAsync":
        ignored = [k for k in o if k != "backend"]
        if ignored:
            # Legacy CUDA warns for every other key; the 2.10+ CUDA hook only for its own keys.
            upstream_warns = not dialect.unified or any(k in dialect.device_keys for k in ignored)
            add("backend", f"backend:cudaMallocAsync ignores {', '.join(ignored)} (settings of the native "
                           "caching allocator)",
                "backend:cudaMallocAsync ignores max_split_size_mb,roundup_power2_divisions, and "
                "garbage_collect_threshold." if upstream_warns else None)

    if "garbage_collection_threshold" in o and "per_process_memory_fraction" not in o:
        setter = f"torch.{dialect.platform}.set_per_process_memory_fraction()"
        where = (f"per_process_memory_fraction:<f> or {setter}" if "per_process_memory_fraction" in dialect.keys
                 else setter)
        add("garbage_collection_threshold", "garbage_collection_threshold only acts once a per-process memory "
                                            f"fraction is set ({where}); without one it does nothing")

    if o.get("per_process_memory_fraction") == 0.0:
        add("per_process_memory_fraction", "per_process_memory_fraction:0 leaves this process no device "
                                           "memory: every allocation will fail")

    if "max_non_split_rounding_mb" in o and "max_split_size_mb" not in o:
        add("max_non_split_rounding_mb", "max_non_split_rounding_mb only matters for oversize blocks, which "
                                         "exist only when max_split_size_mb is set")

    if cuda and o.get("expandable_segments") is True:
        tuned = [k for k in ("max_split_size_mb", "garbage_collection_threshold") if k in o]
        if tuned:
            verb = "have" if len(tuned) > 1 else "has"
            add(tuned[0], f"with expandable_segments:True, {' and '.join(tuned)} {verb} little effect: blocks "
                          "in expandable segments are always split and never garbage-collected")

    if "roundup_power2_divisions" in o:
        out.extend(_roundup_notes(dialect, o["roundup_power2_divisions"]))

    if npu:
        _npu_advice(dialect, o, add)
    return out


def _roundup_notes(dialect: Dialect, value: object) -> list[ConfWarning]:
    if not isinstance(value, tuple) or not value:
        return []
    key = "roundup_power2_divisions"
    legacy = dialect.platform == "cuda" and not dialect.unified
    if value[0][0] == ">":
        start = "all sizes" if legacy else "sizes of 2 MiB and more (below stays 0)"
        return [ConfWarning(key, f"'>' before any interval bound applies to {start}")]
    gt = [j for j, (bound, _) in enumerate(value) if bound == ">"]
    if legacy and gt:
        unified_table = roundup_table(value, legacy_gt=False)
        legacy_table = roundup_table(value, legacy_gt=True)
        if unified_table != legacy_table:
            bound = value[gt[0] - 1][0]
            return [ConfWarning(key, f"on {dialect.product} {dialect.version} '>' also overwrites the last listed "
                                     f"interval ({bound} MiB); from 2.10 it starts after it")]
    return []


def _npu_advice(dialect: Dialect, o: Mapping[str, object], add) -> None:
    if "base_addr_aligned_kb" in o and o.get("expandable_segments") is not True:
        add("base_addr_aligned_kb", "base_addr_aligned_kb only applies with expandable_segments:True; here it "
                                    "has no effect")
    if o.get("page_size") == "1g":
        overridden = [k for k in ("segment_size_mb", "large_segment_size_mb") if k in o]
        if overridden:
            add("page_size", f"page_size:1g overrides {' and '.join(overridden)} for the large pool (1 GiB pages)")
    if "segment_size_mb" in o and dialect.at_least("26.1.0"):
        add("segment_size_mb", f"segment_size_mb is deprecated since torch_npu 26.1.0: write "
                               f"large_segment_size_mb:{o['segment_size_mb']} instead",
            "`segment_size_mb` is deprecated, please use `large_segment_size_mb` instead.")
        if "large_segment_size_mb" in o:
            add("segment_size_mb", "large_segment_size_mb overrides segment_size_mb: keep only "
                                   "large_segment_size_mb",
                "Both `segment_size_mb` and `large_segment_size_mb` are set. `segment_size_mb` is deprecated. "
                "It is recommended to use only `large_segment_size_mb`.")
    if o.get("pin_memory_expandable_segments") is True:
        if o.get("pinned_mem_register") is True:
            add("pinned_mem_register", "pinned_mem_register is switched off when "
                                       "pin_memory_expandable_segments:True",
                "pinned_mem_register setting failure, this feature is not supported when "
                "pin_memory_expandable_segments is set to `True`, now change to `False`.")
        thresholds = [k for k in ("pinned_max_round_threshold_mb", "pinned_max_cached_size_mb") if k in o]
        if thresholds:
            add(thresholds[0], f"{' and '.join(thresholds)} do not take effect with "
                               "pin_memory_expandable_segments:True")

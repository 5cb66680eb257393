"""Unit tests of toolkit.conf: every parser rule per platform and release, warnings, errors, round trips.

The exact behaviour of the torch 2.13 parser is checked separately (tests/test_conf_differential.py);
rules of other releases come from docs/allocator.md §1 and the upstream sources cited in the modules.
"""

from __future__ import annotations

import math
import pickle
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit.conf import (
    CUDA_VERSIONS,
    NPU_VERSIONS,
    AllocConf,
    ConfError,
    explain,
    format_conf,
    keys_for,
    parse,
)
from toolkit.conf.explain import roundup_summary
from toolkit.core.errors import ToolkitError

MiB = 1024**2
ALL = [("cuda", v) for v in CUDA_VERSIONS] + [("npu", v) for v in NPU_VERSIONS]
LEGACY = [("cuda", v) for v in ("2.6", "2.7", "2.8", "2.9")] + [("npu", v) for v in NPU_VERSIONS[:-1]]
UNIFIED = [("cuda", "2.10"), ("cuda", "2.11"), ("cuda", "2.13"), ("npu", "26.2.0")]


def err(text: str, platform: str = "npu", version: str | None = None) -> ConfError:
    with pytest.raises(ConfError) as info:
        parse(text, platform, version)
    return info.value


def warning_keys(conf: AllocConf) -> list[str | None]:
    return [w.key for w in conf.warnings]


# --- dialects ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("platform", "given", "resolved"),
    [("cuda", None, "2.13"), ("npu", None, "26.2.0"), ("cuda", "2.11.0", "2.11"), ("cuda", "v2.11.0+cu128", "2.11"),
     ("cuda", "2.13.0+cpu", "2.13"), ("cuda", "2.12", "2.13"), ("cuda", "2.9.1", "2.9"), ("cuda", "2.10.0a0+git1", "2.10"),
     ("npu", "v7.3.0", "7.3.0"), ("npu", "v2.11.0-26.1.0", "26.1.0"), ("npu", "v7.2.0-pytorch2.7.1", "7.2.0"),
     ("npu", "master", "26.2.0"), ("NPU", "26.0.0", "26.0.0")],
)
def test_version_aliases_resolve(platform: str, given: str | None, resolved: str) -> None:
    conf = parse("", platform, given)
    assert (conf.platform, conf.version) == (platform.lower(), resolved)


@pytest.mark.parametrize(("platform", "version"), [("cuda", "2.5"), ("cuda", "3.0"), ("npu", "8.0.0"), ("npu", "7.1")])
def test_unknown_version_lists_supported_ones(platform: str, version: str) -> None:
    e = err("", platform, version)
    assert f"unsupported {platform} version" in str(e)
    assert ", ".join(CUDA_VERSIONS if platform == "cuda" else NPU_VERSIONS) in e.suggestion


def test_npu_wheel_version_gets_a_hint() -> None:
    assert "Ascend Extension release" in err("", "npu", "2.7.1").suggestion


def test_unknown_platform() -> None:
    assert "platform='npu'" in str(err("", "rocm"))


def test_non_str_text_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="must be a str"):
        parse(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("platform", "version", "present", "absent"),
    [("cuda", "2.8", {"max_non_split_rounding_mb", "backend"}, {"graph_capture_record_stream_reuse"}),
     ("cuda", "2.9", {"graph_capture_record_stream_reuse"}, {"per_process_memory_fraction"}),
     ("cuda", "2.10", {"per_process_memory_fraction", "pinned_reserve_segment_size_mb"}, {"large_segment_size_mb"}),
     ("cuda", "2.11", {"large_segment_size_mb"}, {"throw_on_cudamalloc_oom", "pinned_max_cached_size_mb"}),
     ("cuda", "2.13", {"throw_on_cudamalloc_oom", "pinned_free_catch_all", "pinned_max_round_threshold_mb"},
      {"page_size", "segment_size_mb"}),
     ("npu", "7.2.0", {"page_size", "base_addr_aligned_kb"}, {"roundup_power2_divisions", "segment_size_mb"}),
     ("npu", "7.3.0", {"roundup_power2_divisions", "segment_size_mb"}, {"pin_memory_expandable_segments"}),
     ("npu", "7.3.1", {"pin_memory_expandable_segments"}, {"multi_stream_lazy_reclaim"}),
     ("npu", "26.0.0", {"multi_stream_lazy_reclaim", "pinned_mem_register"}, {"large_segment_size_mb"}),
     ("npu", "26.1.0", {"large_segment_size_mb", "per_process_memory_fraction"}, {"max_non_split_rounding_mb"}),
     ("npu", "26.2.0", {"max_non_split_rounding_mb", "release_lock_on_npumalloc", "throw_on_npumalloc_oom"},
      {"backend", "release_lock_on_cudamalloc"})],
)
def test_keys_per_release(platform: str, version: str, present: set[str], absent: set[str]) -> None:
    keys = set(keys_for(platform, version))
    assert present <= keys and not absent & keys


@pytest.mark.parametrize(("platform", "version"), ALL)
def test_a_key_from_a_later_release_is_rejected_with_the_release_it_needs(platform: str, version: str) -> None:
    later = [k for k in keys_for(platform) if k not in keys_for(platform, version)]
    for key in later:
        e = err(f"{key}:1", platform, version)
        assert e.key == key and "or newer" in e.suggestion


# --- tokenizer and syntax ------------------------------------------------------------------------
@pytest.mark.parametrize(("platform", "version"), ALL)
def test_empty_and_trailing_comma_are_fine_double_comma_is_not(platform: str, version: str) -> None:
    assert parse("", platform, version).options == {}
    assert parse("expandable_segments:True,", platform, version).expandable_segments
    e = err("expandable_segments:True,,", platform, version)
    assert e.key == "," and e.position == 25 and "single commas" in e.suggestion


@pytest.mark.parametrize(("platform", "version"), ALL)
def test_equals_sign_is_one_unknown_key_with_a_hint(platform: str, version: str) -> None:
    e = err("max_split_size_mb=512", platform, version)
    assert e.key == "max_split_size_mb=512" and e.position == 0
    assert e.suggestion == "use ':' not '=' (max_split_size_mb:512)"


@pytest.mark.parametrize(("platform", "version"), ALL)
def test_spaces_are_dropped_even_inside_words(platform: str, version: str) -> None:
    conf = parse(" expandable _segments : True , ", platform, version)
    assert conf.expandable_segments and str(conf) == "expandable_segments:True"


def test_only_unified_tokenizer_drops_tabs_and_newlines() -> None:
    assert parse("expandable_segments:\tTrue\n", "cuda", "2.13").expandable_segments
    assert parse("expandable_segments:\tTrue", "npu", "26.2.0").expandable_segments
    e = err("expandable_segments:\tTrue", "npu", "26.1.0")
    assert "whitespace" in e.suggestion and "\t" not in str(e) and "\n" not in str(e)
    assert err("expandable\t_segments:True", "cuda", "2.9").key == "expandable\t_segments"


def test_legacy_numbers_skip_leading_whitespace_like_stoi() -> None:
    assert parse("max_split_size_mb:\t512", "cuda", "2.6").max_split_size_bytes == 512 * MiB
    # torch_npu insists on digits only
    assert err("max_split_size_mb:\t512", "npu", "26.1.0").upstream == "CachingAllocator option max_split_size_mb is invalid."


@pytest.mark.parametrize(("platform", "version"), LEGACY)
def test_legacy_parsers_check_separators(platform: str, version: str) -> None:
    e = err("expandable_segments,True", platform, version)
    assert e.upstream == "Error parsing CachingAllocator settings, expected :" and e.stage == "legacy"
    e = err("expandable_segments:True:max_split_size_mb:100", platform, version)
    assert e.upstream == "Error parsing CachingAllocator settings, expected ," and e.position == 24


@pytest.mark.parametrize(("platform", "version"), UNIFIED)
def test_unified_parsers_ignore_wrong_separators_but_we_warn(platform: str, version: str) -> None:
    conf = parse("expandable_segments,True", platform, version)
    assert conf.expandable_segments
    assert any("ignores the separator" in w.message for w in conf.warnings)
    conf = parse("expandable_segments:True:max_split_size_mb:100", "cuda", version) if platform == "cuda" else None
    if conf is not None:
        assert conf.max_split_size_bytes == 100 * MiB


@pytest.mark.parametrize(("platform", "version"), UNIFIED)
def test_unified_dangling_key_is_index_out_of_bounds(platform: str, version: str) -> None:
    e = err("expandable_segments", platform, version)
    assert e.upstream == "Index out of bounds in ConfigTokenizer" and e.upstream_type == "RuntimeError"
    assert e.position == len("expandable_segments") and "expandable_segments:True" in e.suggestion


@pytest.mark.parametrize(("platform", "version"), ALL)
def test_duplicates_last_wins_with_a_warning(platform: str, version: str) -> None:
    conf = parse("expandable_segments:True,expandable_segments:False", platform, version)
    assert conf.expandable_segments is False
    assert "given 2 times" in conf.warnings[0].message


def test_nul_is_rejected() -> None:
    e = err("expandable_segments:True\0")
    assert e.position == 24 and e.stage == "input"


# --- booleans -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("platform", "version"), ALL)
@pytest.mark.parametrize(("word", "fix"), [("true", "True"), ("false", "False"), ("1", "True"), ("yes", "True")])
def test_booleans_must_be_capitalised(platform: str, version: str, word: str, fix: str) -> None:
    e = err(f"max_split_size_mb:512,expandable_segments:{word}", platform, version)
    assert e.key == "expandable_segments" and e.position == 42
    assert e.suggestion == f"write {fix}, not {word}"
    assert str(e).startswith(f"expandable_segments:{word} at 42 ({platform}, ")


def test_boolean_upstream_messages_per_parser() -> None:
    assert err("expandable_segments:true", "cuda", "2.9").upstream == \
        "Expected a single True/False argument for expandable_segments"
    e = err("expandable_segments:true", "cuda", "2.13")
    assert e.upstream == "Expected 'True' or 'False' at index 2 in ConfigTokenizer but got 'true'"
    assert e.upstream_type == "ValueError" and e.stage == "accelerator"
    assert err("pinned_use_cuda_host_register", "cuda", "2.8").upstream == \
        "Error parsing CachingAllocator settings, expected :"
    assert err("pinned_use_cuda_host_register:", "cuda", "2.8").upstream == \
        "Error, expecting pinned_use_cuda_host_register value"
    assert err("multi_stream_lazy_reclaim:on", "npu", "26.2.0").upstream == \
        "Expected a single True/False argument for multi_stream_lazy_reclaim"


# --- sizes --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("platform", "version", "smallest"),
    [("cuda", "2.6", 21), ("cuda", "2.9", 21), ("cuda", "2.10", 20), ("cuda", "2.11", 20), ("cuda", "2.13", 20),
     ("npu", "7.2.0", 21), ("npu", "26.0.0", 21), ("npu", "26.1.0", 20), ("npu", "26.2.0", 20)],
)
def test_max_split_minimum_per_release(platform: str, version: str, smallest: int) -> None:
    assert parse(f"max_split_size_mb:{smallest}", platform, version).max_split_size_bytes == smallest * MiB
    e = err(f"max_split_size_mb:{smallest - 1}", platform, version)
    assert e.key == "max_split_size_mb" and str(smallest) in e.suggestion
    assert e.upstream.startswith("CachingAllocator option max_split_size_mb too small, must be")


@pytest.mark.parametrize(("platform", "version"), [("cuda", "2.11"), ("cuda", "2.13"), ("npu", "26.1.0"), ("npu", "26.2.0")])
def test_large_segment_raises_the_minimums_in_any_order(platform: str, version: str) -> None:
    for text in ("large_segment_size_mb:64,max_split_size_mb:40", "max_split_size_mb:40,large_segment_size_mb:64"):
        e = err(text, platform, version)
        assert e.upstream.endswith("must be >= 64") and e.key == "max_split_size_mb"
    conf = parse("max_split_size_mb:15,large_segment_size_mb:12", platform, version)
    assert conf.large_segment_size_bytes == 12 * MiB and conf.max_split_size_bytes == 15 * MiB
    assert err("large_segment_size_mb:10", platform, version).upstream.startswith(
        "CachingAllocator option large_segment_size_mb must be > 10")


def test_max_non_split_rounding_default_follows_large_segment_from_2_11() -> None:
    assert parse("", "cuda", "2.10").max_non_split_rounding_bytes == 20 * MiB
    assert parse("large_segment_size_mb:40", "cuda", "2.11").max_non_split_rounding_bytes == 40 * MiB
    assert parse("large_segment_size_mb:40", "npu", "26.2.0").max_non_split_rounding_bytes == 40 * MiB
    assert parse("large_segment_size_mb:40", "npu", "26.1.0").max_non_split_rounding_bytes == 20 * MiB
    conf = parse("max_non_split_rounding_mb:64,max_split_size_mb:256", "cuda", "2.13")
    assert conf.max_non_split_rounding_bytes == 64 * MiB
    assert err("max_non_split_rounding_mb:20", "cuda", "2.9").upstream == \
        "CachingAllocator option max_non_split_rounding_mb too small, must be > 20"


def test_negative_sizes_wrap_like_size_t() -> None:
    # legacy CUDA: stoi gives -5, size_t(-5) is huge, passes "> 20" and is clamped
    conf = parse("max_split_size_mb:-5", "cuda", "2.9")
    assert conf.max_split_size_bytes == (2**64 - 1) // MiB * MiB
    assert "is negative" in conf.warnings[0].message
    assert str(conf) == "max_split_size_mb:-1" and parse(str(conf), "cuda", "2.9") == conf
    # unified: stoull("-1") == 2**64-1, clamped the same way
    assert parse("max_split_size_mb:-1", "cuda", "2.13").max_split_size_bytes == (2**64 - 1) // MiB * MiB
    assert err("max_split_size_mb:-5", "npu", "26.1.0").upstream == "CachingAllocator option max_split_size_mb is invalid."


def test_out_of_range_and_non_numbers_map_to_the_std_exceptions() -> None:
    e = err("max_split_size_mb:99999999999", "cuda", "2.9")  # stoi: int32
    assert (e.upstream, e.upstream_type) == ("stoi", "IndexError") and "out of range" in str(e)
    assert parse("max_split_size_mb:99999999999", "cuda", "2.13").max_split_size_bytes == 99999999999 * MiB
    e = err("max_split_size_mb:" + "9" * 25, "cuda", "2.13")
    assert (e.upstream, e.upstream_type) == ("stoull", "IndexError")
    e = err("max_split_size_mb:abc", "cuda", "2.13")
    assert (e.upstream, e.upstream_type) == ("stoull", "ValueError") and "not a number" in str(e)


def test_prefix_parse_accepts_junk_suffixes_with_a_warning() -> None:
    conf = parse("max_split_size_mb:512MB", "cuda", "2.8")
    assert conf.max_split_size_bytes == 512 * MiB and str(conf) == "max_split_size_mb:512"
    assert "the trailing 'MB' is ignored" in conf.warnings[0].message
    assert err("max_split_size_mb:512MB", "npu", "7.3.0").upstream == "CachingAllocator option max_split_size_mb is invalid."


def test_segment_and_alignment_ranges_npu() -> None:
    assert parse("segment_size_mb:20", "npu", "7.3.0").options["segment_size_mb"] == 20
    for bad in ("19", "513"):
        assert err(f"segment_size_mb:{bad}", "npu", "7.3.0").upstream.startswith(
            "CachingAllocator option segment_size_mb error, must be [20, 512]")
    assert parse("base_addr_aligned_kb:0,expandable_segments:True", "npu", "7.2.0").base_addr_aligned_kb == 0
    for bad in ("17", "016"):
        e = err(f"base_addr_aligned_kb:{bad}", "npu", "26.2.0")
        assert e.upstream.startswith("CachingAllocator option base_addr_aligned_kb error, must be [0~16]")
    assert err("base_addr_aligned_kb:-1", "npu", "7.2.0").upstream == "CachingAllocator option base_addr_aligned_kb is invalid."


# --- floats ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("platform", "version"), ALL)
def test_gc_threshold_is_an_open_interval(platform: str, version: str) -> None:
    assert parse("garbage_collection_threshold:0.6", platform, version).garbage_collection_threshold == 0.6
    for bad in ("0", "1", "1.0", "nan", "-0.5", "inf"):
        e = err(f"garbage_collection_threshold:{bad}", platform, version)
        assert "garbage_collect_threshold" in e.upstream and e.key == "garbage_collection_threshold"


def test_gc_messages_differ_between_parsers() -> None:
    assert err("garbage_collection_threshold:0", "cuda", "2.9").upstream == "garbage_collect_threshold too small, set it 0.0~1.0"
    assert err("garbage_collection_threshold:1", "npu", "7.2.0").upstream == "garbage_collect_threshold too big, set it 0.0~1.0"
    e = err("garbage_collection_threshold:1", "cuda", "2.11")
    assert (e.upstream, e.upstream_type) == ("garbage_collect_threshold is invalid, set it in (0.0, 1.0)", "ValueError")
    assert err("garbage_collection_threshold:1", "cuda", "2.10").upstream_type == "RuntimeError"


def test_stod_details() -> None:
    assert parse("garbage_collection_threshold:0x1p-1", "cuda").garbage_collection_threshold == 0.5
    e = err("garbage_collection_threshold:1e-310", "cuda")  # inexact subnormal: ERANGE
    assert (e.upstream, e.upstream_type) == ("stod", "IndexError")
    conf = parse("garbage_collection_threshold:0x1p-1074", "cuda")  # exact subnormal: fine
    assert conf.garbage_collection_threshold == 5e-324
    assert parse(str(conf), "cuda") == conf  # canonical form uses hex so it re-parses


@pytest.mark.parametrize(("platform", "version"), [("cuda", "2.10"), ("cuda", "2.13"), ("npu", "26.1.0"), ("npu", "26.2.0")])
def test_per_process_memory_fraction_closed_interval(platform: str, version: str) -> None:
    assert parse("per_process_memory_fraction:1", platform, version).per_process_memory_fraction == 1.0
    conf = parse("per_process_memory_fraction:0", platform, version)
    assert conf.per_process_memory_fraction == 0.0 and "every allocation will fail" in conf.warnings[0].message
    assert err("per_process_memory_fraction:1.01", platform, version).upstream == \
        "per_process_memory_fraction is invalid, set it in [0.0, 1.0]"


# --- roundup_power2_divisions ---------------------------------------------------------------------
WORKED = "roundup_power2_divisions:[256:1,512:2,1024:4,>:8]"


def test_roundup_worked_example_gt_semantics() -> None:
    unified = (1,) * 9 + (2, 4) + (8,) * 5  # docs/allocator.md §2.4: [1 GiB, 2 GiB) -> 4
    legacy = (1,) * 9 + (2, 8) + (8,) * 5  # <= 2.9: '>' overwrites the last explicit interval
    for platform, version in UNIFIED + [("npu", "7.3.0"), ("npu", "26.1.0")]:
        assert parse(WORKED, platform, version).roundup_power2_divisions == unified, (platform, version)
    for version in ("2.6", "2.9"):
        conf = parse(WORKED, "cuda", version)
        assert conf.roundup_power2_divisions == legacy
        assert "'>' also overwrites the last listed interval (1024 MiB)" in conf.warnings[0].message
    assert roundup_summary(unified) == ("< 512 MiB: 512-byte rounding, 512 MiB-1 GiB: 2 steps per power of 2, "
                                        "1 GiB-2 GiB: 4 steps per power of 2, >= 2 GiB: 8 steps per power of 2")


def test_roundup_single_value_and_zero() -> None:
    assert parse("roundup_power2_divisions:4", "cuda", "2.13").roundup_power2_divisions == (4,) * 16
    assert parse("roundup_power2_divisions:0", "npu", "7.3.0").roundup_power2_divisions == (0,) * 16
    for platform, version in (("cuda", "2.9"), ("cuda", "2.13"), ("npu", "26.2.0")):
        assert err("roundup_power2_divisions:0", platform, version).upstream == \
            "For roundups, the divisions has to be power of 2 "
    assert err("roundup_power2_divisions:4", "npu", "7.2.0").upstream == \
        "Unrecognized CachingAllocator option: roundup_power2_divisions"


@pytest.mark.parametrize(("platform", "version"), [("cuda", "2.9"), ("cuda", "2.13"), ("npu", "7.3.0"), ("npu", "26.2.0")])
def test_roundup_list_validation(platform: str, version: str) -> None:
    assert err("roundup_power2_divisions:[256:3]", platform, version).upstream == \
        "For roundups, the divisions has to be power of 2 or 0 to disable roundup "
    e = err("roundup_power2_divisions:[100:2]", platform, version)
    assert e.upstream == "For roundups, the intervals have to be power of 2 " and e.position == 26
    conf = parse("roundup_power2_divisions:[64:0,128:2]", platform, version)
    assert conf.roundup_power2_divisions[:8] == (0,) * 7 + (2,)


def test_roundup_unclosed_list() -> None:
    assert parse("roundup_power2_divisions:[", "cuda", "2.9").roundup_power2_divisions == (0,) * 16
    assert err("roundup_power2_divisions:[", "cuda", "2.13").upstream == \
        "Expected closing bracket ']' in ConfigTokenizer but reached end of config"
    assert err("roundup_power2_divisions:[", "npu", "26.1.0").upstream == \
        "Expected closing bracket ']' while parsing roundup_power2_divisions"
    assert "not closed" in str(err("roundup_power2_divisions:[256:1", "cuda", "2.9"))


def test_roundup_gt_first_and_overlays() -> None:
    assert parse("roundup_power2_divisions:[>:4]", "cuda", "2.13").roundup_power2_divisions == (0,) + (4,) * 15
    assert parse("roundup_power2_divisions:[>:4]", "cuda", "2.9").roundup_power2_divisions == (4,) * 16
    text = "roundup_power2_divisions:[1024:4],roundup_power2_divisions:[>:2]"
    conf = parse(text, "cuda", "2.13")
    assert conf.roundup_power2_divisions == (4,) + (2,) * 15
    assert parse(str(conf), "cuda", "2.13").roundup_power2_divisions == conf.roundup_power2_divisions


# --- torch_npu cross-key rules ----------------------------------------------------------------------
@pytest.mark.parametrize("version", NPU_VERSIONS)
@pytest.mark.parametrize("other", ["max_split_size_mb:512", "garbage_collection_threshold:0.6"])
def test_npu_expandable_excludes_max_split_and_gc_in_any_order(version: str, other: str) -> None:
    for text in (f"expandable_segments:True,{other}", f"{other},expandable_segments:True"):
        e = err(text, "npu", version)
        assert e.stage == "cross-check" and e.upstream.startswith("`max_split_size_mb` or `garbage_collection_threshold`")
        assert e.position == text.index(other) and "expandable_segments:False" in e.suggestion
    assert parse(f"expandable_segments:False,{other}", "npu", version).expandable_segments is False


def test_expandable_with_max_split_is_only_a_warning_on_cuda() -> None:
    conf = parse("expandable_segments:True,max_split_size_mb:512", "cuda")
    assert conf.expandable_segments and "has little effect" in conf.warnings[0].message


def test_page_size_rules() -> None:
    for version in ("7.2.0", "26.2.0"):
        assert parse("page_size:1g", "npu", version).page_size_1g
        assert err("page_size:2m", "npu", version).upstream == "Unsupported page_size value: 2m"
        e = err("page_size", "npu", version)
        assert "page_size:1g" in e.suggestion and e.position == 9
    # master: the accelerator stage walks the string first (skipKey) and runs off its end
    assert err("page_size", "npu", "7.2.0").upstream == "page_size requires format 'page_size:1g'"
    assert err("page_size", "npu", "26.2.0").upstream == "Index out of bounds in ConfigTokenizer"
    conf = parse("page_size:1g,large_segment_size_mb:64", "npu", "26.1.0")
    assert "page_size:1g overrides large_segment_size_mb" in conf.warnings[0].message
    assert conf.expandable_large_page_bytes == 1024 * MiB


def test_segment_size_deprecation() -> None:
    assert parse("segment_size_mb:64", "npu", "7.3.0").warnings == ()
    conf = parse("segment_size_mb:64,large_segment_size_mb:32", "npu", "26.1.0")
    upstream = [w.upstream for w in conf.warnings]
    assert "`segment_size_mb` is deprecated, please use `large_segment_size_mb` instead." in upstream
    assert any(u and u.startswith("Both `segment_size_mb` and `large_segment_size_mb` are set") for u in upstream)
    assert conf.expandable_large_page_bytes == 32 * MiB  # large_segment_size_mb wins over segment_size_mb
    assert parse("segment_size_mb:64", "npu", "7.3.0").expandable_large_page_bytes == 64 * MiB


def test_npu_advisories() -> None:
    conf = parse("base_addr_aligned_kb:8", "npu", "26.2.0")
    assert "only applies with expandable_segments:True" in conf.warnings[0].message
    conf = parse("pin_memory_expandable_segments:True,pinned_mem_register:True", "npu", "26.1.0")
    assert conf.warnings[0].upstream.startswith("pinned_mem_register setting failure")
    conf = parse("garbage_collection_threshold:0.6", "npu", "26.0.0")
    assert "torch.npu.set_per_process_memory_fraction()" in conf.warnings[0].message
    assert parse("garbage_collection_threshold:0.6,per_process_memory_fraction:0.9", "npu", "26.1.0").warnings == ()


def test_npu_master_rejects_cuda_keys_and_unknown_keys() -> None:
    e = err("backend:native", "npu", "26.2.0")
    assert e.upstream == "Unrecognized key 'backend' in NPU allocator config" and e.suggestion == "backend exists only on cuda"
    e = err("expandable_segments:True,expandabel_segments:True", "npu", "26.2.0")
    assert e.position == 25 and e.suggestion == "did you mean expandable_segments?"
    assert err("foo:1", "npu", "7.2.0").upstream == "Unrecognized CachingAllocator option: foo"


# --- CUDA-only keys ---------------------------------------------------------------------------------
def test_backend_rules() -> None:
    for version in ("2.6", "2.13"):
        assert parse("backend:cudaMallocAsync", "cuda", version).backend == "cudaMallocAsync"
        assert err("backend:hipMallocAsync", "cuda", version).upstream == \
            "Unknown allocator backend, options are native and cudaMallocAsync"
        assert err("backend:native,backend:cudaMallocAsync", "cuda", version).upstream.startswith(
            "Allocator backend parsed at runtime != allocator backend parsed at load time")
    assert parse("", "cuda").backend == "native"


def test_cuda_malloc_async_warnings_follow_upstream() -> None:
    legacy = parse("backend:cudaMallocAsync,max_split_size_mb:512", "cuda", "2.8")
    assert legacy.warnings[0].upstream.startswith("backend:cudaMallocAsync ignores max_split_size_mb,")
    # the 2.10+ CUDA hook only notices its own keys; we still warn
    unified = parse("backend:cudaMallocAsync,max_split_size_mb:512", "cuda", "2.13")
    assert unified.warnings[0].upstream is None and "ignores max_split_size_mb" in unified.warnings[0].message
    hook = parse("backend:cudaMallocAsync,release_lock_on_cudamalloc:True", "cuda", "2.13")
    assert hook.warnings[0].upstream is not None


def test_cuda_hook_values() -> None:
    assert err("pinned_num_register_threads:3", "cuda", "2.13").upstream == \
        "Number of register threads has to be power of 2, got 3"
    assert err("pinned_num_register_threads:256", "cuda", "2.13").upstream.endswith("128, got 256")
    assert err("pinned_num_register_threads:256", "cuda", "2.7").upstream == \
        "Number of register threads should be less than or equal to 128"
    assert parse("pinned_num_register_threads:8", "cuda", "2.7").options["pinned_num_register_threads"] == 8
    e = err("pinned_reserve_segment_size_mb:0", "cuda", "2.13")
    assert (e.upstream, e.stage) == ("Pinned reserve segment size has to be greater than 0", "device")
    assert parse("throw_on_cudamalloc_oom:True", "cuda", "2.13").options["throw_on_cudamalloc_oom"] is True
    assert err("throw_on_cudamalloc_oom:True", "cuda", "2.11").key == "throw_on_cudamalloc_oom"


@pytest.mark.parametrize("version", CUDA_VERSIONS)
def test_rocm_spellings_are_aliases(version: str) -> None:
    conf = parse("release_lock_on_hipmalloc:True,pinned_use_hip_host_register:True", "cuda", version)
    assert dict(conf.options) == {"release_lock_on_cudamalloc": True, "pinned_use_cuda_host_register": True}
    assert conf.get("release_lock_on_hipmalloc") is True


def test_unknown_key_suggestions() -> None:
    assert err("expandable_segment:True", "npu", "26.1.0").suggestion == "did you mean expandable_segments?"
    assert str(err("expandable_segment:True", "npu", "26.1.0")) == (
        "unknown key 'expandable_segment' at 0 (npu, torch_npu 26.1.0): did you mean expandable_segments?")
    assert err("segment_size_mb:64", "cuda").suggestion == "segment_size_mb exists only on npu"
    assert "keys_for('cuda', '2.13')" in err("zzz:1", "cuda").suggestion


# --- behaviour properties, get, with_option -------------------------------------------------------------
@pytest.mark.parametrize(("platform", "version"), ALL)
def test_defaults(platform: str, version: str) -> None:
    conf = parse("", platform, version)
    assert conf.expandable_segments is False and conf.max_split_size_bytes is None
    assert conf.roundup_power2_divisions == (0,) * 16 and conf.garbage_collection_threshold == 0.0
    assert conf.per_process_memory_fraction is None and conf.large_segment_size_bytes == 20 * MiB
    assert conf.max_non_split_rounding_bytes == 20 * MiB and conf.page_size_1g is False
    assert conf.base_addr_aligned_kb == (16 if platform == "npu" else 0)
    assert conf.multi_stream_lazy_reclaim is False and conf.backend == "native"
    assert conf.expandable_large_page_bytes == 20 * MiB and str(conf) == "" and conf.warnings == ()


def test_get_returns_given_or_default_and_rejects_unknown() -> None:
    conf = parse("large_segment_size_mb:32", "cuda", "2.11")
    assert conf.get("large_segment_size_mb") == 32 and conf.get("max_split_size_mb") is None
    assert conf.get("max_non_split_rounding_mb") == 32 and conf.get("expandable_segments") is False
    with pytest.raises(ConfError, match="did you mean max_split_size_mb"):
        conf.get("max_split_size")


def test_with_option_revalidates() -> None:
    conf = parse("max_split_size_mb:512", "npu", "26.1.0")
    with pytest.raises(ConfError, match="cannot be combined"):
        conf.with_option("expandable_segments", True)
    flipped = conf.with_option("max_split_size_mb", None).with_option("expandable_segments", True)
    assert str(flipped) == "expandable_segments:True"
    assert str(parse("page_size:1g", "npu").with_option("expandable_segments", True)) == \
        "page_size:1g,expandable_segments:True"
    assert conf.with_option("roundup_power2_divisions", [(256, 1), (">", 4)]).roundup_power2_divisions[8] == 1
    assert conf.with_option("garbage_collection_threshold", "0.5").garbage_collection_threshold == 0.5
    with pytest.raises(ConfError):
        conf.with_option("max_split_size_mb", 10)
    with pytest.raises(ConfError, match="unknown key"):
        conf.with_option("backend", "native")
    with pytest.raises(ConfError, match="not a single value"):  # no smuggling a second key in
        conf.with_option("per_process_memory_fraction", "0.5,expandable_segments:True")


def test_equality_ignores_text_and_warnings_and_is_hashable() -> None:
    a = parse("expandable_segments:True, expandable_segments:True", "cuda")
    b = parse("expandable_segments:True", "cuda")
    assert a == b and hash(a) == hash(b) and a.warnings != b.warnings and a.text != b.text
    assert a != parse("expandable_segments:True", "cuda", "2.11")
    assert format_conf(a) == "expandable_segments:True" and "platform='cuda'" in repr(a)


def test_canonical_form_keeps_first_appearance_order_and_equality_ignores_order() -> None:
    conf = parse("garbage_collection_threshold:0.50,backend:native, expandable_segments:False,backend:native", "cuda", "2.9")
    assert str(conf) == "garbage_collection_threshold:0.5,backend:native,expandable_segments:False"
    assert conf == parse("expandable_segments:False,backend:native,garbage_collection_threshold:0.5", "cuda", "2.9")
    # large_segment_size_mb is read in a first pass upstream, but keeps its place here
    assert str(parse("max_split_size_mb:64,large_segment_size_mb:32", "cuda")) == \
        "max_split_size_mb:64,large_segment_size_mb:32"
    assert str(conf.with_option("max_split_size_mb", 64)).endswith(",max_split_size_mb:64")


# --- round trip (hypothesis) ---------------------------------------------------------------------------
_PIECES = {
    "expandable_segments": ["True", "False", "true"], "max_split_size_mb": ["20", "21", "512", "-1", "64MB", "+40"],
    "garbage_collection_threshold": ["0.5", "0x1p-2", ".25", "0.999", "1e-5", "0x1p-1074"],
    "roundup_power2_divisions": ["4", "0", "[256:1,>:4]", "[>:2]", "[1:2,64:0]", "[]", "[", "[32768:8,65536:16]"],
    "large_segment_size_mb": ["11", "32", "64"], "segment_size_mb": ["20", "128"], "page_size": ["1g"],
    "base_addr_aligned_kb": ["0", "16"], "per_process_memory_fraction": ["0.5", "1", "-0"],
    "backend": ["native", "cudaMallocAsync"], "pinned_num_register_threads": ["1", "8"],
    "max_non_split_rounding_mb": ["30", "-1"], "pinned_max_cached_size_mb": ["7"],
}
_pair = st.sampled_from(sorted(_PIECES)).flatmap(lambda k: st.sampled_from(_PIECES[k]).map(lambda v: f"{k}:{v}"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.sampled_from(ALL), st.lists(_pair, max_size=5), st.sampled_from([",", ", ", " ,"]), st.booleans())
def test_canonical_string_round_trips(dialect, pairs, joiner, trailing) -> None:
    platform, version = dialect
    text = joiner.join(pairs) + ("," if trailing else "")
    try:
        conf = parse(text, platform, version)
    except ConfError as e:
        assert e.platform == platform and "\n" not in str(e)
        return
    again = parse(str(conf), platform, version)
    assert again == conf and str(again) == str(conf)
    assert again.roundup_power2_divisions == conf.roundup_power2_divisions
    assert again.max_non_split_rounding_bytes == conf.max_non_split_rounding_bytes
    gc = conf.garbage_collection_threshold
    assert gc == again.garbage_collection_threshold and not math.isnan(gc)


_ATOMS = st.sampled_from(
    sorted(set(keys_for("npu")) | set(keys_for("cuda"))) + [",", ":", "[", "]", ">", " ", "\t", "=", "True", "true",
                                                             "1g", "0", "20", "-1", "0.5", "nan", "512MB", "[256:1,>:4]"])


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(ALL), st.lists(_ATOMS, max_size=12))
def test_any_string_parses_or_fails_cleanly(dialect, atoms) -> None:
    platform, version = dialect
    text = "".join(atoms)
    try:
        conf = parse(text, platform, version)
    except ConfError as e:  # never any other exception, always one line, position inside the text
        assert "\n" not in str(e) and (e.position is None or 0 <= e.position <= len(text))
        assert e.upstream and e.stage in ("legacy", "accelerator", "device", "cross-check")
    else:
        assert parse(str(conf), platform, version) == conf


# --- explain ----------------------------------------------------------------------------------------
def test_explain_one_sentence_per_option_then_warnings() -> None:
    conf = parse("expandable_segments:True,base_addr_aligned_kb:8", "npu", "26.1.0")
    rows = explain(conf)
    assert len(rows) == 2 and all("\n" not in str(r) for r in rows)
    assert rows[0].option == "expandable_segments:True" and rows[0].sentence.startswith("maps physical pages")
    assert str(rows[0]).startswith("expandable_segments:True -- maps physical pages")
    assert "default False" in rows[0].sentence and "falls back to False" in rows[0].sentence
    assert "start 8 KiB-aligned" in rows[1].sentence
    conf = parse("max_split_size_mb:512,garbage_collection_threshold:0.8", "cuda")
    rows = explain(conf)
    assert "blocks of 512 MiB or more are never split" in rows[0].sentence
    assert rows[-1].option == "warning" and "per-process memory fraction" in rows[-1].sentence
    option, sentence = explain(parse("", "npu"))[0]  # rows unpack like (cell, cell) table rows
    assert option == "(defaults)" and sentence.startswith("no options")


# --- errors -----------------------------------------------------------------------------------------
def test_conf_error_is_one_line_picklable_and_catchable() -> None:
    e = err("expandable_segments:tr\nue", "cuda")
    assert "\n" not in str(e)
    assert isinstance(e, ValueError) and isinstance(e, ToolkitError)
    copy = pickle.loads(pickle.dumps(e))
    assert str(copy) == str(e) and copy.key == e.key and copy.upstream == e.upstream


def test_error_position_points_at_the_offending_token() -> None:
    text = "expandable_segments:True,foo:1"
    assert err(text, "cuda").position == text.index("foo")
    text = "max_split_size_mb:100,garbage_collection_threshold:2"
    assert err(text, "cuda", "2.9").position == text.index("2", len("max_split_size_mb:100,"))


# --- purity -------------------------------------------------------------------------------------------
def test_import_is_pure() -> None:
    code = ("import os, sys; before = dict(os.environ); import toolkit.conf; "
            "bad = {'torch', 'IPython', 'plotly', 'vllm', 'numpy'} & set(sys.modules); "
            "assert not bad, bad; assert dict(os.environ) == before")
    subprocess.run([sys.executable, "-c", code], check=True)

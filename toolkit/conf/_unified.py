"""The unified parsers: c10's ``AcceleratorAllocatorConfig`` followed by a device hook (CUDA >= 2.10,
torch_npu master = "26.2.0"), replayed token by token.

What makes them odd (docs/allocator.md §1.3; checked against torch 2.13's libc10.so, see tests/test_conf_differential.py):
``ConfigTokenizer::checkToken`` returns a bool that the parsers ignore, so a wrong separator is not an
error (``expandable_segments,True`` is accepted) -- only running past the end is
(``Index out of bounds in ConfigTokenizer``). Numbers use ``stoull`` (``-1`` wraps to 2**64-1 and is then
clamped). Without a device hook (a CPU-only build) the accelerator stage skips keys it does not know;
with one, an unknown key is ``Unrecognized key '<k>' in Accelerator allocator config.``. Then the device
hook walks the *same* string again and parses its own keys.

Sources: c10/core/AllocatorConfig.{h,cpp} (cyyever/pytorch 106319cb, equal to the installed 2.13
behaviour), the 2.9-era cpp (pytorch index id 10131072) for 2.10, c10/cuda/CUDAAllocatorConfig.cpp
(cyyever/pytorch 0b2b76de, keys cut to the installed 2.13 header), torch_npu NPUAllocatorConfig.cpp
(Ascend/pytorch 00ebc60c) and docs/allocator.md §1.5 for master.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.conf import _cxx
from toolkit.conf._legacy import npu_expandable_conflict
from toolkit.conf._walk import MiB, SIZE_MAX, SIZE_MAX_MB, Walk, apply_roundup_item, example
from toolkit.conf.dialects import ALIASES, Dialect

_ROUNDUP_HINT = "write roundup_power2_divisions:[256:1,512:2,>:4] (power-of-2 MiB bounds, divisions 0 or power of 2)"


class ConfigTokenizer:
    """``c10::CachingAllocator::ConfigTokenizer``'s accessors over a :class:`Walk`."""

    def __init__(self, walk: Walk, stage: str) -> None:
        self.w = walk
        self.t = walk.tokens
        self.n = len(walk.tokens)
        self.stage = stage

    def at(self, i: int, key: str | None) -> str:
        """``operator[]`` (and ``checkIndex``): internal assert past the end."""
        if i >= self.n:
            if key is None:
                self.w.fail("the conf ends early", i, key=None, upstream="Index out of bounds in ConfigTokenizer",
                            stage=self.stage, suggestion="write key:value pairs")
            self.w.fail_missing(key, i, upstream="Index out of bounds in ConfigTokenizer", stage=self.stage)
        return self.t[i].text

    def check_token(self, i: int, expected: str, key: str) -> bool:
        """Asserts the index, then compares -- the result is ignored by every caller we model."""
        found = self.at(i, key)
        if found != expected:
            where = "after" if expected == ":" else "after the value of"
            self.w.note(key, f"expected {expected!r} {where} {key} at {self.w.pos(i)} but found {found!r}: "
                             f"{self.w.dialect.product} {self.w.dialect.version} ignores the separator, "
                             "older parsers reject it")
        return found == expected

    def to_size_t(self, i: int, key: str) -> int:
        self.at(i, key)
        return int(self.w.number("stoull", i, key, stage=self.stage))

    def to_double(self, i: int, key: str) -> float:
        self.at(i, key)
        return float(self.w.number("stod", i, key, stage=self.stage))

    def to_bool(self, i: int, key: str) -> bool:
        token = self.at(i, key)
        if token not in ("True", "False"):
            self.w.fail_bool(key, i, upstream=f"Expected 'True' or 'False' at index {i} in ConfigTokenizer "
                                              f"but got '{token}'", upstream_type="ValueError", stage=self.stage)
        return token == "True"

    def skip_key(self, i: int, key: str) -> int:
        """Index of the value, or of the ``]`` closing a list value."""
        self.check_token(i + 1, ":", key)
        i += 2
        if self.at(i, key) != "[":
            return i
        i += 1
        while i < self.n and self.t[i].text != "]":
            i += 1
        if i >= self.n:
            self.w.fail(f"the list value of {key} has no closing ']'", i, key=key, stage=self.stage,
                        upstream="Expected closing bracket ']' in ConfigTokenizer but reached end of config",
                        suggestion="close the list with ']'")
        return i

    def separator(self, i: int, key: str) -> int:
        """``if (i + 1 < tokenizer.size()) tokenizer.checkToken(++i, ",");``"""
        if i + 1 < self.n:
            self.check_token(i + 1, ",", key)
            return i + 1
        return i


@dataclass
class AcceleratorState:
    """c10 AcceleratorAllocatorConfig's fields after a parse in a fresh process (bytes where upstream has bytes)."""

    large_segment_size: int = 20 * MiB
    max_split_size: int = SIZE_MAX
    max_non_split_rounding_size: int = 20 * MiB
    roundup_power2_divisions: tuple[int, ...] = (0,) * 16
    garbage_collection_threshold: float = 0.0
    use_expandable_segments: bool = False
    pinned_use_background_threads: bool = False
    pinned_max_round_threshold: int = SIZE_MAX
    pinned_max_cached_size: int = SIZE_MAX


def accelerator_pass(walk: Walk, *, torch_version: str, hook_keys: frozenset[str] | None) -> AcceleratorState:
    """Replay ``AcceleratorAllocatorConfig::parseArgs`` of PyTorch ``torch_version`` (2.10, 2.11 or 2.13).

    ``hook_keys`` is the key set once a device hook is registered (accelerator + device keys); None models
    a build without one (CPU-only), where unknown keys are skipped instead of rejected.
    """
    cuda = Dialect("cuda", torch_version)
    v211, v213 = cuda.at_least("2.11"), cuda.at_least("2.13")
    check_type = "ValueError" if v211 else "RuntimeError"  # 2.10 used TORCH_CHECK, 2.11 TORCH_CHECK_VALUE
    stage = "accelerator"
    tk = ConfigTokenizer(walk, stage)
    st = AcceleratorState()
    table = walk.roundup_table
    n = tk.n

    def fail(summary: str, i: int, key: str, upstream: str, suggestion: str) -> None:
        walk.fail(summary, i, key=key, upstream=upstream, upstream_type=check_type, stage=stage,
                  suggestion=suggestion)

    def parse_large_segment(i: int, key: str) -> int:
        tk.check_token(i + 1, ":", key)
        i += 2
        value = tk.to_size_t(i, key)
        if not value > 10:
            fail(f"{key}:{walk.tok(i)} is too small", i, key,
                 "CachingAllocator option large_segment_size_mb must be > 10 MB", "use more than 10 (MiB)")
        value = min(value, SIZE_MAX_MB)
        st.large_segment_size = value * MiB
        walk.set(key, value, i)
        return i

    def parse_mb_floor(i: int, key: str) -> int:  # max_split_size_mb, max_non_split_rounding_mb
        tk.check_token(i + 1, ":", key)
        i += 2
        floor = st.large_segment_size // MiB if v211 else 20
        value = tk.to_size_t(i, key)
        if value < floor:
            fail(f"{key}:{walk.tok(i)} is too small", i, key,
                 f"CachingAllocator option {key} too small, must be >= {floor}",
                 f"use at least {floor}" + (" (large_segment_size_mb)" if v211 else ""))
        value = min(value, SIZE_MAX_MB)
        if key == "max_split_size_mb":
            st.max_split_size = value * MiB
        else:
            st.max_non_split_rounding_size = value * MiB
        walk.set(key, value, i)
        return i

    def parse_gc(i: int, key: str) -> int:
        tk.check_token(i + 1, ":", key)
        i += 2
        value = tk.to_double(i, key)
        if not 0 < value < 1.0:
            fail(f"{key}:{walk.tok(i)} is out of range", i, key,
                 "garbage_collect_threshold is invalid, set it in (0.0, 1.0)",
                 "use a fraction strictly between 0 and 1, e.g. 0.8")
        st.garbage_collection_threshold = value
        walk.set(key, value, i)
        return i

    def parse_roundup(i: int, key: str) -> int:
        tk.check_token(i + 1, ":", key)
        i += 2
        if tk.at(i, key) != "[":
            value = tk.to_size_t(i, key)
            if not _cxx.is_power_of_two(value):
                fail(f"{key}:{walk.tok(i)} is not a power of 2", i, key,
                     "For roundups, the divisions has to be power of 2 ",
                     "use 1, 2, 4, 8, ... (a list allows 0 to disable an interval)")
            table[:] = [value] * len(table)
            walk.roundup_values.append(value)
            walk.set(key, value, i)
            return i
        start, items, state = i, [], {"first": True, "last": 0}
        i += 1
        while i < n and walk.tok(i) != "]":
            boundary_index = i
            tk.check_token(i + 1, ":", key)
            i += 2
            divisions = tk.to_size_t(i, key)
            if divisions != 0 and not _cxx.is_power_of_two(divisions):
                fail(f"{key}: {walk.tok(i)} divisions is not a power of 2", i, key,
                     "For roundups, the divisions has to be power of 2 or 0 to disable roundup ",
                     "divisions must be 0 (off) or a power of 2, e.g. [256:1,512:2,>:4]")
            if walk.tok(boundary_index) == ">":
                boundary: int | str = ">"
            else:
                boundary = tk.to_size_t(boundary_index, key)
                if not _cxx.is_power_of_two(boundary):
                    fail(f"{key}: interval {walk.tok(boundary_index)} is not a power of 2", boundary_index, key,
                         "For roundups, the intervals have to be power of 2 ",
                         "interval bounds are powers of 2 in MiB (or '>'), e.g. [256:1,512:2,>:4]")
            apply_roundup_item(table, state, boundary, divisions, legacy_gt=False)
            items.append((boundary, divisions))
            if tk.at(i + 1, key) != "]":
                tk.check_token(i + 1, ",", key)
                i += 1
            i += 1
        if i >= n:
            walk.fail(f"the list value of {key} has no closing ']'", i, key=key, stage=stage,
                      upstream="Expected closing bracket ']' in ConfigTokenizer but reached end of config",
                      suggestion=_ROUNDUP_HINT)
        divisions_list = tuple(items)
        walk.roundup_values.append(divisions_list)
        walk.set(key, divisions_list, start)
        return i

    def parse_bool(i: int, key: str) -> int:
        tk.check_token(i + 1, ":", key)
        i += 2
        value = tk.to_bool(i, key)
        if key == "expandable_segments":
            st.use_expandable_segments = value
        else:
            st.pinned_use_background_threads = value
        walk.set(key, value, i)
        return i

    def parse_pinned_mb(i: int, key: str) -> int:
        tk.check_token(i + 1, ":", key)
        i += 2
        value = min(tk.to_size_t(i, key), SIZE_MAX_MB)
        if key == "pinned_max_round_threshold_mb":
            st.pinned_max_round_threshold = value * MiB
        else:
            st.pinned_max_cached_size = value * MiB
        walk.set(key, value, i)
        return i

    handlers = {
        "max_split_size_mb": parse_mb_floor,
        "max_non_split_rounding_mb": parse_mb_floor,
        "garbage_collection_threshold": parse_gc,
        "roundup_power2_divisions": parse_roundup,
        "expandable_segments": parse_bool,
        "pinned_use_background_threads": parse_bool,
    }
    if v211:
        # large_segment_size_mb is read in a first pass over *every* token, so the minimums below see it.
        i = 0
        while i < n:
            if walk.tok(i) == "large_segment_size_mb":
                i = parse_large_segment(i, "large_segment_size_mb")
            i += 1
        st.max_non_split_rounding_size = st.large_segment_size
        handlers["large_segment_size_mb"] = lambda i, key: tk.skip_key(i, key)
    if v213:
        handlers["pinned_max_round_threshold_mb"] = parse_pinned_mb
        handlers["pinned_max_cached_size_mb"] = parse_pinned_mb

    seen_round = seen_cached = False
    i = 0
    while i < n:
        key = walk.tok(i)
        handler = handlers.get(key)
        if handler is not None:
            i = handler(i, key)
            seen_round |= key == "pinned_max_round_threshold_mb"
            seen_cached |= key == "pinned_max_cached_size_mb"
        else:
            if hook_keys is not None and key not in hook_keys:
                walk.fail_unknown(key, i, upstream=f"Unrecognized key '{key}' in Accelerator allocator config.",
                                  upstream_type="ValueError", stage=stage)
            i = tk.skip_key(i, key)
        i = tk.separator(i, key)
        i += 1

    st.roundup_power2_divisions = tuple(table)
    if seen_round and seen_cached and st.pinned_max_round_threshold > st.pinned_max_cached_size:
        r, c = st.pinned_max_round_threshold >> 20, st.pinned_max_cached_size >> 20
        walk.note("pinned_max_round_threshold_mb",
                  f"pinned_max_round_threshold_mb ({r}) > pinned_max_cached_size_mb ({c}): the cache limit "
                  "wins, pinned requests above it are never rounded up",
                  upstream=f"pinned_max_round_threshold_mb ({r}) > pinned_max_cached_size_mb ({c}). The cache "
                           "size limit takes precedence: allocations above pinned_max_cached_size_mb are never "
                           "rounded up.")
    return st


# -- CUDA ------------------------------------------------------------------------------------------
_CUDA_BOOLS = ("release_lock_on_cudamalloc", "release_lock_on_hipmalloc", "pinned_use_cuda_host_register",
               "pinned_use_hip_host_register", "graph_capture_record_stream_reuse", "pinned_free_catch_all",
               "throw_on_cudamalloc_oom")


def load_time_backend(walk: Walk) -> str:
    """The backend libc10_cuda picks when it loads: the value after the first ``backend`` token [I]."""
    tokens = walk.tokens
    for j, token in enumerate(tokens):
        if token.text == "backend":
            value = tokens[j + 2].text if j + 2 < len(tokens) else ""
            return "cudaMallocAsync" if value == "cudaMallocAsync" else "native"
    return "native"


def cuda_hook_pass(walk: Walk, keys: frozenset[str]) -> None:
    """Replay ``CUDAAllocatorConfig::parseArgs`` (the device hook) on the same tokens."""
    stage = "device"
    tk = ConfigTokenizer(walk, stage)
    own = walk.dialect.device_keys
    loaded = load_time_backend(walk)
    i = 0
    while i < tk.n:
        key = walk.tok(i)
        if key in own and key == "backend":
            tk.check_token(i + 1, ":", key)
            i += 2
            value = tk.at(i, key)
            if value not in ("native", "cudaMallocAsync"):
                walk.fail(f"backend:{value} is not a backend", i, key=key, stage=stage, upstream_type="ValueError",
                          upstream="Unknown allocator backend, options are native and cudaMallocAsync",
                          suggestion="use backend:native or backend:cudaMallocAsync")
            if value != loaded:
                walk.fail(f"backend:{value} contradicts the earlier backend:{loaded}", i, key=key, stage=stage,
                          upstream="Allocator backend parsed at runtime != allocator backend parsed at load time",
                          suggestion="name one backend only")
            walk.set(key, value, i)
        elif key in own and key in _CUDA_BOOLS:
            tk.check_token(i + 1, ":", key)
            i += 2
            walk.set(key, tk.to_bool(i, key), i)
        elif key in own and key == "pinned_num_register_threads":
            tk.check_token(i + 1, ":", key)
            i += 2
            threads = tk.to_size_t(i, key)
            if not _cxx.is_power_of_two(threads):
                walk.fail(f"{key}:{walk.tok(i)} is not a power of 2", i, key=key, stage=stage,
                          upstream_type="ValueError", suggestion="use 1, 2, 4, ... 128",
                          upstream=f"Number of register threads has to be power of 2, got {threads}")
            if threads > 128:
                walk.fail(f"{key}:{walk.tok(i)} is too large", i, key=key, stage=stage, upstream_type="ValueError",
                          upstream=f"Number of register threads should be less than or equal to 128, got {threads}",
                          suggestion="use at most 128")
            walk.set(key, threads, i)
        elif key in own and key == "pinned_reserve_segment_size_mb":
            tk.check_token(i + 1, ":", key)
            i += 2
            reserve_mb = tk.to_size_t(i, key)
            if reserve_mb == 0:
                walk.fail(f"{key}:{walk.tok(i)} must be positive", i, key=key, stage=stage,
                          upstream_type="ValueError", upstream="Pinned reserve segment size has to be greater than 0",
                          suggestion="use a size in MiB above 0, or leave the key out")
            walk.set(key, reserve_mb, i)
        elif key in own and key == "per_process_memory_fraction":
            tk.check_token(i + 1, ":", key)
            i += 2
            fraction = tk.to_double(i, key)
            if not 0.0 <= fraction <= 1.0:
                walk.fail(f"{key}:{walk.tok(i)} is out of range", i, key=key, stage=stage, upstream_type="ValueError",
                          upstream="per_process_memory_fraction is invalid, set it in [0.0, 1.0]",
                          suggestion="use a fraction from 0 to 1, e.g. 0.9")
            walk.set(key, fraction, i)
        else:
            if key not in keys:
                walk.fail_unknown(key, i, upstream=f"Unrecognized key '{key}' in CUDA allocator config.",
                                  upstream_type="ValueError", stage=stage)
            i = tk.skip_key(i, key)
        i = tk.separator(i, key)
        i += 1


# -- torch_npu master ------------------------------------------------------------------------------
_NPU_BOOLS = {"pin_memory_expandable_segments": "m_pin_memory_expandable_segments",
              "pinned_mem_register": "m_pinned_mem_register",
              "multi_stream_lazy_reclaim": "multi_stream_lazy_reclaim",
              "release_lock_on_npumalloc": "release_lock_on_npumalloc",
              "throw_on_npumalloc_oom": "throw_on_npumalloc_oom"}


def npu_key_prepass(walk: Walk, keys: frozenset[str]) -> None:
    """torch_npu master first checks every key against accelerator + NPU keys (docs/allocator.md §1.5).

    Its other first-pass error, an accelerator key outside torch_npu's supported subset ("torch_npu not
    support key"), cannot fire with torch 2.13: torch_npu supports all nine accelerator keys.
    """
    tk = ConfigTokenizer(walk, "device")
    i = 0
    while i < tk.n:
        key = walk.tok(i)
        if key not in keys:
            walk.fail_unknown(key, i, upstream=f"Unrecognized key '{key}' in NPU allocator config",
                              upstream_type="ValueError", stage="device")
        i = tk.skip_key(i, key)
        i = tk.separator(i, key)
        i += 1


def npu_hook_pass(walk: Walk, keys: frozenset[str]) -> None:
    """Replay ``NPUAllocatorConfig::parseArgs`` (master) for the NPU-only keys."""
    stage = "device"
    tk = ConfigTokenizer(walk, stage)
    w, n = walk, tk.n

    def value_index(i: int, key: str, missing: str) -> int:
        tk.check_token(i + 1, ":", key)
        i += 2
        if i >= n:
            w.fail_missing(key, i, upstream=missing, stage=stage)
        return i

    def digits(i: int, key: str) -> int:
        if not _cxx.is_all_digits(w.tok(i)):
            w.fail(f"{key}:{w.tok(i)} must be a whole number", i, key=key, stage=stage,
                   upstream=f"CachingAllocator option {key} is invalid.",
                   suggestion=f"write digits only, e.g. {example(key)}")
        return int(w.number("stoi", i, key, stage=stage))

    i = 0
    while i < n:
        key = w.tok(i)
        if key in _NPU_BOOLS:
            i = value_index(i, key, f"Error, expecting {_NPU_BOOLS[key]} value")
            if w.tok(i) not in ("True", "False"):
                w.fail_bool(key, i, upstream=f"Expected a single True/False argument for {key}",
                            upstream_type="RuntimeError", stage=stage)
            w.set(key, w.tok(i) == "True", i)
        elif key == "base_addr_aligned_kb":
            i = value_index(i, key, "Error, expecting base_addr_aligned_kb value")
            value = digits(i, key)
            if len(w.tok(i)) != len(str(value)) or value > 16:
                w.fail(f"{key}:{w.tok(i)} is out of range", i, key=key, stage=stage,
                       upstream="CachingAllocator option base_addr_aligned_kb error, must be [0~16], dtype is int",
                       suggestion="use a whole number from 0 to 16 without leading zeros")
            w.set(key, value, i)
        elif key == "page_size":
            if not i + 2 < n:
                w.fail("page_size has no value", n, key=key, stage=stage,
                       upstream="page_size requires format 'page_size:1g'", suggestion="write page_size:1g")
            tk.check_token(i + 1, ":", key)
            i += 2
            if w.tok(i) != "1g":
                w.fail(f"page_size:{w.tok(i)} is not supported", i, key=key, stage=stage,
                       upstream=f"Unsupported page_size value: {w.tok(i)}",
                       suggestion="the only value is 1g (omit the key for the default 2 MiB pages)")
            w.set(key, "1g", i)
        elif key == "segment_size_mb":
            i = value_index(i, key, "Error, expecting segment_size_mb value")
            value = digits(i, key)
            if not 20 <= value <= 512:
                w.fail(f"{key}:{w.tok(i)} is out of range", i, key=key, stage=stage,
                       upstream="CachingAllocator option segment_size_mb error, must be [20, 512], dtype is int",
                       suggestion="use 20 to 512 (MiB), or better large_segment_size_mb")
            w.set(key, value, i)
        elif key == "per_process_memory_fraction":
            i = value_index(i, key, "Error, expecting per_process_memory_fraction value")
            fraction = float(w.number("stod", i, key, stage=stage))
            if not 0.0 <= fraction <= 1.0:
                w.fail(f"{key}:{w.tok(i)} is out of range", i, key=key, stage=stage,
                       upstream="per_process_memory_fraction is invalid, set it in [0.0, 1.0]",
                       suggestion="use a fraction from 0 to 1, e.g. 0.9")
            w.set(key, fraction, i)
        elif key == "pinned_reserve_segment_size_mb":
            tk.check_token(i + 1, ":", key)
            i += 2
            w.set(key, tk.to_size_t(i, key), i)
        else:
            if key not in keys:
                w.fail_unknown(key, i, upstream=f"Unrecognized key '{key}' in NPU allocator config",
                               upstream_type="ValueError", stage=stage)
            i = tk.skip_key(i, key)
        i = tk.separator(i, key)
        i += 1


def run_unified(walk: Walk) -> AcceleratorState:
    """The whole unified parse of ``walk.dialect`` in upstream order; returns the accelerator state."""
    d = walk.dialect
    keys = frozenset(d.keys) | frozenset(a for a, k in ALIASES.items() if k in d.keys and d.platform == "cuda")
    if d.platform == "cuda":
        state = accelerator_pass(walk, torch_version=d.version, hook_keys=keys)
        cuda_hook_pass(walk, keys)
        return state
    npu_key_prepass(walk, keys)
    state = accelerator_pass(walk, torch_version="2.13", hook_keys=keys)
    if state.use_expandable_segments and (
        state.max_split_size != SIZE_MAX or state.garbage_collection_threshold != 0
    ):
        npu_expandable_conflict(walk)
    npu_hook_pass(walk, keys)
    return state

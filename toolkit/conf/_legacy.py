"""The self-contained legacy parsers: PyTorch CUDA <= 2.9 (``CUDAAllocatorConfig::parseArgs``) and
torch_npu <= 26.1.0 (``CachingAllocatorConfig::parseArgs``), replayed token by token.

Legacy rules (docs/allocator.md §1.3, §1.5; code read at pytorch index id 706613213 and an Ascend/pytorch
``NPUAllocatorConfig.cpp`` of the 7.x/26.x line): only ``' '`` is whitespace; separators are checked
strictly (``Error parsing CachingAllocator settings, expected :``); integers go through ``stoi`` (int32,
prefix parse; on CUDA a negative wraps to a huge size_t and passes ``> 20``); torch_npu first demands
all-digit strings for its sizes; an unknown key is ``Unrecognized CachingAllocator option: <key>``.
"""

from __future__ import annotations

from collections.abc import Callable

from toolkit.conf import _cxx
from toolkit.conf._walk import SIZE_MAX_MB, Walk, apply_roundup_item, example

_STAGE = "legacy"


class LegacyParser:
    """Replays one legacy ``parseArgs`` over ``walk.tokens`` (a fresh process: defaults before parsing)."""

    def __init__(self, walk: Walk) -> None:
        self.w = walk
        self.t = walk.tokens
        self.n = len(walk.tokens)
        self.d = walk.dialect
        self.npu = self.d.platform == "npu"
        self.expandable_key_seen = False
        self.load_time_backend: str | None = None
        self.handlers: dict[str, Callable[[int, str], int]] = self._handlers()

    def _handlers(self) -> dict[str, Callable[[int, str], int]]:
        d = self.d
        h: dict[str, Callable[[int, str], int]] = {
            "max_split_size_mb": self._max_split,
            "garbage_collection_threshold": self._gc,
            "expandable_segments": self._expandable,
        }
        if self.npu:
            h.update(base_addr_aligned_kb=self._base_addr, page_size=self._page_size)
            if d.at_least("7.3.0"):
                h.update(roundup_power2_divisions=self._roundup, segment_size_mb=self._segment_size)
            if d.at_least("7.3.1"):
                h["pin_memory_expandable_segments"] = self._bool_checked
            if d.at_least("26.0.0"):
                h.update(pinned_mem_register=self._bool_checked, pinned_use_background_threads=self._bool_checked,
                         multi_stream_lazy_reclaim=self._bool_checked,
                         pinned_reserve_segment_size_mb=self._pinned_reserve)
            if d.at_least("26.1.0"):
                h.update(large_segment_size_mb=self._large_segment, per_process_memory_fraction=self._fraction)
            return h
        h.update(
            max_non_split_rounding_mb=self._max_split,
            roundup_power2_divisions=self._roundup,
            backend=self._backend,
            release_lock_on_cudamalloc=self._bool_inline,
            release_lock_on_hipmalloc=self._bool_inline,
            pinned_use_cuda_host_register=self._bool_checked,
            pinned_use_hip_host_register=self._bool_checked,
            pinned_num_register_threads=self._num_threads,
            pinned_use_background_threads=self._bool_checked,
        )
        if d.at_least("2.9"):
            h["graph_capture_record_stream_reuse"] = self._bool_checked
        return h

    # -- the main loop ------------------------------------------------------------------------------
    def run(self) -> None:
        i = 0
        while i < self.n:
            key = self.t[i].text
            handler = self.handlers.get(key)
            if handler is None:
                self.w.fail_unknown(key, i, upstream=f"Unrecognized CachingAllocator option: {key}",
                                   upstream_type="RuntimeError", stage=_STAGE)
            i = handler(i, key)
            if i + 1 < self.n:
                i = self._consume(i + 1, ",", key)
            i += 1
        if self.npu:
            self._npu_cross_checks()

    def _consume(self, i: int, c: str, key: str) -> int:
        if i < self.n and self.t[i].text == c:
            return i
        upstream = f"Error parsing CachingAllocator settings, expected {c}"
        if c == ":":
            if i >= self.n:
                self.w.fail_missing(key, i, upstream=upstream, stage=_STAGE)
            self.w.fail(f"expected ':' after {key} but found {self.t[i].text!r}", i, key=key, upstream=upstream,
                        stage=_STAGE, suggestion=f"write {key}:<value>, e.g. {example(key)}")
        found = self.t[i].text if i < self.n else "the end"
        self.w.fail(f"expected ',' after the value of {key} but found {found!r}", i, key=key, upstream=upstream,
                    stage=_STAGE, suggestion="separate key:value pairs with ','; lists go in [ ]")

    def _value_index(self, i: int, key: str, missing: str) -> int:
        """``consumeToken(config, ++i, ':'); if (++i < config.size()) ... else TORCH_CHECK(false, missing)``."""
        self._consume(i + 1, ":", key)
        i += 2
        if i >= self.n:
            self.w.fail_missing(key, i, upstream=missing, stage=_STAGE)
        return i

    # -- sizes --------------------------------------------------------------------------------------
    def _digits_only(self, i: int, key: str) -> None:
        if self.npu and not _cxx.is_all_digits(self.t[i].text):
            self.w.fail(f"{key}:{self.t[i].text} must be a whole number", i, key=key,
                        upstream=f"CachingAllocator option {key} is invalid.", stage=_STAGE,
                        suggestion=f"write digits only, e.g. {example(key)}")

    def _max_split(self, i: int, key: str) -> int:  # also max_non_split_rounding_mb (CUDA)
        i = self._value_index(i, key, f"Error, expecting {key} value")
        self._digits_only(i, key)
        value = _cxx.to_size_t(int(self.w.number("stoi", i, key, stage=_STAGE)))
        deferred = self.npu and self.d.at_least("26.1.0")  # checked against large_segment_size_mb at the end
        if not deferred and not value > 20:
            self.w.fail(f"{key}:{self.t[i].text} is too small", i, key=key,
                        upstream=f"CachingAllocator option {key} too small, must be > 20", stage=_STAGE,
                        suggestion=f"use at least 21 ({self.d.product} {self.d.version} needs > 20)")
        self.w.set(key, min(value, SIZE_MAX_MB), i)
        return i

    def _large_segment(self, i: int, key: str) -> int:  # torch_npu 26.1.0 [I: mirrors c10 2.11]
        i = self._value_index(i, key, f"Error, expecting {key} value")
        self._digits_only(i, key)
        value = _cxx.to_size_t(int(self.w.number("stoi", i, key, stage=_STAGE)))
        if not value > 10:
            self.w.fail(f"{key}:{self.t[i].text} is too small", i, key=key,
                        upstream="CachingAllocator option large_segment_size_mb must be > 10 MB", stage=_STAGE,
                        suggestion="use more than 10 (MiB)")
        self.w.set(key, min(value, SIZE_MAX_MB), i)
        return i

    def _segment_size(self, i: int, key: str) -> int:
        i = self._value_index(i, key, "Error, expecting segment_size_mb value")
        self._digits_only(i, key)
        value = int(self.w.number("stoi", i, key, stage=_STAGE))
        if not 20 <= value <= 512:
            self.w.fail(f"{key}:{self.t[i].text} is out of range", i, key=key,
                        upstream="CachingAllocator option segment_size_mb error, must be [20, 512], dtype is int",
                        stage=_STAGE, suggestion="use 20 to 512 (MiB)")
        self.w.set(key, value, i)
        return i

    def _base_addr(self, i: int, key: str) -> int:
        i = self._value_index(i, key, "Error, expecting base_addr_aligned_kb value")
        self._digits_only(i, key)
        text = self.t[i].text
        value = int(self.w.number("stoi", i, key, stage=_STAGE))
        if len(text) != len(str(value)) or value > 16:  # the length test rejects leading zeros ("016")
            self.w.fail(f"{key}:{text} is out of range", i, key=key,
                        upstream="CachingAllocator option base_addr_aligned_kb error, must be [0~16], dtype is int",
                        stage=_STAGE, suggestion="use a whole number from 0 to 16 without leading zeros")
        self.w.set(key, value, i)
        return i

    def _pinned_reserve(self, i: int, key: str) -> int:  # torch_npu 26.0.0: not validated [I: stoi assumed]
        i = self._value_index(i, key, f"Error, expecting {key} value")
        value = _cxx.to_size_t(int(self.w.number("stoi", i, key, stage=_STAGE)))
        self.w.set(key, min(value, SIZE_MAX_MB), i)
        return i

    def _num_threads(self, i: int, key: str) -> int:
        i = self._value_index(i, key, "Error, expecting pinned_num_register_threads value")
        value = _cxx.to_size_t(int(self.w.number("stoi", i, key, stage=_STAGE)))
        if not _cxx.is_power_of_two(value):
            self.w.fail(f"{key}:{self.t[i].text} is not a power of 2", i, key=key,
                        upstream="Number of register threads has to be power of 2 ", stage=_STAGE,
                        suggestion="use 1, 2, 4, ... 128")
        if value > 128:
            self.w.fail(f"{key}:{self.t[i].text} is too large", i, key=key,
                        upstream="Number of register threads should be less than or equal to 128",
                        stage=_STAGE, suggestion="use at most 128")
        self.w.set(key, value, i)
        return i

    # -- floats -------------------------------------------------------------------------------------
    def _gc(self, i: int, key: str) -> int:
        i = self._value_index(i, key, "Error, expecting garbage_collection_threshold value")
        value = float(self.w.number("stod", i, key, stage=_STAGE))
        if not value > 0:  # NaN fails here too
            self.w.fail(f"{key}:{self.t[i].text} is out of range", i, key=key,
                        upstream="garbage_collect_threshold too small, set it 0.0~1.0", stage=_STAGE,
                        suggestion="use a fraction strictly between 0 and 1, e.g. 0.8")
        if not value < 1.0:
            self.w.fail(f"{key}:{self.t[i].text} is out of range", i, key=key,
                        upstream="garbage_collect_threshold too big, set it 0.0~1.0", stage=_STAGE,
                        suggestion="use a fraction strictly between 0 and 1, e.g. 0.8")
        self.w.set(key, value, i)
        return i

    def _fraction(self, i: int, key: str) -> int:  # per_process_memory_fraction, torch_npu 26.1.0
        i = self._value_index(i, key, "Error, expecting per_process_memory_fraction value")
        value = float(self.w.number("stod", i, key, stage=_STAGE))
        if not 0.0 <= value <= 1.0:
            self.w.fail(f"{key}:{self.t[i].text} is out of range", i, key=key,
                        upstream="per_process_memory_fraction is invalid, set it in [0.0, 1.0]", stage=_STAGE,
                        suggestion="use a fraction from 0 to 1, e.g. 0.9")
        self.w.set(key, value, i)
        return i

    # -- booleans and choices -----------------------------------------------------------------------
    def _bool_inline(self, i: int, key: str) -> int:
        """CUDA's inline branches (expandable_segments, release_lock_on_cudamalloc): no 'expecting' message."""
        self._consume(i + 1, ":", key)
        i += 2
        name = "release_lock_on_cudamalloc" if key.startswith("release_lock") else key
        if i >= self.n or self.t[i].text not in ("True", "False"):
            self.w.fail_bool(key, i, upstream=f"Expected a single True/False argument for {name}",
                             upstream_type="RuntimeError", stage=_STAGE)
        self.w.set(key, self.t[i].text == "True", i)
        return i

    def _bool_checked(self, i: int, key: str) -> int:
        """The parse*() helpers: a missing value has its own 'Error, expecting' message."""
        name = {"pinned_use_hip_host_register": "pinned_use_cuda_host_register",
                "pin_memory_expandable_segments": "m_pin_memory_expandable_segments",
                "pinned_mem_register": "m_pinned_mem_register"}.get(key, key)
        i = self._value_index(i, key, f"Error, expecting {name} value")
        if self.t[i].text not in ("True", "False"):
            label = "pinned_use_cuda_host_register" if key == "pinned_use_hip_host_register" else key
            self.w.fail_bool(key, i, upstream=f"Expected a single True/False argument for {label}",
                             upstream_type="RuntimeError", stage=_STAGE)
        self.w.set(key, self.t[i].text == "True", i)
        return i

    def _expandable(self, i: int, key: str) -> int:
        self.expandable_key_seen = True
        if not self.npu:
            return self._bool_inline(i, key)
        return self._bool_checked(i, key)

    def _backend(self, i: int, key: str) -> int:
        i = self._value_index(i, key, "Error parsing backend value")
        value = self.t[i].text
        if value not in ("native", "cudaMallocAsync"):
            self.w.fail(f"backend:{value} is not a backend", i, key=key,
                        upstream="Unknown allocator backend, options are native and cudaMallocAsync",
                        stage=_STAGE, suggestion="use backend:native or backend:cudaMallocAsync")
        self._check_load_time_backend(value, i)
        self.w.set(key, value, i)
        return i

    def _check_load_time_backend(self, value: str, i: int) -> None:
        # The backend is chosen once, when libc10_cuda loads, from the first `backend` entry; a later
        # parse that names another one trips an internal assert [I: scan order of the static initializer].
        if self.load_time_backend is None:
            self.load_time_backend = value
        elif value != self.load_time_backend:
            self.w.fail(f"backend:{value} contradicts the earlier backend:{self.load_time_backend}", i,
                        key="backend", stage=_STAGE,
                        upstream="Allocator backend parsed at runtime != allocator backend parsed at load time",
                        suggestion="name one backend only")

    def _page_size(self, i: int, key: str) -> int:
        if not i + 2 < self.n:
            self.w.fail("page_size has no value", self.n, key=key,
                        upstream="page_size requires format 'page_size:1g'", stage=_STAGE,
                        suggestion="write page_size:1g")
        if self.t[i + 1].text != ":":
            self.w.fail(f"expected ':' after page_size but found {self.t[i + 1].text!r}", i + 1, key=key,
                        upstream="Expected ':' after page_size", stage=_STAGE, suggestion="write page_size:1g")
        value = self.t[i + 2].text
        if value != "1g":
            self.w.fail(f"page_size:{value} is not supported", i + 2, key=key,
                        upstream=f"Unsupported page_size value: {value}", stage=_STAGE,
                        suggestion="the only value is 1g (omit the key for the default 2 MiB pages)")
        self.w.set(key, value, i + 2)
        return i + 2

    # -- roundup_power2_divisions -------------------------------------------------------------------
    def _roundup(self, i: int, key: str) -> int:
        return self._roundup_npu(i, key) if self.npu else self._roundup_cuda(i, key)

    def _roundup_cuda(self, i: int, key: str) -> int:
        i = self._value_index(i, key, "Error, expecting roundup_power2_divisions value")
        w, t, table = self.w, self.t, self.w.roundup_table
        if t[i].text != "[":
            value = _cxx.to_size_t(int(w.number("stoi", i, key, stage=_STAGE)))
            if not _cxx.is_power_of_two(value):
                w.fail(f"{key}:{t[i].text} is not a power of 2", i, key=key, stage=_STAGE,
                       upstream="For roundups, the divisions has to be power of 2 ",
                       suggestion="use 1, 2, 4, 8, ... (a list allows 0 to disable an interval)")
            table[:] = [value] * len(table)
            w.roundup_values.append(value)
            w.set(key, value, i)
            return i
        start, items, state = i, [], {"first": True, "last": 0}
        i += 1
        while i < self.n and t[i].text != "]":
            boundary_text = t[i].text
            self._consume(i + 1, ":", key)
            i += 2
            if i >= self.n:
                w.fail("roundup_power2_divisions list ends early", i, key=key, stage=_STAGE,
                       upstream="Error parsing roundup_power2_divisions value", suggestion=_ROUNDUP_HINT)
            divisions = _cxx.to_size_t(int(w.number("stoi", i, key, stage=_STAGE)))
            self._check_divisions(divisions, i, key)
            if boundary_text == ">":
                boundary: int | str = ">"
            else:
                boundary = int(w.number("stoul", i - 2, key, stage=_STAGE))
                self._check_boundary(boundary, i - 2, key)
            apply_roundup_item(table, state, boundary, divisions, legacy_gt=True)
            items.append((boundary, divisions))
            # Upstream reads config[i + 1] without a bounds check here (undefined behaviour at the
            # end of the string); it then fails to find ',' -- modelled as that error [I].
            if i + 1 >= self.n:
                w.fail(f"the list of {key} is not closed with ']'", i + 1, key=key, stage=_STAGE,
                       upstream="Error parsing CachingAllocator settings, expected ,", suggestion=_ROUNDUP_HINT)
            if t[i + 1].text != "]":
                i = self._consume(i + 1, ",", key)
            i += 1
        # An unclosed '[' simply ends the string: the legacy CUDA parser accepts it.
        divisions_list = tuple(items)
        w.roundup_values.append(divisions_list)
        w.set(key, divisions_list, start)
        return i

    def _roundup_npu(self, i: int, key: str) -> int:
        self._consume(i + 1, ":", key)
        i += 1
        w, t, table = self.w, self.t, self.w.roundup_table
        if not i + 1 < self.n:
            w.fail_missing(key, i + 1, upstream="Error, expecting roundup_power2_divisions value", stage=_STAGE)
        i += 1
        if t[i].text != "[":
            value = int(w.number("stoull", i, key, stage=_STAGE))
            self._check_divisions(value, i, key)  # torch_npu accepts 0 here (CUDA does not)
            table[:] = [value] * len(table)
            w.roundup_values.append(value)
            w.set(key, value, i)
            return i
        start, items, state = i, [], {"first": True, "last": 0}
        i += 1
        while i < self.n:
            if t[i].text == "]":
                break
            boundary_index = i
            self._consume(i + 1, ":", key)
            i += 2
            if i >= self.n:
                w.fail("roundup_power2_divisions list ends early", i, key=key, stage=_STAGE,
                       upstream="Expected a value for roundup_power2_divisions entry", suggestion=_ROUNDUP_HINT)
            divisions = int(w.number("stoull", i, key, stage=_STAGE))
            self._check_divisions(divisions, i, key)
            if t[boundary_index].text == ">":
                boundary: int | str = ">"
            else:
                boundary = int(w.number("stoull", boundary_index, key, stage=_STAGE))
                self._check_boundary(boundary, boundary_index, key)
            apply_roundup_item(table, state, boundary, divisions, legacy_gt=False)
            items.append((boundary, divisions))
            if i + 1 < self.n and t[i + 1].text != "]":
                i = self._consume(i + 1, ",", key)
            i += 1
        if i >= self.n:
            w.fail("roundup_power2_divisions list has no closing ']'", i, key=key, stage=_STAGE,
                   upstream="Expected closing bracket ']' while parsing roundup_power2_divisions",
                   suggestion=_ROUNDUP_HINT)
        divisions_list = tuple(items)
        w.roundup_values.append(divisions_list)
        w.set(key, divisions_list, start)
        return i

    def _check_divisions(self, value: int, i: int, key: str) -> None:
        if value != 0 and not _cxx.is_power_of_two(value):
            self.w.fail(f"{key}: {self.t[i].text} divisions is not a power of 2", i, key=key, stage=_STAGE,
                        upstream="For roundups, the divisions has to be power of 2 or 0 to disable roundup ",
                        suggestion="divisions must be 0 (off) or a power of 2, e.g. [256:1,512:2,>:4]")

    def _check_boundary(self, value: int, i: int, key: str) -> None:
        if not _cxx.is_power_of_two(value):
            self.w.fail(f"{key}: interval {self.t[i].text} is not a power of 2", i, key=key, stage=_STAGE,
                        upstream="For roundups, the intervals have to be power of 2 ",
                        suggestion="interval bounds are powers of 2 in MiB (or '>'), e.g. [256:1,512:2,>:4]")

    # -- torch_npu checks after the loop ------------------------------------------------------------
    def _npu_cross_checks(self) -> None:
        w, opts = self.w, self.w.options
        if self.d.at_least("26.1.0") and "max_split_size_mb" in opts:
            floor = int(opts.get("large_segment_size_mb", 20))  # type: ignore[call-overload]
            if int(opts["max_split_size_mb"]) < floor:  # type: ignore[call-overload]
                w.fail(f"max_split_size_mb:{opts['max_split_size_mb']} is too small", None,
                       key="max_split_size_mb", stage=_STAGE, position=w.positions["max_split_size_mb"],
                       upstream=f"CachingAllocator option max_split_size_mb too small, must be >= {floor}",
                       suggestion=f"use at least {floor} (large_segment_size_mb)")
        if opts.get("expandable_segments") and self.expandable_key_seen and (
            "max_split_size_mb" in opts or "garbage_collection_threshold" in opts
        ):
            npu_expandable_conflict(w)


_ROUNDUP_HINT = "write roundup_power2_divisions:[256:1,512:2,>:4] (power-of-2 MiB bounds, divisions 0 or power of 2)"


def npu_expandable_conflict(w: Walk) -> None:
    """torch_npu refuses expandable segments together with max_split_size_mb / garbage collection."""
    which = [k for k in ("max_split_size_mb", "garbage_collection_threshold") if k in w.options]
    w.fail(f"expandable_segments:True cannot be combined with {' or '.join(which)}", None,
           key=which[0], stage="cross-check", position=w.positions.get(which[0]),
           upstream="`max_split_size_mb` or `garbage_collection_threshold`, cannot be enabled with "
                    "`expandable_segments`, please set `expandable_segments` to `False`.",
           suggestion=f"drop {' and '.join(which)} (expandable segments do not fragment) or set "
                      "expandable_segments:False")


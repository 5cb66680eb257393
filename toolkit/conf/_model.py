"""``parse`` a conf string into an :class:`AllocConf`, and format it back (canonical form).

A conf is modelled as upstream sees it in a *fresh* process: defaults, then one parse of the string.
(At run time upstream re-parses on top of the previous state and resets only ``max_split_size_mb``,
``roundup_power2_divisions``, ``garbage_collection_threshold`` -- and from 2.11 ``max_non_split_rounding_mb``
-- so ``_set_allocator_settings("expandable_segments:False")`` silently drops an earlier max split; spec
§1.2.)
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Union

from toolkit.conf._advice import advise
from toolkit.conf._cxx import INT_MAX
from toolkit.conf._legacy import LegacyParser
from toolkit.conf._tokens import tokenize
from toolkit.conf._unified import run_unified
from toolkit.conf._walk import MiB, SIZE_MAX_MB, Walk, example, roundup_table, unknown_key_hint
from toolkit.conf.dialects import ALIASES, KNOWN_KEYS, Dialect, resolve_dialect
from toolkit.conf._errors import ConfError, ConfWarning

RoundupList = tuple[tuple[Union[int, str], int], ...]
Value = Union[bool, int, float, str, RoundupList]
_DBL_MIN = sys.float_info.min
_LARGE_BUFFER_BYTES = 20 * MiB  # kLargeBuffer


@dataclass(frozen=True, eq=False)
class AllocConf:
    """A parsed allocator conf for one (platform, version) dialect.

    ``options`` holds the typed values of the keys given (bool, int MiB/KiB/count, float, str, or for
    ``roundup_power2_divisions`` an int or a tuple of ``(bound_mib | ">", divisions)`` pairs) in the
    order the keys first appear; the properties apply upstream defaults. ``str(conf)`` is the canonical
    string (one ``key:value`` per key, normalised values, no spaces): it re-parses to an equal conf.
    Two confs are equal when platform, version and options are, in any order (the order of keys never
    changes what upstream does; warnings and the original text are not compared).

    Example:
        >>> conf = parse("expandable_segments:True, max_split_size_mb:512", platform="cuda")
        >>> str(conf), conf.max_split_size_bytes
        ('expandable_segments:True,max_split_size_mb:512', 536870912)
    """

    platform: str
    version: str
    items: tuple[tuple[str, Value], ...]
    warnings: tuple[ConfWarning, ...] = field(default=(), compare=False)
    text: str | None = field(default=None, compare=False)  # the string as given

    def _identity(self) -> tuple:
        return self.platform, self.version, tuple(sorted(self.items, key=lambda kv: kv[0]))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AllocConf):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    # -- mapping-like access ------------------------------------------------------------------------
    @property
    def options(self) -> Mapping[str, Value]:
        return MappingProxyType(dict(self.items))

    @property
    def dialect(self) -> Dialect:
        return Dialect(self.platform, self.version)  # type: ignore[arg-type]

    def get(self, key: str) -> Value | None:
        """The value in effect for ``key``: as given, else upstream's default (None = unlimited/unset)."""
        name = ALIASES.get(key, key)
        if name not in self.dialect.keys:
            raise ConfError(f"unknown key {key!r}", key=key, suggestion=unknown_key_hint(key, self.dialect),
                            stage="input", platform=self.platform, version=self.version)
        options = dict(self.items)
        if name in options:
            return options[name]
        if name == "max_non_split_rounding_mb":
            return self.max_non_split_rounding_bytes // MiB
        return KNOWN_KEYS[name].default  # type: ignore[return-value]

    def with_option(self, key: str, value: object) -> AllocConf:
        """A new conf with ``key`` set to ``value`` (typed, or text as in a conf string); None removes it.

        The result is re-parsed, so every upstream rule applies (raises :class:`ConfError`).
        """
        name = ALIASES.get(key, key)
        if name not in self.dialect.keys:
            raise ConfError(f"unknown key {key!r}", key=key, suggestion=unknown_key_hint(key, self.dialect),
                            stage="input", platform=self.platform, version=self.version)
        if isinstance(value, str) and KNOWN_KEYS[name].kind != "roundup" and any(c in value for c in ",:[]"):
            raise ConfError(f"{name}:{value} is not a single value", key=name, suggestion=f"e.g. {example(name)}",
                            stage="input", platform=self.platform, version=self.version)
        options = dict(self.items)  # a new key goes last, an existing one keeps its place
        if value is None:
            options.pop(name, None)
        else:
            options[name] = _freeze(value)
        text = ",".join(f"{k}:{format_value(self.dialect, k, v)}" for k, v in options.items())
        return parse(text, self.platform, self.version)

    def __str__(self) -> str:
        return ",".join(f"{k}:{format_value(self.dialect, k, v)}" for k, v in self.items)

    def __repr__(self) -> str:
        return f"AllocConf({str(self)!r}, platform={self.platform!r}, version={self.version!r})"

    # -- behaviour the simulator reads (defaults applied) -------------------------------------------
    @property
    def expandable_segments(self) -> bool:
        return bool(dict(self.items).get("expandable_segments", False))

    @property
    def max_split_size_bytes(self) -> int | None:
        """None = unlimited (upstream SIZE_MAX)."""
        value = dict(self.items).get("max_split_size_mb")
        return None if value is None else int(value) * MiB  # type: ignore[arg-type]

    @property
    def max_non_split_rounding_bytes(self) -> int:
        """20 MiB, or in PyTorch 2.11+ / torch_npu master the large segment size, unless given."""
        value = dict(self.items).get("max_non_split_rounding_mb")
        if value is not None:
            return int(value) * MiB  # type: ignore[arg-type]
        d = self.dialect
        follows_large_segment = (d.platform == "cuda" and d.at_least("2.11")) or (d.platform == "npu" and d.unified)
        return self.large_segment_size_bytes if follows_large_segment else _LARGE_BUFFER_BYTES

    @property
    def roundup_power2_divisions(self) -> tuple[int, ...]:
        """16 division counts, one per size interval (index 0: < 2 MiB ... 15: >= 32 GiB), docs/allocator.md §2.4."""
        value = dict(self.items).get("roundup_power2_divisions", 0)
        legacy = self.platform == "cuda" and not self.dialect.unified
        return roundup_table(value, legacy_gt=legacy)

    @property
    def garbage_collection_threshold(self) -> float:
        """0.0 = off."""
        return float(dict(self.items).get("garbage_collection_threshold", 0.0))  # type: ignore[arg-type]

    @property
    def per_process_memory_fraction(self) -> float | None:
        """None = not set by the conf (upstream default 1.0, no cap)."""
        value = dict(self.items).get("per_process_memory_fraction")
        return None if value is None else float(value)  # type: ignore[arg-type]

    @property
    def large_segment_size_bytes(self) -> int:
        """Segment size for 1-10 MiB requests (20 MiB unless large_segment_size_mb)."""
        return int(dict(self.items).get("large_segment_size_mb", 20)) * MiB  # type: ignore[arg-type]

    @property
    def expandable_large_page_bytes(self) -> int:
        """Large-pool page of expandable segments (docs/allocator.md §3.2; NPU also honours segment_size_mb and 1g pages)."""
        options = dict(self.items)
        if self.platform == "npu":
            if self.page_size_1g:
                return 1024 * MiB
            if options.get("large_segment_size_mb", 20) != 20:
                return self.large_segment_size_bytes
            if "segment_size_mb" in options:
                return int(options["segment_size_mb"]) * MiB  # type: ignore[arg-type]
        return self.large_segment_size_bytes

    @property
    def page_size_1g(self) -> bool:
        return dict(self.items).get("page_size") == "1g"

    @property
    def base_addr_aligned_kb(self) -> int:
        """NPU: alignment of >= 2 MiB expandable blocks (default 16); CUDA: 0 (no such alignment)."""
        if self.platform != "npu":
            return 0
        return int(dict(self.items).get("base_addr_aligned_kb", 16))  # type: ignore[arg-type]

    @property
    def multi_stream_lazy_reclaim(self) -> bool:
        return bool(dict(self.items).get("multi_stream_lazy_reclaim", False))

    @property
    def backend(self) -> str:
        """"native" or (CUDA) "cudaMallocAsync"."""
        return str(dict(self.items).get("backend", "native"))


def parse(text: str, platform: str = "npu", version: str | None = None) -> AllocConf:
    """Check ``text`` exactly as ``platform``'s parser at ``version`` (None: newest) would, and type it.

    Raises:
        ConfError: upstream would reject the string (one line, with position and a suggested fix).
        TypeError: ``text`` is not a str.

    Example:
        >>> parse("expandable_segment:True", version="26.1.0")
        Traceback (most recent call last):
        ...
        toolkit.conf._errors.ConfError: unknown key 'expandable_segment' at 0 (npu, torch_npu 26.1.0): did you ...
    """
    if not isinstance(text, str):
        raise TypeError(f"conf text must be a str, got {type(text).__name__}")
    dialect = resolve_dialect(platform, version)
    if "\0" in text:
        raise ConfError("NUL character in the conf", position=text.index("\0"), stage="input",
                        platform=dialect.platform, version=dialect.version,
                        suggestion="environment variables cannot hold NUL; remove it")
    walk = Walk(text, dialect, tokenize(text, unified=dialect.unified))
    if dialect.unified:
        run_unified(walk)
    else:
        LegacyParser(walk).run()
    options = dict(walk.options)
    if len(walk.roundup_values) > 1:  # several roundup keys overlay each other: keep what they add up to
        legacy = dialect.platform == "cuda" and not dialect.unified
        if roundup_table(walk.roundup_values[-1], legacy_gt=legacy) != tuple(walk.roundup_table):
            options["roundup_power2_divisions"] = tuple((1 << j, d) for j, d in enumerate(walk.roundup_table))
        else:
            options["roundup_power2_divisions"] = walk.roundup_values[-1]
    warnings = [*walk.notes, *advise(dialect, options, walk.counts)]
    items = tuple(sorted(options.items(), key=lambda kv: walk.first_positions[kv[0]]))
    return AllocConf(dialect.platform, dialect.version, items, tuple(warnings), text)  # type: ignore[arg-type]


def format_conf(conf: AllocConf) -> str:
    """The canonical string of ``conf`` (same as ``str(conf)``)."""
    return str(conf)


def _freeze(value: object) -> Value:
    if isinstance(value, list):
        return tuple(tuple(item) for item in value)  # type: ignore[return-value]
    return value  # type: ignore[return-value]


def format_value(dialect: Dialect, key: str, value: object) -> str:
    """One value as conf text that re-parses to the same value in ``dialect``."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        # repr() is the shortest exact decimal; subnormals need hex (glibc's stod rejects inexact tiny values).
        return value.hex() if value != 0.0 and abs(value) < _DBL_MIN else repr(value)
    if isinstance(value, int):
        # Legacy parsers read these with stoi: a huge value can only come from "-N" wrapping to size_t and
        # being clamped, and "-1" reproduces exactly that.
        if not dialect.unified and value > INT_MAX and value == SIZE_MAX_MB:
            return "-1"
        return str(value)
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(f"{bound}:{divisions}" for bound, divisions in value) + "]"
    if isinstance(value, str):
        return value
    raise ConfError(f"cannot write {type(value).__name__} as a conf value", key=key, stage="input",
                    suggestion=f"e.g. {example(key)}")

"""What one parse of a conf string accumulates, shared by the legacy and the unified interpreters.

The interpreters replay upstream's token walk step by step; this object turns each upstream failure
into a one-line :class:`ConfError` (with position and a fix) and records typed values and syntax notes.
"""

from __future__ import annotations

from typing import NoReturn, cast

from toolkit.conf import _cxx
from toolkit.conf._tokens import Token
from toolkit.conf.dialects import ALIASES, KNOWN_KEYS, Dialect, keys_for
from toolkit.conf._errors import ConfError, ConfWarning

MiB = 1024 * 1024
SIZE_MAX = 2**64 - 1
SIZE_MAX_MB = SIZE_MAX // MiB  # upstream clamps every *_mb value to this before multiplying
ROUNDUP_INTERVALS = 16
_BOOL_TYPOS = {"true": "True", "false": "False", "1": "True", "0": "False", "yes": "True", "no": "False",
               "on": "True", "off": "False", "TRUE": "True", "FALSE": "False"}


class Walk:
    """Tokens + dialect + everything recorded while walking them."""

    def __init__(self, text: str, dialect: Dialect, tokens: list[Token]) -> None:
        self.text = text
        self.dialect = dialect
        self.tokens = tokens
        self.options: dict[str, object] = {}
        self.counts: dict[str, int] = {}
        self.positions: dict[str, int] = {}  # key -> offset of its last occurrence
        self.first_positions: dict[str, int] = {}  # key -> offset of its first occurrence (canonical order)
        self.roundup_table: list[int] = [0] * ROUNDUP_INTERVALS
        self.roundup_values: list[object] = []
        self.notes: list[ConfWarning] = []

    # -- positions and recording ------------------------------------------------------------------
    def pos(self, i: int) -> int:
        return self.tokens[i].pos if i < len(self.tokens) else len(self.text)

    def tok(self, i: int) -> str:
        return self.tokens[i].text

    def set(self, key: str, value: object, i: int) -> None:
        """Record ``key``'s value, read from token ``i`` (the key itself is token ``i - 2``)."""
        key = ALIASES.get(key, key)
        self.options[key] = value
        self.counts[key] = self.counts.get(key, 0) + 1
        self.positions[key] = self.pos(max(i - 2, 0))
        self.first_positions.setdefault(key, self.positions[key])

    def note(self, key: str | None, message: str, upstream: str | None = None) -> None:
        warning = ConfWarning(key, message, upstream)
        if warning not in self.notes:  # the device hook re-walks the same string: report once
            self.notes.append(warning)

    # -- failures -----------------------------------------------------------------------------------
    def fail(
        self,
        summary: str,
        i: int | None,
        *,
        key: str | None,
        upstream: str,
        upstream_type: str = "RuntimeError",
        stage: str,
        suggestion: str | None = None,
        position: int | None = None,
    ) -> NoReturn:
        """Raise for token ``i`` (``position`` overrides the offset, e.g. for checks after the walk)."""
        raise ConfError(
            summary,
            key=key,
            position=position if i is None else self.pos(i),
            suggestion=suggestion,
            upstream=upstream,
            upstream_type=upstream_type,
            stage=stage,
            platform=self.dialect.platform,
            version=self.dialect.version,
        )

    def fail_unknown(self, key: str, i: int, *, upstream: str, upstream_type: str, stage: str) -> NoReturn:
        self.fail(f"unknown key {key!r}", i, key=key, upstream=upstream, upstream_type=upstream_type,
                  stage=stage, suggestion=unknown_key_hint(key, self.dialect))

    def fail_missing(self, key: str, i: int, *, upstream: str, upstream_type: str = "RuntimeError",
                     stage: str) -> NoReturn:
        self.fail(f"{key} has no value", i, key=key, upstream=upstream, upstream_type=upstream_type,
                  stage=stage, suggestion=f"write {key}:<value>, e.g. {example(key)}")

    def fail_bool(self, key: str, i: int, *, upstream: str, upstream_type: str, stage: str) -> NoReturn:
        got = self.tok(i) if i < len(self.tokens) else ""
        fix = _BOOL_TYPOS.get(got)
        if fix:
            hint = f"write {fix}, not {got}"
        elif got.strip() in ("True", "False"):
            hint = f"remove the {got!r} whitespace: this parser only ignores ' '"
        else:
            hint = "write True or False (capitalised)"
        self.fail(f"{key}:{got}" if got else f"{key} has no value", i, key=key, upstream=upstream,
                  upstream_type=upstream_type, stage=stage, suggestion=hint)

    # -- numbers ------------------------------------------------------------------------------------
    def number(self, func: str, i: int, key: str, *, stage: str) -> int | float:
        """Run ``std::<func>`` on token ``i`` like upstream; note ignored trailing characters."""
        text = self.tok(i)
        value: int | float
        try:
            if func == "stoi":
                value, used = _cxx.stoi(text)
            elif func == "stod":
                value, used = _cxx.stod(text)
            else:
                value, used = _cxx.stoull(text, func)
        except _cxx.CxxConversionError as err:
            if err.kind == "invalid_argument":
                summary, hint = f"{key}:{text} is not a number", f"e.g. {example(key)}"
            else:
                summary, hint = f"{key}:{text} is out of range", f"use a smaller value, e.g. {example(key)}"
            self.fail(summary, i, key=key, upstream=err.func, upstream_type=err.python_type, stage=stage,
                      suggestion=hint)
        if used < len(text):
            self.note(key, f"{key}:{text} is read as {_fmt_number(value)}: the trailing "
                           f"{text[used:]!r} is ignored (prefix parse)")
        if func != "stod" and text.lstrip(" \t\n\v\f\r").startswith("-") and value != 0:
            self.note(key, f"{key}:{text} is negative: upstream stores it as an unsigned size "
                           "(it wraps around to a huge value)")
        return value


def _fmt_number(value: int | float) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def example(key: str) -> str:
    info = KNOWN_KEYS.get(ALIASES.get(key, key))
    if info is None:
        return "expandable_segments:True"
    if info.kind == "choice":
        return "backend:native" if info.name == "backend" else "page_size:1g"
    return {
        "bool": f"{info.name}:True",
        "mib": f"{info.name}:512",
        "count": f"{info.name}:8",
        "kib": f"{info.name}:16",
        "fraction": f"{info.name}:0.8" if info.name.startswith("garbage") else f"{info.name}:0.9",
        "roundup": f"{info.name}:[256:1,512:2,>:4]",
    }[info.kind]


def unknown_key_hint(key: str, dialect: Dialect) -> str:
    """Why a key is unknown here and what to write instead."""
    if key in (",", ":", "[", "]"):
        return "write key:value pairs separated by single commas"
    if "=" in key:
        name, _, value = key.partition("=")
        return f"use ':' not '=' ({name}:{value})"
    canon = ALIASES.get(key, key)
    info = KNOWN_KEYS.get(canon)
    if info is not None:
        since = info.cuda_since if dialect.platform == "cuda" else info.npu_since
        if since is None:
            other = "npu" if dialect.platform == "cuda" else "cuda"
            return f"{key} exists only on {other}"
        return f"{key} needs {dialect.product} {since} or newer"
    import difflib  # only on the error path: keeps `import toolkit.conf` light

    known = list(keys_for(dialect.platform, dialect.version))
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if match:
        return f"did you mean {match[0]}?"
    everywhere = [k for k in KNOWN_KEYS if k not in known]
    match = difflib.get_close_matches(key, everywhere, n=1, cutoff=0.75)
    if match:
        return unknown_key_hint(match[0], dialect)
    where = f"toolkit.conf.keys_for({dialect.platform!r}, {dialect.version!r})"
    return f"not a {dialect.product} {dialect.version} key; see {where}"


def apply_roundup_item(table: list[int], state: dict, boundary: int | str, value: int, legacy_gt: bool) -> None:
    """One ``K:V`` (or ``>:V``) item of a roundup list, as upstream applies it (docs/allocator.md §2.4).

    ``state`` holds ``first`` (no numeric item seen yet) and ``last`` (last numeric interval index).
    ``>`` fills from the last index (legacy CUDA <= 2.9) or from the one after it (everyone else).
    """
    if boundary == ">":
        start = state["last"] if legacy_gt else state["last"] + 1
        for j in range(start, ROUNDUP_INTERVALS):
            table[j] = value
        return
    index = min(_cxx.bit_floor_log2(int(boundary)), ROUNDUP_INTERVALS - 1)
    if state["first"]:
        for j in range(index):
            table[j] = value
        state["first"] = False
    table[index] = value
    state["last"] = index


def roundup_table(value: object, *, legacy_gt: bool) -> tuple[int, ...]:
    """The 16-entry division table a typed roundup value gives in a fresh process."""
    if isinstance(value, int):
        return (value,) * ROUNDUP_INTERVALS
    table = [0] * ROUNDUP_INTERVALS
    state = {"first": True, "last": 0}
    # Not an int, so the parsed ``((boundary, divisions), ...)`` tuple the walkers store.
    for boundary, divisions in cast("tuple[tuple[int | str, int], ...]", value):
        apply_roundup_item(table, state, boundary, divisions, legacy_gt)
    return tuple(table)


def legacy_gt(dialect: Dialect) -> bool:
    """True where ``>`` overwrites the last explicit interval too (the legacy CUDA parser, <= 2.9)."""
    return dialect.platform == "cuda" and not dialect.unified

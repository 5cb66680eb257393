"""The two things a conf check reports: a :class:`ConfError` (upstream would refuse the string) and a
:class:`ConfWarning` (upstream accepts it, but it is pointless, risky or deprecated)."""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.core.errors import ToolkitError

# Which upstream parser stage raised (or would raise) the error. "accelerator" is c10's
# AcceleratorAllocatorConfig, "device" the CUDA/NPU hook that parses the same string after it,
# "legacy" the single self-contained parser of CUDA <= 2.9 and torch_npu <= 26.1.0.
STAGES = ("input", "environ", "legacy", "accelerator", "device", "cross-check")


class ConfError(ToolkitError, ValueError):
    """An allocator conf string that the modelled upstream release rejects (or input we cannot check).

    ``str(err)`` is one actionable line, e.g.
    ``unknown key 'expandable_segment' at 0 (npu, torch_npu 26.1.0): did you mean expandable_segments?``

    Attributes:
        key: the key being parsed when it failed (None when no key is involved).
        position: character offset in the conf text (None when not about the text).
        suggestion: how to fix it, or None.
        upstream: the upstream message this corresponds to (prefix to match; torch_npu appends an
            error-code suffix), e.g. ``"Unrecognized CachingAllocator option: foo"``.
        upstream_type: the Python exception upstream raises for it ("RuntimeError", "ValueError" or
            "IndexError" -- pybind11 maps std::out_of_range to IndexError), or None.
        stage: which upstream parser stage raises it, one of :data:`STAGES`.
        platform, version: the dialect that was checked (None when the dialect itself was bad).
    """

    def __init__(
        self,
        summary: str,
        *,
        key: str | None = None,
        position: int | None = None,
        suggestion: str | None = None,
        upstream: str | None = None,
        upstream_type: str | None = None,
        stage: str = "input",
        platform: str | None = None,
        version: str | None = None,
    ) -> None:
        self.summary = summary
        self.key = key
        self.position = position
        self.suggestion = suggestion
        self.upstream = upstream
        self.upstream_type = upstream_type
        self.stage = stage
        self.platform = platform
        self.version = version
        super().__init__(self._line())

    def _line(self) -> str:
        line = self.summary
        if self.position is not None:
            line += f" at {self.position}"
        if self.platform is not None and self.version is not None:
            line += f" ({self.platform}, {product_name(self.platform)} {self.version})"
        if self.suggestion:
            line += f": {self.suggestion}"
        return " ".join(line.split())  # always one line, even if a token held a newline

    def __reduce__(self):  # keyword-only __init__: make it survive pickling (e.g. across processes)
        return (_rebuild_conf_error, (self.summary, dict(self.__dict__)))


def _rebuild_conf_error(summary: str, state: dict) -> ConfError:
    state = {k: v for k, v in state.items() if k != "summary"}
    return ConfError(summary, **state)


@dataclass(frozen=True, slots=True)
class ConfWarning:
    """Something legal but pointless, risky or deprecated in a conf string.

    Attributes:
        key: the key it is about (None for syntax notes not tied to one key).
        message: one human sentence saying what happens and what to do.
        upstream: the warning text torch/torch_npu itself prints for it, or None when upstream stays
            silent (the toolkit's own advice).
    """

    key: str | None
    message: str
    upstream: str | None = None

    def __str__(self) -> str:
        return self.message


def product_name(platform: str) -> str:
    """The package whose release numbers a dialect version refers to."""
    return "torch_npu" if platform == "npu" else "PyTorch"

"""The ``Engine`` protocol: what the notebook side may rely on, whatever the backend.

``SimEngine`` (simulated) and ``VllmEngine`` (real vLLM on cpu/cuda/npu) both satisfy it, so sessions, magics
and ``watch()`` never branch on the backend or duck-type attributes. Plain data only crosses it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from toolkit.core.errors import EngineError

if TYPE_CHECKING:
    from toolkit.core.records import RequestResult, Run

Rows = Sequence[tuple[str, str]]


@runtime_checkable
class Engine(Protocol):
    """One running engine. ``conf`` is the conf the user asked for (the platform's variable before any policy);
    ``effective_conf`` what the allocator gets (after vllm-ascend's rewrite; read back from the workers on a real
    engine)."""

    backend: str  # toolkit.core.vocab.ENGINE_BACKENDS
    platform: str  # toolkit.core.vocab.PLATFORMS
    simulated: bool
    name: str
    model: str

    @property
    def conf(self) -> str | None: ...

    @property
    def effective_conf(self) -> str | None: ...

    @property
    def tensor_parallel_size(self) -> int: ...

    def header(self, name: str | None = None) -> Run: ...

    # The keywords every engine takes (each engine may take more of its own).
    def generate(self, prompt: Any = None, image: Any = None, *, max_tokens: int = ...,
                 request_id: str | None = None) -> RequestResult: ...

    def run_images(self, images: str | os.PathLike[str] | Iterable[Any], prompt: str | None = None, *,
                   max_tokens: int = ..., progress: bool = True, run_path: str | os.PathLike[str] | None = None,
                   name: str | None = None, on_result: Callable[[RequestResult], None] | None = None) -> Run: ...

    def status_rows(self) -> Rows:
        """What runs: name, model, state, processes (label, value pairs)."""
        ...

    def conf_rows(self) -> Rows:
        """The conf as asked and as the allocator gets it (label, value pairs)."""
        ...


def split_knobs(knobs: dict[str, Any], owner: str, *extra: type) -> list[dict[str, Any]]:
    """Route keyword arguments to the dataclasses that define them; an unknown one is a one-line error."""
    out: list[dict[str, Any]] = []
    rest = dict(knobs)
    for cls in extra:
        names = {f.name for f in fields(cls)}
        out.append({k: rest.pop(k) for k in list(rest) if k in names})
    if rest:
        import difflib

        known = [f.name for cls in extra for f in fields(cls)]
        name = sorted(rest)[0]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f": did you mean {close[0]}?" if close else f" (known: {', '.join(known)})"
        raise EngineError(f"{owner} takes no argument {name!r}{hint}")
    return out

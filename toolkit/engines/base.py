"""The ``Engine`` protocol: what the notebook side may rely on, whatever the backend.

``SimEngine`` (simulated) and ``VllmEngine`` (real vLLM on cpu/cuda/npu) both satisfy it, so sessions, magics
and ``watch()`` never branch on the backend or duck-type attributes. Plain data only crosses it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

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

    def generate(self, prompt: Any = None, image: Any = None, **kwargs: Any) -> RequestResult: ...

    def run_images(self, images: str | Iterable[Any], prompt: str | None = None, *,
                   on_result: Callable[[RequestResult], None] | None = None, **kwargs: Any) -> Run: ...

    def status_rows(self) -> Rows:
        """What runs: name, model, state, processes (label, value pairs)."""
        ...

    def conf_rows(self) -> Rows:
        """The conf as asked and as the allocator gets it (label, value pairs)."""
        ...

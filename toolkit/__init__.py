"""ascend-memlab: see, simulate and compare device-allocator memory for vLLM on Ascend NPUs and CUDA.

Importing this package is deliberately cheap and side-effect free: it never imports torch, never touches
a device and never changes the environment, because a caching allocator reads its conf once, at its first
allocation, in the process that allocates (see ``docs``: architecture). Public names are resolved lazily.

In a notebook::

    %load_ext toolkit
    %alloc_conf expandable_segments:True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from toolkit.core.version import __version__ as __version__

# public name -> module that defines it (imported on first access, PEP 562)
_LAZY: dict[str, str] = {
    "parse_conf": "toolkit.conf",
    "ConfError": "toolkit.conf",
    "AllocConf": "toolkit.conf",
    "Session": "toolkit.notebook.conf_session",
    "ToolkitError": "toolkit.core.errors",
    "TooLateError": "toolkit.core.errors",
    "upstream_policy": "toolkit.conf.policy",
    "recommended_policy": "toolkit.conf.policy",
    "SimDevice": "toolkit.sim",
    "replay_snapshot": "toolkit.replay",
    "load_snapshot": "toolkit.snapshot",
    "load_run": "toolkit.core.records",
    "Run": "toolkit.core.records",
    "MemorySample": "toolkit.core.records",
    "RunWriter": "toolkit.core.records",
    "SimEngine": "toolkit.engines.sim",
    "LLMSession": "toolkit.notebook.llm_session",
    "VllmEngine": "toolkit.engines.vllm.engine",
    "RequestResult": "toolkit.core.records",
    "EngineError": "toolkit.core.errors",
    "seed_scenario": "toolkit.engines.scenarios",
    "ScenarioResult": "toolkit.engines.scenarios",
    "ScenarioConf": "toolkit.engines.scenarios",
    "generate_photo_set": "toolkit.workload.photos",
    "smart_resize": "toolkit.workload.images",
    "load_preset": "toolkit.workload.presets",
}
_ALIASES = {"parse_conf": "parse", "replay_snapshot": "replay"}

__all__ = sorted([*_LAZY, "load_ipython_extension", "unload_ipython_extension", "__version__"])

if TYPE_CHECKING:  # pragma: no cover
    from IPython.core.interactiveshell import InteractiveShell


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'toolkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), _ALIASES.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


def load_ipython_extension(ipython: InteractiveShell) -> None:
    """``%load_ext toolkit``: register the magics (imported here, not at package import)."""
    from toolkit.notebook.conf_magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython: InteractiveShell) -> None:
    from toolkit.notebook.conf_magics import unload_ipython_extension as _unload

    _unload(ipython)

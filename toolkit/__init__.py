"""ascend-memlab: see, simulate and compare device-allocator memory for vLLM on Ascend NPUs and CUDA.

Importing this package is deliberately cheap and side-effect free: it never imports torch, never touches
a device and never changes the environment, because a caching allocator reads its conf once, at its first
allocation, in the process that allocates (docs/design.md). Public names are resolved lazily.

In a notebook::

    %load_ext toolkit
    %alloc_conf expandable_segments:True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from toolkit.core.version import __version__ as __version__

# The public API, what the tutorials and the README use: public name -> the module that defines it under that
# same name (imported on first access, PEP 562). Everything else is internal to its layer.
_LAZY: dict[str, str] = {
    # sessions (what the magics drive)
    "Session": "toolkit.notebook.conf_session",
    "LLMSession": "toolkit.notebook._llm_session",
    # engines and the seed scenario
    "SimEngine": "toolkit.engines.sim",
    "VllmEngine": "toolkit.engines.vllm.engine",
    "seed_scenario": "toolkit.engines.scenarios",
    "ScenarioConf": "toolkit.engines.scenarios",
    "ScenarioResult": "toolkit.engines.scenarios",
    # live views
    "watch": "toolkit.notebook.widgets",
    "Inspector": "toolkit.notebook.widgets",
    "ConfSweep": "toolkit.notebook.widgets",
    "LiveFigure": "toolkit.notebook.widgets",
    # figures and the report
    "plot_run": "toolkit.viz.plots",
    "plot_compare": "toolkit.viz.plots",
    "plot_fragmentation": "toolkit.viz.plots",
    "plot_allocator_state": "toolkit.viz.plots",
    "plot_allocator_steps": "toolkit.viz.plots",
    "summary_frame": "toolkit.viz.report",
    "format_summary": "toolkit.viz.report",
    "export_samples": "toolkit.viz.report",
    "write_html_report": "toolkit.viz.report",
    # runs, snapshots, replay
    "Run": "toolkit.core.records",
    "MemorySample": "toolkit.core.records",
    "load_run": "toolkit.core.records",
    "summarize_run": "toolkit.core.summary",
    "load_snapshot": "toolkit.snapshot",
    "replay": "toolkit.replay",
    "replay_steps": "toolkit.replay",
    "ReplayResult": "toolkit.replay",
    "SimDevice": "toolkit.sim",
    # confs and inputs
    "AllocConf": "toolkit.conf",
    "upstream_policy": "toolkit.conf.policy",
    "generate_photo_set": "toolkit.workload.photos",
    "load_preset": "toolkit.workload.presets",
    "image_grid": "toolkit.workload.images",
    "WorkspacePolicy": "toolkit.workload.program",
    "validate_confs": "toolkit.notebook.widgets",
    "seed_runner": "toolkit.notebook.widgets",
    "detect_backend": "toolkit.notebook._llm_session",
    "module_installed": "toolkit.notebook._llm_session",
    "SEED_MODEL": "toolkit.engines.scenarios",
    "SEED_ENGINE_ARGS": "toolkit.engines.scenarios",
    "SEED_DEVICE_BYTES": "toolkit.engines.scenarios",
    "format_bytes": "toolkit.core.units",
    "KiB": "toolkit.core.units",
    "MiB": "toolkit.core.units",
    "GiB": "toolkit.core.units",
    # the errors
    "ToolkitError": "toolkit.core.errors",
    "ConfError": "toolkit.conf",
    "EngineError": "toolkit.core.errors",
    "TooLateError": "toolkit.core.errors",
}

__all__ = sorted([*_LAZY, "load_ipython_extension", "unload_ipython_extension", "__version__"])

if TYPE_CHECKING:  # pragma: no cover
    from IPython.core.interactiveshell import InteractiveShell


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'toolkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


def load_ipython_extension(ipython: InteractiveShell) -> None:
    """``%load_ext toolkit``: register the magics (imported here, not at package import)."""
    from toolkit.notebook.extension import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython: InteractiveShell) -> None:
    from toolkit.notebook.extension import unload_ipython_extension as _unload

    _unload(ipython)

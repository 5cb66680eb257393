"""``%load_ext toolkit``: register every magic (imported only when the extension loads, never at ``import toolkit``)."""

from __future__ import annotations

from typing import Any

from toolkit.notebook._conf_magics import ToolkitMagics
from toolkit.notebook._preload import preload_plotly


def load_ipython_extension(ipython: Any) -> None:
    """Register every magic, sharing one conf ``Session`` and one engine ``LLMSession`` per shell."""
    from toolkit.notebook._engine_magics import EngineMagics
    from toolkit.notebook._llm_session import LLMSession
    from toolkit.notebook._plot_magics import PlotMagics

    conf_magics = ToolkitMagics(ipython)
    llm_session = LLMSession(conf_magics.session)
    conf_magics.engine_note = llm_session.conf_changed  # %alloc_conf says when the engine needs a restart
    for magics in (conf_magics, EngineMagics(ipython, llm_session), PlotMagics(ipython, llm_session)):
        ipython.register_magics(magics)
    # In a kernel: the page loads plotly.js now, not when the first live figure or inspector draws.
    preload_plotly()


MAGIC_NAMES = {"ToolkitMagics": ("alloc_conf",), "EngineMagics": ("ascend_llm",),
               "PlotMagics": ("mem_plot", "mem_compare", "mem_inspect")}


def unload_ipython_extension(ipython: Any) -> None:
    for cls_name, names in MAGIC_NAMES.items():
        if ipython.magics_manager.registry.pop(cls_name, None) is not None:
            for name in names:
                ipython.magics_manager.magics["line"].pop(name, None)

"""Engines behind ``%ascend_llm``: ``sim`` here (pure Python); the real ``cpu``/``cuda``/``npu`` engines share
its interface (``generate`` -> ``RequestResult``, ``run_images`` -> ``Run``).

Nothing is imported eagerly: ``toolkit.engines.sim`` pulls in the simulator and Pillow only when used.
"""

from __future__ import annotations

__all__ = ["sim"]

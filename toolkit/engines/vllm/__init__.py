"""The kernel-side driver of a real vLLM engine (``cpu``, ``cuda``, ``npu`` backends).

``engine`` starts and talks to the engine; ``reports`` renders what it says back; ``cpu_env`` makes the
CPU build of vLLM importable beside CPU torch. vLLM itself is imported only when an engine starts.
"""

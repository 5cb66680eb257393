"""The kernel-side driver of a real vLLM engine (``cpu``, ``cuda``, ``npu`` backends).

``engine`` (``VllmEngine``) starts and talks to the engine, calling ``_environment`` (what the start does to
``os.environ`` and the allocator conf), ``_processes`` (the engine's processes: import, find, stop) and
``_requests`` (inputs in, samples and results out); ``reports`` renders what it says back; ``_cpu_env`` makes
the CPU build of vLLM importable beside CPU torch. vLLM itself is imported only when an engine starts.
"""

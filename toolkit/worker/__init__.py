"""Code that runs inside vLLM worker processes, where the allocator lives: the worker extension and the
memory probes. vLLM loads ``toolkit.worker.extension.MemlabWorkerExtension`` by name. Only plain data
(ints, strings) goes back to the kernel. Never imports the notebook side.
"""

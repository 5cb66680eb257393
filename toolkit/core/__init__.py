"""The pure core every layer shares: units, errors, the run record (``Run`` / ``MemorySample``) and its files,
and the project's vocabulary. Never imports torch, vllm, IPython, plotly or ipywidgets.
"""

"""Workload model of a vLLM multi-modal engine serving Qwen-VL models (pure: no torch, no device).

Modules: ``images`` (the processors' resize rule, patch grids, visual tokens), ``presets`` (published
model configurations, ``presets/*.json``), ``engine_args`` (the vLLM arguments that decide memory),
``program`` (allocation programs: weights, profiling pass, KV cache, encoder, prefill, decode),
``budget`` (vLLM's KV-cache budgeting), ``encoder_cache`` (vLLM's encoder-cache bookkeeping), ``prompt``
(prompt length without a tokenizer). ``toolkit.engines.sim.SimEngine`` replays the programs on
``toolkit.sim.SimDevice``.

Calibration (not done: no accelerator was available when this was written). On a GPU host, run the
same request through vLLM with ``torch.cuda.memory._record_memory_history()`` in the worker (worker
extension), dump ``_snapshot()``, and compare its ``alloc``/``free_requested`` trace, size by size and in
order, with ``encoder_program``/``prefill_program`` for the same image and engine arguments (the replay
path of the toolkit reads such snapshots); on an Ascend host do the same with
``torch_npu.npu.memory._record_memory_history`` and read the workspace segments to set
``program.WorkspacePolicy``. Differences point at a tensor the model misses or frees at the wrong time.
"""

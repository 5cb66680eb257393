"""The vLLM worker extension: the probes, callable by name with ``llm.collective_rpc("memlab_...")``.

vLLM mixes this class into its worker class in every worker process (``worker_extension_cls=`` takes the
qualified name ``"toolkit.worker.extension.MemlabWorkerExtension"``; ``vllm/v1/worker/worker_base.py``
resolves it by name and rejects class objects). Methods are called by name, so no callable is serialised
and ``VLLM_ALLOW_INSECURE_SERIALIZATION`` stays off. Every method returns plain data (ints, strings,
bools, lists, dicts): results travel over vLLM's msgpack channel.

Every attribute starts with ``memlab_``: vLLM asserts that extension attributes do not collide with the
worker's. Per-worker state lives on the instance (``self._memlab_state``), created on first use.

Engine side: imports torch / torch_npu (through ``toolkit.worker.probe``); never IPython or plotly.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, cast

from toolkit.worker import probe

EXTENSION_QUALNAME = "toolkit.worker.extension.MemlabWorkerExtension"
# worker methods the failure watch wraps: an exception there kills the engine, and vLLM's EngineDeadError
# does not say why (vllm/v1/engine/exceptions.py), so the worker writes the cause down first
_WATCHED = ("execute_model", "sample_tokens")


class _State:
    def __init__(self, memory: probe.HostMemory | probe.TorchDeviceMemory) -> None:
        self.memory = memory
        self.baseline_used_bytes = 0
        self.failure_log: str | None = None


class MemlabWorkerExtension:
    """Memory probes inside a vLLM worker (one instance per rank)."""

    def _memlab(self) -> _State:
        state = getattr(self, "_memlab_state", None)
        if state is None:
            # open_memory rejects a name outside probe.Backend with a ProbeError.
            backend = cast("probe.Backend | None", os.environ.get("MEMLAB_PROBE_BACKEND") or None)
            state = _State(probe.open_memory(backend))
            self._memlab_state = state
        return state

    def _memlab_rank(self) -> int:
        return int(getattr(self, "rank", 0) or 0)

    def memlab_hello(self, baseline_used_bytes: dict[str, int] | None = None,
                     failure_log: str | None = None) -> dict[str, Any]:
        """Set up this worker's probe: the device baseline and the failure log. Returns who answered."""
        state = self._memlab()
        index = state.memory.device_index()
        if baseline_used_bytes and index is not None:
            state.baseline_used_bytes = int(baseline_used_bytes.get(str(index), 0))
        if failure_log and state.failure_log is None:
            state.failure_log = failure_log
            self._memlab_watch_failures(failure_log)
        return {"rank": self._memlab_rank(), "pid": os.getpid(), "backend": state.memory.backend,
                "device_index": index, "baseline_used_bytes": state.baseline_used_bytes,
                "peaks_exact": state.memory.peaks_exact}

    def _memlab_watch_failures(self, path: str) -> None:
        rank = self._memlab_rank()
        for name in _WATCHED:
            method = getattr(self, name, None)
            if method is None:
                continue

            @functools.wraps(method)
            def watched(*args: Any, _method: Any = method, _name: str = name, **kwargs: Any) -> Any:
                try:
                    return _method(*args, **kwargs)
                except BaseException as exc:
                    try:
                        probe.record_failure(path, rank, _name, exc)
                    except OSError:
                        pass  # never hide the real failure behind a logging one
                    raise

            setattr(self, name, watched)  # instance attribute: the wrapper calls self.worker.<name>

    def memlab_sample(self, reset_peak: bool = True) -> dict[str, Any]:
        """This rank's memory now (and its peaks since the last reset); then reset the peaks."""
        state = self._memlab()
        t0 = time.perf_counter_ns()
        out: dict[str, Any] = probe.measure_sample(state.memory, baseline_used_bytes=state.baseline_used_bytes,
                                                   reset_peak=reset_peak)
        out["probe_ns"] = time.perf_counter_ns() - t0  # the measurement itself, without vLLM's round trip
        out["rank"] = self._memlab_rank()
        return out

    def memlab_reset_peak(self) -> None:
        self._memlab().memory.reset_peak()

    def memlab_memory_stats(self) -> dict[str, int]:
        """The allocator's full ``memory_stats()`` (on the host: malloc's and the process's figures)."""
        return self._memlab().memory.memory_stats()

    def memlab_mem_get_info(self) -> dict[str, int]:
        free, total = self._memlab().memory.mem_get_info()
        return {"free_bytes": free, "total_bytes": total}

    def memlab_effective_conf(self) -> dict[str, Any]:
        """The conf this worker really runs with (environment, parsed settings, segment mode)."""
        out = probe.read_effective_conf(self._memlab().memory)
        out["rank"] = self._memlab_rank()
        return out

    def memlab_record_start(self, max_entries: int = probe.DEFAULT_MAX_ENTRIES,
                            stacks: str = "python") -> dict[str, Any]:
        return probe.start_recording(self._memlab().memory, max_entries, stacks)

    def memlab_record_stop(self) -> dict[str, Any]:
        return probe.stop_recording(self._memlab().memory)

    def memlab_dump_snapshot(self, directory: str) -> dict[str, Any]:
        out = probe.dump_snapshot(self._memlab().memory, directory, self._memlab_rank())
        out["rank"] = self._memlab_rank()
        return out

"""Memory probes that run where the allocator lives: inside a vLLM worker process (engine side).

One interface over three kinds of memory, so the code above it never branches on the backend:

* ``npu``: ``torch.npu`` (torch_npu's caching allocator; ``torch.npu.*`` mirrors ``torch.cuda.*``);
* ``cuda``: ``torch.cuda`` (PyTorch's caching allocator);
* ``host``: the CPU backend. The "device" is the worker process's host memory: ``device_used`` is the
  process's resident set (``VmRSS``), ``device_total`` the machine's (or the cgroup's) memory, and the
  host allocator's view comes from glibc malloc (``mallinfo2``: CPU torch allocates tensors with
  ``posix_memalign``): ``reserved`` = what malloc holds from the OS (arenas + mmapped chunks),
  ``allocated``/``active`` = what is in use, ``inactive_split`` = free bytes kept inside the arenas. malloc
  keeps no peak, so on the host the per-request peaks are the larger of the values at the start and the
  end of the request (a lower bound, flagged ``peaks_exact=False``); the process's peak RSS over the
  request (``VmHWM`` after resetting it through ``/proc/self/clear_refs``) is reported as ``rss_peak``.

Byte decomposition follows vLLM (``vllm/utils/mem_utils.py``): ``device_used = total - free``,
``non_torch = device_used - baseline - reserved``. The baseline is the device memory other processes used
before the engine started (measured by :func:`measure_baseline` in a throw-away child process, so the
kernel never touches the device); without it every other process on the device would be blamed on the
engine's "non-torch" memory. The residual is not clamped: a negative value means other processes freed
memory after the baseline was taken.

Everything returned is plain data (ints, strings, bools, lists, dicts): vLLM ships it back over msgpack.

May import torch / torch_npu (inside functions); never IPython or plotly.
"""

from __future__ import annotations

import ctypes
import json
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any, Literal

from toolkit.core.vocab import CONF_VARS as ALLOC_VARS
from toolkit.core.vocab import PROBE_BACKENDS as BACKENDS

Backend = Literal["npu", "cuda", "host"]
# the allocator variables a worker may read (torch_npu reads the NPU one first, then the generic one)
# other variables worth seeing from inside the worker
ENGINE_VARS = ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_WORKER_MULTIPROC_METHOD", "OMP_NUM_THREADS",
               "LD_PRELOAD", "ASCEND_RT_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "LOCAL_WORLD_SIZE")
DEFAULT_MAX_ENTRIES = 100_000  # bounded: snapshots over a few hundred MB are unusable (pytorch#155889)

# memory_stats() keys read into a sample (the caching allocators' names; the host view fills the same ones)
_STAT_KEYS = {
    "allocated_bytes": "allocated_bytes.all.current",
    "allocated_peak_bytes": "allocated_bytes.all.peak",
    "reserved_bytes": "reserved_bytes.all.current",
    "reserved_peak_bytes": "reserved_bytes.all.peak",
    "active_bytes": "active_bytes.all.current",
    "inactive_split_bytes": "inactive_split_bytes.all.current",
    "segment_count": "segment.all.current",
    "alloc_retries": "num_alloc_retries",
    "num_ooms": "num_ooms",
}


class ProbeError(RuntimeError):
    """A probe cannot do what was asked on this backend (the message says why)."""


def detect_backend() -> Backend:
    """The memory this process would allocate on: ``npu`` if torch_npu is usable, else ``cuda``, else host.

    Imports torch (engine side only). Call it in the worker, after vLLM initialised the device.
    """
    import importlib.util

    import torch

    if importlib.util.find_spec("torch_npu") is not None:
        import torch_npu  # noqa: F401  (registers torch.npu)

        if torch.npu.is_available():  # type: ignore[attr-defined]  # torch.npu exists only with torch_npu
            return "npu"
    if torch.cuda.is_available():
        return "cuda"
    return "host"


# -- host (CPU backend) ------------------------------------------------------------------------------


class _Mallinfo2(ctypes.Structure):
    # glibc >= 2.33, malloc.h: struct mallinfo2 (all size_t)
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
        "keepcost")]


_libc: Any = None


def _mallinfo2() -> _Mallinfo2 | None:
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None)
            _libc.mallinfo2.restype = _Mallinfo2
        except (OSError, AttributeError):  # not glibc, or glibc < 2.33
            _libc = False
    return _libc.mallinfo2() if _libc else None


def _proc_status_bytes(*keys: str) -> dict[str, int]:
    """``VmRSS``/``VmHWM``... of this process from ``/proc/self/status`` (kB lines) in bytes."""
    out: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in keys:
                out[key] = int(rest.split()[0]) * 1024
    return out


def _host_total_bytes() -> int:
    """MemTotal, or the cgroup v2 memory limit when that is smaller (containers)."""
    total = 0
    with open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
                break
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total


class HostMemory:
    """The host "device": this process's memory, seen by glibc malloc and by the kernel (RSS)."""

    backend: Backend = "host"
    peaks_exact = False

    def __init__(self) -> None:
        self._total = _host_total_bytes()
        self._window: dict[str, int] = {}
        self.reset_peak()

    def _point(self) -> dict[str, int]:
        mi = _mallinfo2()
        if mi is None:
            in_use = held = free_inside = 0
        else:
            in_use = mi.uordblks + mi.hblkhd
            held = mi.arena + mi.hblkhd
            free_inside = mi.fordblks
        return {
            "allocated_bytes.all.current": in_use,
            "reserved_bytes.all.current": held,
            "active_bytes.all.current": in_use,
            "inactive_split_bytes.all.current": free_inside,
            "segment.all.current": 0 if mi is None else mi.ordblks + mi.hblks,
            "num_alloc_retries": 0,
            "num_ooms": 0,
        }

    def memory_stats(self) -> dict[str, int]:
        stats = self._point()
        for key in ("allocated_bytes", "reserved_bytes"):
            cur = stats[f"{key}.all.current"]
            stats[f"{key}.all.peak"] = max(cur, self._window.get(f"{key}.all.current", cur))
        status = _proc_status_bytes("VmRSS", "VmHWM")
        stats["rss_bytes"] = status.get("VmRSS", 0)
        stats["rss_peak_bytes"] = status.get("VmHWM", 0)
        return stats

    def mem_get_info(self) -> tuple[int, int]:
        """(free, total) with "used" = this process's RSS, so ``total - free`` is the process's memory."""
        rss = _proc_status_bytes("VmRSS").get("VmRSS", 0)
        return self._total - rss, self._total

    def reset_peak(self) -> None:
        self._window = self._point()
        try:  # "5" resets the peak RSS (VmHWM) of this process (Linux >= 4.0, proc(5))
            with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
                fh.write("5")
        except OSError:
            pass

    def device_index(self) -> int | None:
        return None


class TorchDeviceMemory:
    """``torch.npu`` or ``torch.cuda`` of the worker's current device: the caching allocator's own view."""

    peaks_exact = True

    def __init__(self, backend: Backend) -> None:
        import torch

        if backend == "npu":
            import torch_npu  # noqa: F401

        self.backend = backend
        # torch.npu exists only once torch_npu is imported (above); the stubs do not know it.
        self.mod: Any = torch.npu if backend == "npu" else torch.cuda  # type: ignore[attr-defined]
        self.device = self.mod.current_device()

    def memory_stats(self) -> dict[str, int]:
        stats = self.mod.memory_stats(self.device)
        return {k: int(v) for k, v in stats.items() if isinstance(v, (int, float))}

    def mem_get_info(self) -> tuple[int, int]:
        free, total = self.mod.mem_get_info(self.device)
        return int(free), int(total)

    def reset_peak(self) -> None:
        self.mod.reset_peak_memory_stats(self.device)

    def device_index(self) -> int | None:
        return int(self.device)


def open_memory(backend: Backend | None = None) -> HostMemory | TorchDeviceMemory:
    """The memory view of this process for ``backend`` (default: :func:`detect_backend`)."""
    backend = backend or detect_backend()
    if backend not in BACKENDS:
        raise ProbeError(f"unknown probe backend {backend!r}: use one of {', '.join(BACKENDS)}")
    return HostMemory() if backend == "host" else TorchDeviceMemory(backend)


def measure_sample(memory: HostMemory | TorchDeviceMemory, *, baseline_used_bytes: int = 0,
                   reset_peak: bool = True) -> dict[str, int]:
    """The memory half of a ``MemorySample`` (plain ints), then reset the peaks for the next request.

    ``non_torch_bytes = device_used - baseline_used_bytes - reserved`` (vLLM's residual, with other
    processes' memory taken out).
    """
    stats = memory.memory_stats()
    free, total = memory.mem_get_info()
    out = {field: int(stats.get(key, 0)) for field, key in _STAT_KEYS.items()}
    used = total - free
    out["device_used_bytes"] = used
    out["device_total_bytes"] = total
    out["non_torch_bytes"] = used - baseline_used_bytes - out["reserved_bytes"]
    if "rss_peak_bytes" in stats:
        out["rss_peak_bytes"] = stats["rss_peak_bytes"]
    if reset_peak:
        memory.reset_peak()
    return out


# -- effective conf, read back from inside the worker ----------------------------------------------------


def read_allocator_settings(backend: Backend) -> str | None:
    """The conf string the allocator parsed, where the runtime exposes it (torch >= 2.9 accelerators)."""
    if backend == "host":
        return None
    import torch

    getter = getattr(torch._C, "_accelerator_getAllocatorSettings", None)
    if getter is None:
        return None
    try:
        return str(getter())
    except Exception:  # a backend without the accessor raises; "unknown" is the honest answer
        return None


def segments_expandable(memory: HostMemory | TorchDeviceMemory) -> dict[str, Any]:
    """Whether the allocator's segments really are expandable (torch_npu silently falls back when
    ``aclrtReserveMemAddress`` fails: "expandable_segments setting failure, now change to False").

    Reads the ``is_expandable`` flag of every segment in ``_snapshot()`` (no history needed).
    """
    if isinstance(memory, HostMemory):
        return {"known": False, "reason": "host memory has no caching allocator segments"}
    snap = memory.mod.memory._snapshot()
    segments = [s for s in snap.get("segments", []) if s.get("device", memory.device) == memory.device]
    flags = [s.get("is_expandable") for s in segments]
    if not segments:
        return {"known": False, "reason": "no segments yet"}
    if any(f is None for f in flags):
        return {"known": False, "reason": "this runtime's snapshot has no is_expandable flag"}
    return {"known": True, "expandable": all(flags), "segments": len(segments),
            "expandable_segments": sum(1 for f in flags if f)}


def read_effective_conf(memory: HostMemory | TorchDeviceMemory) -> dict[str, Any]:
    """What this worker really runs with: its allocator variables, the parsed settings, the segment mode."""
    return {
        "backend": memory.backend,
        "pid": os.getpid(),
        "device_index": memory.device_index(),
        "environ": {k: os.environ.get(k) for k in ALLOC_VARS + ENGINE_VARS},
        "allocator_settings": read_allocator_settings(memory.backend),
        "segments": segments_expandable(memory),
    }


# -- snapshots on demand ---------------------------------------------------------------------------------


def start_recording(memory: HostMemory | TorchDeviceMemory, max_entries: int = DEFAULT_MAX_ENTRIES,
                    stacks: str = "python") -> dict[str, Any]:
    """Record allocator history (a ring buffer of ``max_entries`` events: newer events overwrite older)."""
    if isinstance(memory, HostMemory):
        return {"recording": False, "reason": "host memory has no caching allocator to record"}
    if not isinstance(max_entries, int) or max_entries < 1:
        raise ProbeError(f"max_entries must be a positive int, got {max_entries!r}")
    memory.mod.memory._record_memory_history(enabled="all", context="all", stacks=stacks,
                                             max_entries=max_entries)
    return {"recording": True, "max_entries": max_entries}


def stop_recording(memory: HostMemory | TorchDeviceMemory) -> dict[str, Any]:
    if isinstance(memory, HostMemory):
        return {"recording": False, "reason": "host memory has no caching allocator to record"}
    memory.mod.memory._record_memory_history(enabled=None)
    return {"recording": False}


def dump_snapshot(memory: HostMemory | TorchDeviceMemory, directory: str, rank: int) -> dict[str, Any]:
    """Write this rank's ``_snapshot()`` as ``<directory>/snapshot-rank<r>-<pid>.pickle`` (torch's format,
    the one ``_dump_snapshot`` writes); return its path and size, not the snapshot itself."""
    if isinstance(memory, HostMemory):
        return {"path": None, "reason": "host memory has no caching allocator snapshot"}
    snap = memory.mod.memory._snapshot()
    path = Path(directory) / f"snapshot-rank{rank}-{os.getpid()}.pickle"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(snap, fh)
    traces = snap.get("device_traces", [])
    return {"path": str(path), "bytes": path.stat().st_size, "segments": len(snap.get("segments", [])),
            "trace_entries": sum(len(t) for t in traces)}


# -- failures seen inside the worker ---------------------------------------------------------------------


def is_out_of_memory(exc: BaseException) -> bool:
    """torch.OutOfMemoryError (CUDA), Python's MemoryError, torch_npu's RuntimeError "NPU out of memory. Tried
    to allocate", or CPU torch's RuntimeError "DefaultCPUAllocator: can't allocate memory" (c10 alloc_cpu.cpp)."""
    import torch

    if isinstance(exc, MemoryError):
        return True
    oom_type = getattr(torch, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text


def record_failure(path: str, rank: int, where: str, exc: BaseException) -> None:
    """Append one JSON line describing a failure in the worker (O_APPEND: lines from ranks do not mix)."""
    line = json.dumps({"rank": rank, "pid": os.getpid(), "where": where, "type": type(exc).__name__,
                       "message": str(exc)[:2000], "oom": is_out_of_memory(exc), "time_ns": time.time_ns()})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


# -- the baseline, measured in a throw-away child process -------------------------------------------------


def _cuda_visible_nvml_handles(pynvml: Any) -> list[Any]:
    """NVML handles of the devices CUDA numbers 0, 1, ... (CUDA_VISIBLE_DEVICES: indices or UUIDs)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    handles = []
    for item in (v.strip() for v in visible.split(",") if v.strip()):
        if item.isdigit():
            handles.append(pynvml.nvmlDeviceGetHandleByIndex(int(item)))
        else:
            handles.append(pynvml.nvmlDeviceGetHandleByUUID(item))
    return handles


def measure_baseline(backend: Backend) -> dict[str, Any]:
    """Device memory in use on every visible device before the engine starts (run in a child process).

    ``{"backend", "method", "used_bytes": {index: bytes}, "total_bytes": {index: bytes}}``, indexed as the
    engine's workers number their devices. On CUDA, NVML (``pynvml``, which vLLM's CUDA build installs)
    reads device-wide use without creating a context. Otherwise ``mem_get_info`` is called, which creates
    this child's own runtime context first, so the baseline then includes one context (a few hundred MB;
    the engine's "non-torch" figure is low by as much: ``method="mem_get_info"`` says so). The host backend
    needs no baseline (its "device" is the worker process itself).
    """
    if backend == "host":
        return {"backend": "host", "method": "none", "used_bytes": {}, "total_bytes": {}}
    used, totals = {}, {}
    if backend == "cuda":
        try:
            import pynvml

            pynvml.nvmlInit()
            try:
                for index, handle in enumerate(_cuda_visible_nvml_handles(pynvml)):
                    info = pynvml.nvmlDeviceGetMemoryInfo(handle)
                    used[str(index)], totals[str(index)] = int(info.used), int(info.total)
            finally:
                pynvml.nvmlShutdown()
            return {"backend": backend, "method": "nvml", "used_bytes": used, "total_bytes": totals}
        except Exception:  # no NVML here: fall back to the runtime (documented overestimate)
            used, totals = {}, {}
    import torch

    if backend == "npu":
        import torch_npu  # noqa: F401
    # torch.npu exists only once torch_npu is imported (above); the stubs do not know it.
    mod: Any = torch.npu if backend == "npu" else torch.cuda  # type: ignore[attr-defined]
    for index in range(mod.device_count()):
        free, total = mod.mem_get_info(index)
        used[str(index)] = int(total - free)
        totals[str(index)] = int(total)
    return {"backend": backend, "method": "mem_get_info", "used_bytes": used, "total_bytes": totals}


def main(argv: list[str] | None = None) -> None:
    """``python -m toolkit.worker.probe baseline --backend cuda``: print the baseline as one JSON line."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m toolkit.worker.probe")
    p.add_argument("command", choices=("baseline", "detect"))
    p.add_argument("--backend", choices=BACKENDS, default=None)
    args = p.parse_args(argv)
    if args.command == "detect":
        print(json.dumps({"backend": detect_backend()}))
        return
    print(json.dumps(measure_baseline(args.backend or detect_backend())))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

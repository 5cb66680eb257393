"""``SimEngine``: the ``sim`` backend -- a vLLM multi-modal engine's memory behaviour on a simulated device.

Every result is simulated and says so (``Run.simulated``, ``backend="sim"``, ``RequestResult.simulated``);
no text is produced (``text=None``): the engine computes token counts and device memory, never model
output.

What one engine does, per rank (vLLM V1 worker, ``enforce_eager``; sources in ``toolkit.workload``):

1. ``init_device``: the device starts with the runtime context (``SimDevice.context_bytes``); vLLM's
   first ``MemorySnapshot`` is taken here. Then the collective communicator's buffers (HCCL/NCCL,
   outside the caching allocator) when ``tensor_parallel_size > 1``.
2. The model runner's persistent buffers, then the weights (``model_memory_usage`` = allocated delta).
3. ``determine_available_memory``: ``empty_cache``, ``reset_peak_memory_stats``, the profiling program,
   ``empty_cache``; the KV cache is sized with vllm-ascend's formula (``toolkit.workload.budget``) and
   allocated. On NPU, memory vllm-ascend takes after profiling outside any budget (the ATB tiling buffer
   pool, vllm-ascend issue #14300) is added as non-torch memory.
4. Requests, one at a time: the scheduler's encoder-cache bookkeeping frees evicted image embeddings;
   the encoder runs (its output stays in the encoder cache); chunked prefill; decode steps.

Tensor-parallel ranks run the same program on identical devices (the model is sharded symmetrically),
so the engine simulates one device and reports its sample for every rank.

Decode steps are identical programs. The engine replays them until the allocator's current statistics
repeat from one step to the next (the step no longer changes the allocator state) and counts the
remaining steps without replaying them; ``decode_steady_state=False`` replays every step.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from toolkit.core.errors import EngineError
from toolkit.workload.inputs import list_images, opened_image
from toolkit.engines.base import split_knobs
from toolkit.engines._runloop import run_path_for, run_requests
from toolkit.core.records import MemorySample, RequestResult, Run, SampleStatus
from toolkit.core.units import MiB
from toolkit.core.vocab import Platform
from toolkit.workload.budget import DeviceSnapshot, KvBudget, kv_budget
from toolkit.workload.encoder_cache import EncoderCacheBook
from toolkit.workload.engine_args import EngineArgs
from toolkit.workload.images import ImageGrid, image_grid, largest_image_grid
from toolkit.workload.presets import load_preset
from toolkit.workload.program import (
    OP_ALLOC,
    OP_FREE,
    Program,
    WorkspacePolicy,
    decode_program,
    encoder_program,
    kv_cache_program,
    kv_page_bytes,
    prefill_chunks,
    prefill_program,
    profile_program,
    runner_buffers_program,
    weights_program,
)
from toolkit.workload.prompt import IMAGE_PAD, estimate_text_tokens, prompt_for_image, prompt_tokens

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

    from toolkit.sim.device import SimDevice

# HCCL_BUFFSIZE default (Ascend HCCL environment variables: 200 MB per communication domain); one TP domain.
HCCL_BUFFER_BYTES = 200 * MiB
# vllm-ascend issue #14300: the ATB TilingBufferPool (~98 MiB per rank) is allocated after memory
# profiling and not accounted for.
ATB_TILING_POOL_BYTES = 98 * MiB

# Simulated time that passes per request for the driver: its cache threshold decays at most once per
# second (hicann/driver devmm_virt_com_heap.c:1234), so any value above 1 s is equivalent while each
# request's segment frees come in one burst; the seed's requests generate up to 1024 tokens, far longer.
DRIVER_SECONDS_PER_REQUEST = 2.0

OutputTokens = Literal["max", "uniform"] | int








def _load_image(image: Any) -> tuple[str | None, int, int, str]:
    """(name, width, height, cache key) of a path or PIL image; only the header of a file is read."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        with opened_image(path) as im:
            width, height = im.size
        st = path.stat()
        key = f"file:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        return path.name, width, height, key
    size = getattr(image, "size", None)
    if size is None or not hasattr(image, "mode"):
        raise EngineError(f"image must be a PIL.Image or a path, got {type(image).__name__}")
    width, height = size
    # vLLM hashes the pixels (mm_hash); hashing a small thumbnail keeps this cheap and still tells
    # different pictures apart
    thumb = image.copy()
    thumb.thumbnail((64, 64))
    digest = hashlib.blake2b(thumb.tobytes(), digest_size=16).hexdigest()
    return getattr(image, "filename", None) or None, width, height, f"pil:{width}x{height}:{digest}"


@dataclass(frozen=True)
class SimOptions:
    """What only the simulated engine has (the vLLM arguments are ``EngineArgs``, shared with the real engine).

    ``memory_fraction``: call ``set_per_process_memory_fraction`` in the worker (vLLM never does;
    ``garbage_collection_threshold`` only acts when a fraction is set). ``device_capacity_bytes`` /
    ``context_bytes``: per-device memory and runtime memory outside the allocators (default: the simulator's,
    64 GiB and 1 GiB on NPU). ``output_tokens``: ``"max"`` (every request generates ``max_tokens``: the worst
    case, deterministic), ``"uniform"`` (seeded draw in ``[1, max_tokens]``), or a fixed int. ``workspace``:
    NPU workspace sizes per operator call (uncalibrated: zero by default). ``program``: ``"hand"``
    (``toolkit.workload.program``) or ``"recorded"`` (measured from vLLM's model code, read from
    ``recordings``; docs/recorded-programs.md).
    """

    device_capacity_bytes: int | None = None
    context_bytes: int | None = None
    torch_version: str | None = None
    memory_fraction: float | None = None
    output_tokens: OutputTokens = "max"
    workspace: WorkspacePolicy | None = None
    hccl_buffer_bytes: int | None = None
    post_profile_non_torch_bytes: int | None = None
    decode_steady_state: bool = True
    program: Literal["hand", "recorded"] = "hand"
    recordings: str | os.PathLike[str] | None = None
    driver: bool | None = None  # the Ascend driver layer below torch_npu (None: on for npu; toolkit.sim.ascend)


class SimEngine:
    """The ``sim`` backend of ``%ascend_llm`` (interface shared with the real engines).

    Example::

        eng = SimEngine(conf="expandable_segments:True", tensor_parallel_size=2, max_model_len=65536,
                        max_num_batched_tokens=32768, gpu_memory_utilization=0.95)
        run = eng.run_images("photos/", max_tokens=1024)     # one MemorySample per request and rank
        run.to_frame()[["request_index", "reserved_bytes", "non_torch_bytes"]]

    Args:
        model: hub id with a preset (``toolkit.workload.presets.list_presets()``).
        conf: allocator conf string as the user gives it (None: unset).
        platform: ``"npu"`` (torch_npu allocator + workspace allocator) or ``"cuda"``.
        vllm_ascend_version: apply that vllm-ascend's rewrite of ``PYTORCH_NPU_ALLOC_CONF``
            (``toolkit.conf.policy.upstream_policy``; e.g. ``"0.14.0rc1"`` appends ``expandable_segments:True``);
            None: the allocator gets ``conf`` exactly (a vLLM release without the default).
        run_dir: where ``run_images`` writes run files (``<name>.jsonl``); None: runs stay in memory
            unless ``run_images(run_path=...)`` is given.
        engine_args / sim / knobs: the vLLM arguments (``EngineArgs``, shared with the real engine) and the
            simulator's own (``SimOptions``), as dataclasses or by field name.
    """

    backend = "sim"
    simulated = True

    def __init__(
        self,
        model: str = "Qwen/Qwen3-VL-8B-Instruct",
        conf: str | None = None,
        platform: Platform = "npu",
        *,
        engine_args: EngineArgs | None = None,
        sim: SimOptions | None = None,
        vllm_ascend_version: str | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        name: str | None = None,
        **knobs: Any,
    ) -> None:
        """``knobs``: any ``EngineArgs`` or ``SimOptions`` field by name (``tensor_parallel_size=2``,
        ``memory_fraction=1.0``), on top of ``engine_args`` / ``sim``."""
        from toolkit.sim.device import SimDevice  # deferred: the simulator is only needed here

        self.preset = load_preset(model)
        self.model = self.preset.model
        self.platform = platform
        given, sim_given = split_knobs(knobs, "SimEngine", EngineArgs, SimOptions)
        self.engine_args = replace(engine_args or EngineArgs(), **given).simulated()
        self.options = opts = replace(sim or SimOptions(), **sim_given)
        output_tokens, memory_fraction = opts.output_tokens, opts.memory_fraction
        self.args = self.engine_args.resolved(self.preset, platform)
        if output_tokens not in ("max", "uniform") and not (isinstance(output_tokens, int) and output_tokens > 0):
            raise EngineError(f"output_tokens must be 'max', 'uniform' or a positive int, got {output_tokens!r}")
        self.output_tokens_policy = output_tokens
        self.seed = self.engine_args.seed or 0
        self.conf = conf
        self.effective_conf = self._effective_conf(conf, platform, vllm_ascend_version)
        self.memory_fraction = memory_fraction
        self.workspace_policy = opts.workspace or WorkspacePolicy()
        self.decode_steady_state = opts.decode_steady_state
        self.run_dir = Path(run_dir) if run_dir is not None else None
        # named by what differs between runs (the conf): legends and tables then say "default" /
        # "expandable_segments:True"; the model and backend are in every title and table already
        self.name = name or self.effective_conf or "default"
        tp = self.args.tp
        self.hccl_buffer_bytes = (HCCL_BUFFER_BYTES if tp > 1 else 0) if opts.hccl_buffer_bytes is None \
            else opts.hccl_buffer_bytes
        self.post_profile_non_torch_bytes = (ATB_TILING_POOL_BYTES if platform == "npu" else 0) \
            if opts.post_profile_non_torch_bytes is None else opts.post_profile_non_torch_bytes

        self.device: SimDevice = SimDevice(platform, self.effective_conf, capacity_bytes=opts.device_capacity_bytes,
                                           torch_version=opts.torch_version, context_bytes=opts.context_bytes,
                                           driver=opts.driver)
        if memory_fraction is not None:
            self.device.set_per_process_memory_fraction(memory_fraction)
        self.capacity_bytes = self.device.capacity_bytes
        self._programs: dict[tuple[Any, ...], Program] = {}
        self._recorded = self._recorded_programs(opts.program, opts.recordings)
        self._decode = (self._recorded.decode() if self._recorded else None) or \
            decode_program(self.preset, self.args, 1, self.workspace_policy)
        self._encoder_cache_addr: dict[str, int] = {}
        self._block_frames: dict[int, list[dict[str, Any]]] = {}  # live block address -> what it is
        self._history = False  # record_history(): trace with frames and request annotations
        self._trace_frames: dict[int, list[dict[str, Any]]] = {}  # trace tick -> frames
        self._annotations: list[dict[str, Any]] = []
        self._next_index = 0  # request_index: numbered from 0 in each run (run_images resets it)
        self._served = 0  # requests this engine served: makes request ids unique over runs
        self._dead: str | None = None
        self.startup_log: list[str] = []
        self.budget: KvBudget = self._start()

    def _recorded_programs(self, program: str, recordings: Any) -> Any:
        if program == "hand":
            return None
        if program != "recorded" or recordings is None:
            raise EngineError(f"program must be 'hand' or 'recorded' (with recordings=FOLDER), got {program!r}")
        from toolkit.workload.recorded.library import RecordedPrograms

        if self.args.tp != 1:
            raise EngineError("recorded programs are TP 1 (see docs/recorded-programs.md for TP 2)")
        try:
            return RecordedPrograms(recordings, self.preset.name)
        except ValueError as exc:
            raise EngineError(str(exc)) from None

    # -- conf ------------------------------------------------------------------------------------------
    @staticmethod
    def _effective_conf(conf: str | None, platform: str, vllm_ascend_version: str | None) -> str:
        if platform != "npu" or vllm_ascend_version is None:
            return conf or ""
        from toolkit.conf.policy import NPU_VAR, upstream_policy

        environ = {} if conf is None else {NPU_VAR: conf}
        return upstream_policy(environ, vllm_ascend_version).after.get(NPU_VAR, "")

    # -- program execution -------------------------------------------------------------------------------
    def _run(self, program: Program, *, named: bool = False) -> list[int]:
        """Replay a program on the device; returns the slot -> address table (kept slots stay live).

        ``named`` (start-up programs, and every program while history is recorded): also remember what
        each block is (``toolkit.workload.frames``) for ``snapshot()``; otherwise nothing but the calls.
        """
        if named or self._history:
            return self._run_named(program)
        dev = self.device
        malloc, free, workspace = dev.malloc, dev.free, dev.workspace
        addrs = [0] * program.n_slots
        for op, slot, n in program.ops:
            if op == OP_ALLOC:
                addrs[slot] = malloc(n)
            elif op == OP_FREE:
                free(addrs[slot])
            else:
                workspace(n)
        return addrs

    def _last_tick(self) -> int:
        trace = self.device._trace  # the device's history ring (SimDevice.record_history); None when off
        return trace[-1][4] if trace else -1

    def _tag_new_entries(self, since: int, frames: list[dict[str, Any]]) -> None:
        """Give the trace entries appended after tick ``since`` these frames (torch records the stack of
        the call that caused them: the alloc, its segment_alloc, the frees)."""
        trace = self.device._trace
        if not trace:
            return
        for entry in reversed(trace):
            if entry[4] <= since:
                break
            self._trace_frames[entry[4]] = frames

    def _run_named(self, program: Program) -> list[int]:
        from toolkit.workload.frames import block_frames

        dev, known = self.device, self._block_frames
        scopes = program.scopes or ("",) * program.n_slots
        history = self._history
        addrs = [0] * program.n_slots
        for op, slot, n in program.ops:
            since = self._last_tick() if history else 0
            if op == OP_ALLOC:
                addr = addrs[slot] = dev.malloc(n)
                frames = known[addr] = block_frames(program.labels[slot], scopes[slot], program.name)
            elif op == OP_FREE:
                frames = known.pop(addrs[slot], [])
                dev.free(addrs[slot])
            else:
                dev.workspace(n)
                continue
            if history:
                self._tag_new_entries(since, frames)
        return addrs

    def record_history(self, enabled: bool = True, max_entries: int = 1_000_000) -> None:
        """Record the device's trace (``SimDevice.record_history``) with what each block is, and request
        boundaries as ``external_annotations`` (what torch's ``_record_memory_history`` plus
        ``record_function`` give on a real engine); ``enabled=False`` stops and clears it."""
        self.device.record_history("all" if enabled else None, max_entries=max_entries)
        self._history = bool(enabled)
        self._trace_frames.clear()
        self._annotations.clear()

    def snapshot(self) -> dict[str, Any]:
        """``SimDevice.snapshot()`` with frames naming each live block (weights, KV cache layers, encoder
        outputs; every block while history is recorded) and, when recording, frames on the trace entries
        and the requests as ``external_annotations``."""
        snap = self.device.snapshot()
        known = self._block_frames
        for seg in snap["segments"]:
            for b in seg["blocks"]:
                if b["state"] != "inactive":
                    b["frames"] = known.get(b["address"], [])
        trace = self.device._trace
        if trace:
            entries = snap["device_traces"][0]
            for tup, entry in zip(trace, entries[len(entries) - len(trace):]):
                entry["frames"] = self._trace_frames.get(tup[4], [])
            oldest = trace[0][4]
            for tick in [t for t in self._trace_frames if t < oldest]:
                del self._trace_frames[tick]  # fell out of the ring
        if self._history:
            snap["external_annotations"] = list(self._annotations)
        return snap

    def _annotate(self, name: str, stage: str) -> None:
        # torch/csrc/cuda/memory_snapshot.cpp: {"name", "stage": START|END, "device", "time_us"}; the simulated
        # clock is the trace's tick, so an annotation sits between the entries it encloses
        self._annotations.append({"name": name, "stage": stage, "device": self.device.device,
                                  "time_us": max(0, self._last_tick())})

    def _program(self, key: tuple[Any, ...], build: Any) -> Program:
        prog = self._programs.get(key)
        if prog is None:
            prog = self._programs[key] = build()
        return prog

    def _snapshot(self) -> DeviceSnapshot:
        dev = self.device
        free, total = dev.mem_get_info()
        return DeviceSnapshot(total_bytes=total, free_bytes=free, reserved_bytes=dev.memory_reserved(),
                              allocated_bytes=dev.memory_allocated(),
                              allocated_peak_bytes=dev.max_memory_allocated())

    def _add_non_torch(self, nbytes: int, what: str) -> None:
        dev = self.device
        if dev.device_used_bytes + nbytes > dev.capacity_bytes:
            raise EngineError(f"simulated engine start failed: no room for {what} ({nbytes} bytes)")
        dev.external_bytes += nbytes

    # -- startup ---------------------------------------------------------------------------------------
    def _start(self) -> KvBudget:
        from toolkit.sim.oom import SimOutOfMemoryError

        p, r, dev = self.preset, self.args, self.device
        init = self._snapshot()
        if init.free_bytes < init.total_bytes * r.gpu_memory_utilization:
            raise EngineError(
                f"Free memory on device ({init.free_bytes / 2**30:.2f}/{init.total_bytes / 2**30:.2f} GiB) on "
                f"startup is less than desired GPU memory utilization ({r.gpu_memory_utilization}). "
                "Decrease GPU memory utilization or reduce GPU memory used by other processes.")
        try:
            if self.hccl_buffer_bytes:
                self._add_non_torch(self.hccl_buffer_bytes, "the communicator buffers")
            self._run(runner_buffers_program(p, r), named=True)
            before_load = dev.memory_allocated()
            self._run(weights_program(p, r), named=True)
            weights = dev.memory_allocated() - before_load
            # memory_profiling(): gc.collect(); empty_cache(); reset_peak_memory_stats(); measure
            dev.empty_cache()
            dev.reset_peak_memory_stats()
            before = self._snapshot()
            big = largest_image_grid(p.processor)
            budget_embeds = max(r.max_num_batched_tokens, big.visual_tokens)
            n_items = max(1, budget_embeds // big.visual_tokens)
            self._run(profile_program(p, r, [big] * n_items, self.workspace_policy))
            peak = dev.max_memory_allocated()
            dev.empty_cache()
            after = self._snapshot()
        except SimOutOfMemoryError as exc:
            raise EngineError(f"simulated engine start failed (out of memory while loading or profiling): "
                              f"{exc}") from None
        budget = kv_budget(init=init, before_profile=before, profile_peak_allocated_bytes=peak,
                           after_profile=after, weights_bytes=weights,
                           gpu_memory_utilization=r.gpu_memory_utilization,
                           page_bytes=kv_page_bytes(p, r), num_layers=p.text.num_hidden_layers,
                           block_size=r.block_size, max_model_len=r.max_model_len)
        try:
            self._run(kv_cache_program(p, r, budget.num_blocks), named=True)
        except SimOutOfMemoryError as exc:
            raise EngineError(f"simulated engine start failed allocating the KV cache: {exc}") from None
        if self.post_profile_non_torch_bytes:
            self._add_non_torch(self.post_profile_non_torch_bytes, "memory allocated after profiling")
        self.encoder_book = EncoderCacheBook(budget_embeds)
        self.startup_log.append(budget.summary())
        self._non_torch_at_creation = init.non_torch_bytes  # vLLM's baseline: not in its non-torch figure
        return budget

    def startup_rows(self) -> list[tuple[str, str]]:
        """vLLM's start-up breakdown (``determine_available_memory``'s log), and why samples show more non-torch.

        vLLM logs the non-torch memory that *grew* during start-up (``non_torch_increase``, measured from
        engine creation: ``toolkit.workload.budget``); every sample shows all non-torch memory on the device
        (``device_used - reserved``). The difference is what was there before the engine (the runtime
        context) plus what vllm-ascend allocates after profiling, outside every budget (the ATB tiling pool,
        vllm-ascend issue #14300).
        """
        b, g = self.budget, (lambda n: f"{n / 2**30:.2f} GiB")
        dev = self.device
        now = dev.device_used_bytes - dev.memory_reserved()
        before, after = self._non_torch_at_creation, self.post_profile_non_torch_bytes
        return [
            ("budget", f"{g(b.requested_bytes)} = total {g(b.total_bytes)} x gpu_memory_utilization "
                       f"{self.args.gpu_memory_utilization}"),
            ("weights", g(b.weights_bytes)),
            ("activation peak", f"{g(b.torch_peak_increase_bytes)} (profiling pass)"),
            ("non-torch (vLLM's log)", f"{g(b.non_torch_increase_bytes)}: grown during start-up (communicator "
                                       "buffers); measured from engine creation"),
            ("KV cache", f"{g(b.kv_cache_bytes)} ({b.num_blocks} blocks, {b.kv_cache_tokens} tokens; "
                         f"available {g(b.available_kv_cache_bytes)})"),
            ("non-torch (samples)", f"{g(now)} = {g(before)} before the engine (runtime context) + "
                                    f"{g(b.non_torch_increase_bytes)} start-up + {g(after)} allocated after "
                                    "profiling (ATB tiling pool, vllm-ascend #14300)"
                                    + (f" + {g(now - before - b.non_torch_increase_bytes - after)} since"
                                       if now != before + b.non_torch_increase_bytes + after else "")),
        ]

    # -- requests ----------------------------------------------------------------------------------------
    def _output_tokens(self, index: int, max_tokens: int, prompt_len: int) -> int:
        limit = max(1, min(max_tokens, self.args.max_model_len - prompt_len))
        policy = self.output_tokens_policy
        if policy == "max":
            return limit
        if policy == "uniform":
            return random.Random(f"{self.seed}:{index}").randint(1, limit)
        return min(int(policy), limit)

    def _sample(self, index: int, request_id: str, started: int, info: dict[str, Any], status: str,
                message: str | None) -> tuple[MemorySample, ...]:
        dev = self.device
        stats = dev.memory_stats()
        free, total = dev.mem_get_info()
        used = total - free
        reserved = dev.memory_reserved()
        base = MemorySample(
            request_index=index, request_id=request_id, rank=0, started_at_ns=started,
            duration_ns=time.time_ns() - started, **info,
            allocated_bytes=dev.memory_allocated(), allocated_peak_bytes=dev.max_memory_allocated(),
            reserved_bytes=reserved, reserved_peak_bytes=dev.max_memory_reserved(),
            active_bytes=stats["active_bytes.all.current"],
            inactive_split_bytes=stats["inactive_split_bytes.all.current"],
            device_used_bytes=used, device_total_bytes=total, non_torch_bytes=used - reserved,
            segment_count=dev.snapshot_segment_count, alloc_retries=stats["num_alloc_retries"],
            driver_cached_bytes=dev.driver_cached_bytes,
            num_ooms=stats["num_ooms"], status=status, message=message)  # type: ignore[arg-type]
        from dataclasses import replace

        return tuple(replace(base, rank=rank) for rank in range(self.args.tp))

    def _decode_steps(self, steps: int) -> None:
        if steps <= 0:
            return
        dev = self.device
        prev: tuple[int, ...] | None = None
        for _ in range(steps):
            self._run(self._decode)
            if not self.decode_steady_state:
                continue
            stats = dev.memory_stats()
            now = tuple(v for k, v in stats.items() if k.endswith(".current")) + (
                stats["num_alloc_retries"], stats["num_ooms"], dev.workspace_bytes if self.platform == "npu" else 0)
            if now == prev:
                return  # the step leaves the allocator as it found it: the remaining steps are the same
            prev = now

    def generate(self, prompt: str | None = None, image: Image | str | os.PathLike[str] | None = None, *,
                 max_tokens: int = 1024, prompt_tokens_count: int | None = None,
                 request_id: str | None = None) -> RequestResult:
        """Serve one request (simulated): returns token counts and per-rank memory, never text.

        ``prompt`` defaults to the seed script's chat prompt (with one image placeholder when an image is
        given); ``prompt_tokens_count`` overrides the estimated prompt length.
        """
        from toolkit.sim.oom import SimOutOfMemoryError

        if self._dead is not None:
            raise EngineError(f"the simulated engine is dead ({self._dead}): start a new one "
                              "(%ascend_llm MODEL, or a new SimEngine)")
        if max_tokens < 1:
            raise EngineError(f"max_tokens must be >= 1, got {max_tokens}")
        p, r = self.preset, self.args
        started = time.time_ns()
        grid: ImageGrid | None = None
        name = key = None
        if image is not None:
            name, width, height, key = _load_image(image)
            try:
                grid = image_grid(width, height, p.processor)
            except ValueError as exc:
                raise EngineError(f"{name or 'image'}: {exc}") from None
        if grid is not None:
            prompt = prompt_for_image(prompt)
        elif prompt is None:
            prompt = "Hello"
        visual = grid.visual_tokens if grid else 0
        try:
            n_prompt = prompt_tokens_count or prompt_tokens(prompt, visual)
        except ValueError as exc:
            raise EngineError(str(exc)) from None
        if n_prompt >= r.max_model_len:
            raise EngineError(f"prompt of {n_prompt} tokens does not fit max_model_len {r.max_model_len}")
        index = self._next_index
        self._next_index += 1
        self._served += 1
        request_id = request_id or f"sim-{self._served - 1}"
        n_out = self._output_tokens(index, max_tokens, n_prompt)
        info = dict(input_name=name, image_width_px=grid.width_px if grid else None,
                    image_height_px=grid.height_px if grid else None,
                    resized_width_px=grid.resized_width_px if grid else None,
                    resized_height_px=grid.resized_height_px if grid else None,
                    visual_tokens=visual, prompt_tokens=n_prompt, output_tokens=n_out)
        self.device.reset_peak_memory_stats()
        self.device.advance_clock(DRIVER_SECONDS_PER_REQUEST)
        status: SampleStatus = "ok"
        message: str | None = None
        if self._history:
            self._annotate(f"request {index}" + (f" ({name})" if name else ""), "START")
        try:
            if grid is not None and key is not None:
                self._encode(key, grid)
            prefix = estimate_text_tokens(prompt.split(IMAGE_PAD)[0]) if grid else 0
            start = 0
            for chunk in prefill_chunks(n_prompt, r.max_num_batched_tokens):
                vis = max(0, min(start + chunk, prefix + visual) - max(start, prefix)) if grid else 0
                rec = self._recorded.prefill(grid, chunk) if self._recorded and vis == visual else None
                prog = rec or self._program(("prefill", chunk, vis),
                                            lambda c=chunk, v=vis: prefill_program(p, r, c, v, self.workspace_policy))
                self._run(prog)
                start += chunk
            self._decode_steps(n_out - 1)
            if key is not None:
                self.encoder_book.release(key)
        except SimOutOfMemoryError as exc:
            status, message = "oom", str(exc)
            self._dead = f"out of memory at request {index}"
        except KeyboardInterrupt:
            # the request's program stopped half-way: its blocks stay allocated, so the simulated device no
            # longer matches any state a real engine would be in after a request
            self._dead = f"interrupted during request {index}, leaving the simulated device mid-request"
            raise
        if self._history:
            self._annotate(f"request {index}" + (f" ({name})" if name else ""), "END")
        samples = self._sample(index, request_id, started, info, status, message)
        return RequestResult(request_index=index, request_id=request_id, status=status, message=message,
                             samples=samples, simulated=True, **info)  # type: ignore[arg-type]

    def _encode(self, key: str, grid: ImageGrid) -> None:
        evicted = self.encoder_book.admit(key, grid.visual_tokens)
        if evicted is None:  # cannot happen: the cache holds at least the largest item
            raise EngineError(f"image of {grid.visual_tokens} tokens does not fit the encoder cache")
        for old in evicted:
            addr = self._encoder_cache_addr.pop(old)
            self._block_frames.pop(addr, None)
            self.device.free(addr)
        if key in self._encoder_cache_addr:
            return  # cache hit: vLLM does not run the encoder again
        if self._recorded is not None:
            try:
                prog = self._recorded.encoder(grid)
            except ValueError as exc:
                raise EngineError(str(exc)) from None
        else:
            prog = self._program(("encoder", grid.resized_key),
                                 lambda: encoder_program(self.preset, self.args, [grid], self.workspace_policy))
        addrs = self._run(prog)
        addr = self._encoder_cache_addr[key] = addrs[prog.kept_label("encoder_output")]
        if addr not in self._block_frames:  # kept in the encoder cache: say what it is even without history
            from toolkit.workload.frames import block_frames

            self._block_frames[addr] = block_frames("encoder_output", f"image {grid.width_px}x{grid.height_px}",
                                                    prog.name)

    # -- runs --------------------------------------------------------------------------------------------
    def header(self, name: str | None = None) -> Run:
        """The ``Run`` header describing this engine (no samples)."""
        args = self.engine_args.given()
        args.update(output_tokens=self.output_tokens_policy, seed=self.seed,
                    memory_fraction=self.memory_fraction, kv_cache_blocks=self.budget.num_blocks,
                    kv_cache_bytes=self.budget.kv_cache_bytes, block_size=self.args.block_size)
        return Run(name=name or self.name, backend="sim", platform=self.platform, model=self.model,
                   conf=self.conf, effective_conf=self.effective_conf, device_capacity_bytes=self.capacity_bytes,
                   simulated=True, engine_args=args, started_at_ns=time.time_ns())

    def _failed_input(self, index_item: Any, reason: str) -> RequestResult:
        """A request whose input could not be read: no program runs, the memory is sampled as it is."""
        index = self._next_index
        self._next_index += 1
        self._served += 1
        request_id = f"sim-{self._served - 1}"
        name = Path(index_item).name if isinstance(index_item, (str, os.PathLike)) else None
        info = dict(input_name=name, image_width_px=None, image_height_px=None, resized_width_px=None,
                    resized_height_px=None, visual_tokens=0, prompt_tokens=0, output_tokens=0)
        self.device.reset_peak_memory_stats()
        samples = self._sample(index, request_id, time.time_ns(), info, "error", reason)
        return RequestResult(request_index=index, request_id=request_id, status="error", message=reason,
                             samples=samples, simulated=True, **info)  # type: ignore[arg-type]

    def run_images(self, images: str | os.PathLike[str] | Iterable[Any], prompt: str | None = None, *,
                   max_tokens: int = 1024, progress: bool = True, run_path: str | os.PathLike[str] | None = None,
                   name: str | None = None,
                   on_result: Callable[[RequestResult], None] | None = None,
                   snapshots: Any = True) -> Run:
        """Send the images one by one (like the seed script); one ``MemorySample`` per request and rank.

        ``images``: a folder (its image files, sorted by name) or a list of paths / PIL images. Requests
        are numbered from 0 in each run. A file that cannot be read is a failed request (its reason as
        message) and the run goes on; an OOM ends the run with ``status="oom"`` at that request; Ctrl-C
        ends it as ``interrupted``; every earlier sample is kept and the run is returned (on disk too
        when a run file is written: ``run_path``, or ``run_dir`` given to the engine; ``Run.path``).

        ``snapshots``: True (default) records the allocator snapshot after each request
        (``SnapshotRecorder``, compact: unchanged segments are stored once) so ``%mem_inspect run``
        shows the allocator state; False records none; a ``SnapshotRecorder`` records into that one.
        """
        from toolkit.snapshot.by_request import SnapshotRecorder, register_snapshots

        if self._dead is not None:
            raise EngineError(f"the simulated engine is dead ({self._dead}): start a new one "
                              "(%ascend_llm MODEL, or a new SimEngine)")
        items: Sequence[Any] = list_images(images) if isinstance(images, (str, os.PathLike)) else list(images)
        header = self.header(name)
        self._next_index = 0
        recorder = SnapshotRecorder(self) if snapshots is True else (
            None if snapshots is False or snapshots is None else snapshots)  # an empty recorder is falsy
        callback = on_result
        if recorder is not None:
            register_snapshots(header.name, header.started_at_ns, recorder)

            def callback(result: RequestResult) -> None:
                recorder(result)
                if on_result is not None:
                    on_result(result)

        self.last_run = run_requests(lambda item: self.generate(prompt, item, max_tokens=max_tokens), items, header,
                            path=run_path_for(header, run_path, self.run_dir), total=len(items),
                            progress=progress, desc=f"{self.effective_conf or 'default'} [simulated]",
                            on_result=callback, failed_input=self._failed_input)
        return self.last_run

    # -- the Engine protocol (toolkit.engines.base) ------------------------------------------------------
    @property
    def tensor_parallel_size(self) -> int:
        return self.args.tp

    def status_rows(self) -> list[tuple[str, str]]:
        return [("engine", f"{self.name} [simulated]"), ("model", self.model), ("platform", self.platform),
                ("tensor parallel", str(self.args.tp)), *self.startup_rows()]

    def conf_rows(self) -> list[tuple[str, str]]:
        return [("conf (you asked)", repr(self.conf)), ("conf (allocator gets)", repr(self.effective_conf))]

    def __repr__(self) -> str:
        return (f"SimEngine[simulated]({self.model}, platform={self.platform}, conf={self.effective_conf!r}, "
                f"tp={self.args.tp}, kv_blocks={self.budget.num_blocks})")

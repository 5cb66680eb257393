"""Presets, allocation programs, KV budgeting, encoder-cache bookkeeping and prompt lengths."""

from __future__ import annotations

import pytest

from toolkit.workload.budget import DeviceSnapshot, KvCacheBudgetError, kv_budget
from toolkit.workload.encoder_cache import EncoderCacheBook
from toolkit.workload.engine_args import EngineArgs, EngineArgsError
from toolkit.workload.images import image_grid, largest_image_grid
from toolkit.workload.presets import PresetError, list_presets, load_preset
from toolkit.workload.program import (
    OP_ALLOC,
    OP_FREE,
    OP_WORKSPACE,
    WorkspacePolicy,
    decode_program,
    encoder_program,
    kv_cache_program,
    kv_page_bytes,
    parameter_count,
    prefill_chunks,
    prefill_program,
    profile_program,
    runner_buffers_program,
    weight_tensors,
    weights_program,
)
from toolkit.workload.prompt import chat_prompt, estimate_text_tokens, prompt_tokens

GiB = 1024**3
SEED = EngineArgs(tensor_parallel_size=2, max_model_len=65536, max_num_seqs=8, max_num_batched_tokens=32768,
                  gpu_memory_utilization=0.95)
Q3 = load_preset("Qwen/Qwen3-VL-8B-Instruct")


# -- presets ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", list_presets())
def test_parameter_count_matches_the_published_one(model: str) -> None:
    """The weight list rebuilt from the config numbers adds up to the hub's parameter count."""
    p = load_preset(model)
    published = float(p.parameters_published.rstrip("B")) * 1e9
    assert abs(parameter_count(p) - published) < 0.005e9


def test_published_numbers_of_the_seed_model() -> None:
    t, v = Q3.text, Q3.vision
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads) == (4096, 36, 32, 8)
    assert (t.intermediate_size, t.head_dim, t.vocab_size, t.tie_word_embeddings) == (12288, 128, 151936, False)
    assert (v.depth, v.hidden_size, v.num_heads, v.intermediate_size) == (27, 1152, 16, 4304)
    assert (v.patch_size, v.spatial_merge_size, v.out_hidden_size) == (16, 2, 4096)
    assert v.deepstack_visual_indexes == (8, 16, 24)
    assert Q3.dtype == "bfloat16" and Q3.family == "qwen3_vl"
    assert load_preset("qwen3-vl-8b-instruct") is Q3


def test_unknown_model_is_refused_with_the_known_list() -> None:
    with pytest.raises(PresetError, match="Qwen/Qwen3-VL-8B-Instruct"):
        load_preset("meta-llama/Llama-3-8B")


def test_engine_args_are_validated_like_vllm() -> None:
    with pytest.raises(EngineArgsError, match="divisible by tensor parallel size"):
        EngineArgs(tensor_parallel_size=3).resolved(Q3, "npu")
    with pytest.raises(EngineArgsError, match="gpu_memory_utilization"):
        EngineArgs(gpu_memory_utilization=1.5).resolved(Q3, "npu")
    with pytest.raises(EngineArgsError, match="max_position_embeddings"):
        EngineArgs(max_model_len=10**7).resolved(Q3, "npu")
    r = SEED.resolved(Q3, "npu")
    assert (r.block_size, r.dtype_bytes) == (128, 2)
    assert SEED.resolved(Q3, "cuda").block_size == 16


# -- programs -----------------------------------------------------------------------------------------

def _sizes(program) -> dict[int, int]:
    return {slot: n for op, slot, n in program.ops if op == OP_ALLOC}


@pytest.mark.parametrize("model", list_presets())
@pytest.mark.parametrize("platform", ["npu", "cuda"])
def test_every_program_frees_what_it_does_not_keep(model: str, platform: str) -> None:
    p = load_preset(model)
    r = SEED.resolved(p, platform)
    g = image_grid(1920, 1080, p.processor)
    for prog in (encoder_program(p, r, [g]), prefill_program(p, r, g.visual_tokens + 29, g.visual_tokens),
                 decode_program(p, r), profile_program(p, r, [largest_image_grid(p.processor)] * 2)):
        live: set[int] = set()
        for op, slot, n in prog.ops:
            if op == OP_ALLOC:
                assert slot not in live and n > 0
                live.add(slot)
            elif op == OP_FREE:
                live.remove(slot)
        assert live == set(prog.kept)


def test_weights_are_sharded_per_rank() -> None:
    r1 = EngineArgs(tensor_parallel_size=1, max_num_batched_tokens=32768).resolved(Q3, "npu")
    r2 = SEED.resolved(Q3, "npu")
    params = lambda r: sum(n for _, n, is_param in weight_tensors(Q3, r) if is_param)  # noqa: E731
    assert params(r1) == parameter_count(Q3)
    # everything but norms, biases of row-parallel layers, the patch embedding and position table splits
    assert 0.5 < params(r2) / params(r1) < 0.502
    w = weights_program(Q3, r2)
    assert w.kept_bytes() == sum(n for _, n, _ in weight_tensors(Q3, r2)) * 2
    # model buffers: DeepStack inputs (3 x 32768 x 4096 bf16) and the rotary cache (262144 x 128 bf16)
    assert w.kept_bytes() - params(r2) * 2 == 3 * 32768 * 4096 * 2 + 262144 * 128 * 2


def test_encoder_output_of_a_12mp_photo() -> None:
    r = SEED.resolved(Q3, "npu")
    g = image_grid(4032, 3024, Q3.processor)
    prog = encoder_program(Q3, r, [g])
    out = prog.kept_label("encoder_output")
    # Qwen3-VL keeps main + 3 DeepStack features per token: 11844 x (4 x 4096) bf16
    assert _sizes(prog)[out] == 11844 * 4 * 4096 * 2
    first = prog.ops[0]
    assert first[0] == OP_ALLOC and first[2] == 47376 * 1536 * 4  # pixel values arrive as float32
    # per block temporaries are sharded by tp: the vision MLP fc1 is patches x 4304/2 bf16
    assert 47376 * 2152 * 2 in _sizes(prog).values()
    q25 = load_preset("Qwen/Qwen2.5-VL-7B-Instruct")
    p25 = encoder_program(q25, SEED.resolved(q25, "npu"), [image_grid(4032, 3024, q25.processor)])
    assert _sizes(p25)[p25.kept_label("encoder_output")] == 15552 * 3584 * 2


def test_npu_norm_and_rope_allocate_where_cuda_works_in_place() -> None:
    npu = prefill_program(Q3, SEED.resolved(Q3, "npu"), 1000, 900)
    cuda = prefill_program(Q3, SEED.resolved(Q3, "cuda"), 1000, 900)
    # per layer: 2 fused add-norms x 2 outputs + new q, k from npu_mrope; layer 0's input norm allocates
    # on both platforms (no residual yet); the final fused add-norm allocates 2 on NPU only
    assert npu.n_allocs - cuda.n_allocs == 35 * 6 + 4 + 2
    # inside the layers the NPU holds its own residual copy (the CUDA residual is the runner's buffer)
    text_npu = prefill_program(Q3, SEED.resolved(Q3, "npu"), 1000, 0)
    text_cuda = prefill_program(Q3, SEED.resolved(Q3, "cuda"), 1000, 0)
    assert text_npu.requested_peak_bytes() - text_cuda.requested_peak_bytes() >= 1000 * 4096 * 2


def test_prefill_peak_is_the_mlp_of_the_chunk() -> None:
    r = SEED.resolved(Q3, "cuda")
    T = 32768
    prog = prefill_program(Q3, r, T, 0)
    assert max(_sizes(prog).values()) == T * 2 * (12288 // 2) * 2  # gate_up: T x 2I/tp bf16


def test_profile_covers_every_request_program() -> None:
    """vLLM sizes the KV cache from the profiling peak; no single image's program may exceed it."""
    r = SEED.resolved(Q3, "npu")
    big = largest_image_grid(Q3.processor)
    prof = profile_program(Q3, r, [big, big]).requested_peak_bytes()
    for w, h in [(4032, 3024), (8064, 2304), (6000, 4000), (1179, 2556)]:
        g = image_grid(w, h, Q3.processor)
        enc = encoder_program(Q3, r, [g])
        pre = prefill_program(Q3, r, g.visual_tokens + 29, g.visual_tokens)
        assert enc.requested_peak_bytes() < prof
        assert pre.requested_peak_bytes() + enc.kept_bytes() < prof


def test_workspace_ops_only_when_sized() -> None:
    r = SEED.resolved(Q3, "npu")
    assert not any(op == OP_WORKSPACE for op, _, _ in decode_program(Q3, r).ops)
    ws = decode_program(Q3, r, workspace=WorkspacePolicy(text_attention_bytes_per_token=4096))
    assert [n for op, _, n in ws.ops if op == OP_WORKSPACE] == [4096] * 36


def test_kv_cache_layout_per_platform() -> None:
    r = SEED.resolved(Q3, "npu")
    page = kv_page_bytes(Q3, r)
    assert page == 2 * 128 * (8 // 2) * 128 * 2  # K+V, 128-token block, 4 KV heads per rank, bf16
    npu = kv_cache_program(Q3, r, 1000)
    cuda = kv_cache_program(Q3, SEED.resolved(Q3, "cuda"), 1000)
    assert npu.n_allocs == 72 and cuda.n_allocs == 36
    assert npu.kept_bytes() == 1000 * page * 36
    assert runner_buffers_program(Q3, r).kept_bytes() > 32768 * 4096 * 2


def test_prefill_chunks() -> None:
    assert prefill_chunks(11873, 32768) == [11873]
    assert prefill_chunks(70000, 32768) == [32768, 32768, 4464]
    assert prefill_chunks(0, 8) == []


# -- budget --------------------------------------------------------------------------------------------

def snap(free: int, reserved: int, alloc: int, peak: int) -> DeviceSnapshot:
    return DeviceSnapshot(total_bytes=64 * GiB, free_bytes=free, reserved_bytes=reserved, allocated_bytes=alloc,
                          allocated_peak_bytes=peak)


def test_kv_budget_follows_vllm_ascend_formula() -> None:
    init = snap(63 * GiB, 0, 0, 0)  # 1 GiB context
    before = snap(53 * GiB, 10 * GiB, 10 * GiB, 10 * GiB)
    after = snap(52 * GiB, 10 * GiB, 10 * GiB, 14 * GiB)  # +1 GiB non-torch (HCCL, workspace)
    b = kv_budget(init=init, before_profile=before, profile_peak_allocated_bytes=14 * GiB, after_profile=after,
                  weights_bytes=9 * GiB, gpu_memory_utilization=0.95, page_bytes=262144, num_layers=36,
                  block_size=128, max_model_len=65536)
    assert b.requested_bytes == int(64 * GiB * 0.95)
    assert b.torch_peak_increase_bytes == 4 * GiB and b.non_torch_increase_bytes == GiB
    assert b.available_kv_cache_bytes == b.requested_bytes - 14 * GiB
    assert b.num_blocks == b.available_kv_cache_bytes // 262144 // 36
    assert "Available KV cache memory" in b.summary()
    with pytest.raises(KvCacheBudgetError, match="max seq len"):
        kv_budget(init=init, before_profile=before, profile_peak_allocated_bytes=14 * GiB, after_profile=after,
                  weights_bytes=9 * GiB, gpu_memory_utilization=0.25, page_bytes=262144, num_layers=36,
                  block_size=128, max_model_len=65536)


# -- encoder cache ---------------------------------------------------------------------------------------

def test_encoder_cache_evicts_oldest_freeable_only_when_needed() -> None:
    book = EncoderCacheBook(32768)
    assert book.admit("a", 11844) == []
    book.release("a")
    assert book.admit("b", 11844) == []  # fits: "a" stays cached (freeable)
    book.release("b")
    assert book.admit("c", 16384) == ["a"]  # needs room: oldest first
    assert book.admit("d", 20000) is None  # "c" is referenced: can never fit now
    book.release("c")
    assert book.admit("b", 11844) == []  # hit on a freeable entry
    assert book.admit("e", 20000) == ["c"]


# -- prompt -------------------------------------------------------------------------------------------------

def test_prompt_length_estimate() -> None:
    assert estimate_text_tokens("Hello world, 2024!") == 9  # Hello| world|,| |2|0|2|4|!
    assert prompt_tokens(chat_prompt(), 11844) == 29 + 11844
    with pytest.raises(ValueError, match="exactly one"):
        prompt_tokens("no image here", 100)

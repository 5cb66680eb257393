"""SimEngine: startup budget, requests, encoder cache, decode replay, OOM handling, durable runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

from toolkit.engines.sim import EngineError, SimEngine
from toolkit.workload.photos import generate_photo_set
from toolkit.core.records import load_run
from toolkit.workload.images import image_grid
from toolkit.workload.program import WorkspacePolicy, encoder_program

GiB = 1024**3
SEED_ARGS = dict(tensor_parallel_size=2, max_model_len=65536, max_num_seqs=8, max_num_batched_tokens=32768,
                 gpu_memory_utilization=0.95, device_capacity_bytes=64 * GiB)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return generate_photo_set(tmp_path_factory.mktemp("photos"), 24, seed=3)


def _photo(photos: list[Path], kind: str) -> Path:
    return next(p for p in photos if f"_{kind}_" in p.name)


@pytest.fixture(scope="module")
def phone12mp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("one") / "phone.jpg"
    Image.new("RGB", (4032, 3024), (120, 140, 160)).save(path, "JPEG")
    return path


def test_startup_follows_vllm_budgeting() -> None:
    eng = SimEngine(conf="expandable_segments:True", **SEED_ARGS)
    b = eng.budget
    assert b.requested_bytes == int(64 * GiB * 0.95)
    assert b.available_kv_cache_bytes == b.requested_bytes - b.non_kv_cache_bytes
    assert b.kv_cache_bytes <= b.available_kv_cache_bytes < b.kv_cache_bytes + b.page_bytes * b.num_layers
    # weights of Qwen3-VL-8B per rank (tp=2) with the DeepStack buffers and rotary cache: ~9 GiB
    assert 8.5 * GiB < b.weights_bytes < 9.5 * GiB
    assert b.torch_peak_increase_bytes > 2 * GiB  # encoder on two 4096x4096 images, 32768-token forward
    assert b.non_torch_increase_bytes == 200 * 2**20  # the HCCL buffer of the TP domain
    assert "simulated" in repr(eng) and "Available KV cache memory" in eng.startup_log[0]
    # after startup the device holds weights + buffers + KV cache, nothing cached
    assert eng.device.memory_reserved() - eng.device.memory_allocated() < 64 * 2**20


def test_generate_reports_tokens_and_memory_per_rank(phone12mp: Path) -> None:
    eng = SimEngine(conf="", **SEED_ARGS)
    res = eng.generate(image=phone12mp, max_tokens=1024)
    assert res.status == "ok" and res.text is None and res.simulated
    assert (res.image_width_px, res.image_height_px) == (4032, 3024)
    assert (res.resized_width_px, res.resized_height_px) == (4032, 3008)
    assert res.visual_tokens == 11844 and res.prompt_tokens == 11844 + 29 and res.output_tokens == 1024
    assert [s.rank for s in res.samples] == [0, 1]
    a, b = res.samples
    assert a.reserved_bytes == b.reserved_bytes and a.request_index == b.request_index == 0
    assert a.device_used_bytes - a.reserved_bytes == a.non_torch_bytes
    assert a.allocated_peak_bytes > a.allocated_bytes  # activations came and went
    text = eng.generate("Describe the weather.", max_tokens=8)
    assert text.visual_tokens == 0 and text.output_tokens == 8 and text.request_index == 1


def test_output_token_policies_are_deterministic(phone12mp: Path) -> None:
    counts = []
    for _ in range(2):
        eng = SimEngine(conf="expandable_segments:True", output_tokens="uniform", seed=7, **SEED_ARGS)
        counts.append([eng.generate("Hi", max_tokens=500).output_tokens for _ in range(5)])
    assert counts[0] == counts[1] and all(1 <= c <= 500 for c in counts[0]) and len(set(counts[0])) > 1
    fixed = SimEngine(conf="", output_tokens=100, **SEED_ARGS)
    assert fixed.generate("Hi", max_tokens=50).output_tokens == 50
    with pytest.raises(EngineError, match="output_tokens"):
        SimEngine(output_tokens="random")


def test_encoder_cache_keeps_outputs_and_evicts_oldest(phone12mp: Path, tmp_path: Path) -> None:
    """Allocated bytes after a request = startup + the encoder outputs vLLM's cache still holds."""
    eng = SimEngine(conf="expandable_segments:True", **SEED_ARGS)
    base = eng.device.memory_allocated()
    out_block = -(-(11844 * 4 * 4096 * 2 + 32) // 512) * 512  # NPU: +32 B pad, 512-B blocks
    imgs = []
    for i in range(3):  # three different 12 MP photos (different pixels -> different cache keys)
        p = tmp_path / f"p{i}.jpg"
        Image.new("RGB", (4032, 3024), (i, 0, 0)).save(p, "JPEG")
        imgs.append(p)
    r0 = eng.generate(image=imgs[0], max_tokens=4)
    assert r0.samples[0].allocated_bytes - base == out_block
    r1 = eng.generate(image=imgs[1], max_tokens=4)
    assert r1.samples[0].allocated_bytes - base == 2 * out_block  # 2 x 11844 <= 32768: both cached
    count = lambda: eng.device.memory_stats()["allocation.all.allocated"]  # noqa: E731
    n0 = count()
    r2 = eng.generate(image=imgs[2], max_tokens=4)
    assert r2.samples[0].allocated_bytes - base == 2 * out_block  # the oldest was evicted first
    n1 = count()
    hit = eng.generate(image=imgs[2], max_tokens=4)  # same file again: cache hit, no encoder run
    assert hit.samples[0].allocated_bytes == r2.samples[0].allocated_bytes
    encoder_allocs = encoder_program(eng.preset, eng.args, [image_grid(4032, 3024, eng.preset.processor)]).n_allocs
    assert (n1 - n0) - (count() - n1) == encoder_allocs


@pytest.mark.parametrize("conf", ["", "expandable_segments:True"])
def test_steady_state_decode_skip_matches_full_replay(conf: str, photos: list[Path]) -> None:
    runs = []
    for steady in (True, False):
        eng = SimEngine(conf=conf, decode_steady_state=steady, **SEED_ARGS)
        runs.append(eng.run_images(photos[:8], max_tokens=48, progress=False))
    fields = ("allocated_bytes", "allocated_peak_bytes", "reserved_bytes", "reserved_peak_bytes",
              "inactive_split_bytes", "segment_count", "device_used_bytes")
    for a, b in zip(runs[0].samples, runs[1].samples):
        assert [getattr(a, f) for f in fields] == [getattr(b, f) for f in fields]


def test_caching_allocator_oom_stops_the_run_and_keeps_samples(photos: list[Path]) -> None:
    eng = SimEngine(conf="", **SEED_ARGS)
    small = [p for p in photos if "_thumbnail_" in p.name][:2]
    big = [p for p in photos if "_phone_" in p.name or "_camera_" in p.name][:1]
    run = eng.run_images(small, progress=False, max_tokens=16)
    assert run.status == "ok" and run.requests_served == 2
    # another process takes most of the free device memory (mem_get_info counts it, vLLM cannot)
    eng.device.external_bytes += eng.device.mem_get_info()[0] - 256 * 2**20
    run = eng.run_images(small + big + small, progress=False, max_tokens=16)
    # requests are numbered per run: the big photo is request 2 of this run (not 4 of the engine)
    assert run.status == "oom" and "out of memory at request 2" in run.message
    assert [s.status for s in run.samples_of_rank(0)] == ["ok", "ok", "oom"]
    oom = run.samples_of_rank(1)[-1]
    assert oom.message.startswith("NPU out of memory. Tried to allocate") and oom.num_ooms == 1
    with pytest.raises(EngineError, match="dead"):
        eng.generate("Hi")


def test_unbudgeted_workspace_oom_is_reported_with_the_workspace_message(photos: list[Path]) -> None:
    """NPU workspaces sized during profiling are released by empty_cache() before vLLM's last snapshot,
    so the KV budget never counts them; an (artificially) large one then fails while serving."""
    eng = SimEngine(conf="", workspace=WorkspacePolicy(vision_attention_bytes_per_patch=256 * 1024), **SEED_ARGS)
    assert eng.budget.non_torch_increase_bytes == 200 * 2**20  # the workspace is not in it
    run = eng.run_images([_photo(photos, "thumbnail"), _photo(photos, "phone")], progress=False, max_tokens=4)
    assert run.status == "oom"
    assert run.samples[-1].message.startswith("NPU out of memory. NPUWorkspaceAllocator tried to allocate")


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    eng = SimEngine(conf="expandable_segments:True", **SEED_ARGS)
    with pytest.raises(EngineError, match="no image file"):
        eng.generate(image=tmp_path / "missing.jpg")
    (tmp_path / "x.jpg").write_text("not an image")
    with pytest.raises(EngineError, match="not an image"):
        eng.generate(image=tmp_path / "x.jpg")
    with pytest.raises(EngineError, match="aspect ratio"):
        eng.generate(image=Image.new("RGB", (5000, 20)))
    with pytest.raises(EngineError, match="not a folder"):
        eng.run_images(tmp_path / "no_such_dir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EngineError, match="no image files"):
        eng.run_images(tmp_path / "empty")
    with pytest.raises(EngineError, match="exactly one"):  # a templated prompt is used as given
        eng.generate("<|im_start|>user\n<|image_pad|><|image_pad|>Two?<|im_end|>", image=Image.new("RGB", (64, 64)))
    assert eng.generate("Hi").request_index == 0  # refused requests take no index


def test_run_file_written_per_request(photos: list[Path], tmp_path: Path) -> None:
    eng = SimEngine(conf="expandable_segments:True", run_dir=tmp_path, **SEED_ARGS)
    run = eng.run_images(photos[:5], progress=False, max_tokens=8)
    files = list(tmp_path.glob("*.jsonl"))
    assert len(files) == 1
    loaded = load_run(files[0])
    assert loaded == run and loaded.simulated and loaded.backend == "sim"
    assert loaded.engine_args["tensor_parallel_size"] == 2 and loaded.engine_args["kv_cache_blocks"] > 0
    assert len(loaded.samples) == 10 and loaded.to_frame()["rank"].tolist() == [0, 1] * 5


def test_sigkill_mid_run_keeps_every_earlier_sample(photos: list[Path], tmp_path: Path) -> None:
    """A real engine process killed with SIGKILL in the middle of run_images: the run file reloads with
    every request written before the kill, both ranks each."""
    path = tmp_path / "killed.jsonl"
    script = textwrap.dedent(f"""
        from toolkit.engines.sim import SimEngine
        photos = {[str(p) for p in photos]!r} * 500
        eng = SimEngine(conf="", tensor_parallel_size=2, max_model_len=65536, max_num_seqs=8,
                        max_num_batched_tokens=32768, gpu_memory_utilization=0.95)
        eng.run_images(photos, progress=False, max_tokens=64, run_path={str(path)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if path.exists() and path.read_text().count("\n") >= 1 + 2 * 30:
                break
            if proc.poll() is not None:
                pytest.fail(f"engine process ended early: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    run = load_run(path)
    assert run.status == "interrupted" and run.simulated
    indices = [s.request_index for s in run.samples_of_rank(0)]
    assert len(indices) >= 30 and indices == list(range(len(indices)))
    assert [s.request_index for s in run.samples_of_rank(1)] == indices
    assert len(run.samples) < 2 * len(photos) * 500  # it really was cut short


def test_core_modules_do_not_import_heavy_stacks() -> None:
    code = ("import sys, toolkit.core.records, toolkit.workload.program, toolkit.workload.budget, "
            "toolkit.engines.sim, toolkit.engines.scenarios, toolkit.workload.photos; "
            "bad = [m for m in ('torch', 'vllm', 'IPython', 'plotly', 'PIL') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_plain_question_is_wrapped_in_the_chat_template_like_the_seed_script(tmp_path):
    from toolkit.workload.photos import generate_photo_set
    from toolkit.workload.prompt import IMAGE_PAD, chat_prompt, prompt_for_image, prompt_tokens

    assert prompt_for_image(None) == chat_prompt()
    assert prompt_for_image("What is in this image?") == chat_prompt("What is in this image?")
    custom = f"<|vision_start|>{IMAGE_PAD}<|vision_end|>Describe."
    assert prompt_for_image(custom) == custom
    photo = generate_photo_set(tmp_path, 1, seed=3)[0]
    engine = SimEngine("Qwen/Qwen3-VL-8B-Instruct", conf="", platform="npu", tensor_parallel_size=2)
    result = engine.generate("What is in this image?", photo, max_tokens=4)
    assert result.status == "ok"
    assert result.prompt_tokens == prompt_tokens(chat_prompt("What is in this image?"), result.visual_tokens)


def test_sim_engine_follows_the_engine_protocol() -> None:
    from toolkit.engines.base import Engine
    from toolkit.notebook.widgets import watch

    eng = SimEngine(tensor_parallel_size=2, max_model_len=8192, max_num_batched_tokens=8192)
    assert isinstance(eng, Engine) and eng.tensor_parallel_size == 2 and eng.simulated
    assert dict(eng.conf_rows())["conf (allocator gets)"] == repr(eng.effective_conf)
    from PIL import Image

    watched = watch(eng, [Image.new("RGB", (64, 48))], show=False, mode="static", record_snapshots=False)
    assert watched.run.ranks == (0, 1)  # watch() reads the tensor-parallel size through the protocol
    assert watched.live is not None and len(watched.live.run.ranks) == 2

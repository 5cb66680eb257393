"""The real vLLM engine (CPU backend) driven from a plain script through ``LLMSession``."""

from __future__ import annotations


import pytest

from engine_helpers import IMAGE_SIZES, run_scenario

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cpu-engine")]


@pytest.fixture(scope="module")
def facts(vllm_python, tiny_model, image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("script") / "facts.json"
    return run_scenario(vllm_python, "session_api", tiny_model, image_folder, out)


def test_one_sample_per_request_with_real_token_counts(facts):
    samples = facts["samples"]
    assert facts["run_status"] == "ok"
    assert [s["request_index"] for s in samples] == list(range(len(IMAGE_SIZES)))
    assert {s["rank"] for s in samples} == {0}
    assert all(s["status"] == "ok" for s in samples)
    # the folder is sent in name order; visual tokens follow the processor's resize of each size
    visual = [s["visual_tokens"] for s in samples]
    for s, (w, h) in zip(samples, IMAGE_SIZES, strict=True):
        assert (s["image_width_px"], s["image_height_px"]) == (w, h)
        # Qwen2-VL: one visual token per 28x28 merged patch of the resized image
        assert s["visual_tokens"] == (s["resized_width_px"] // 28) * (s["resized_height_px"] // 28)
        assert s["prompt_tokens"] > s["visual_tokens"] and s["output_tokens"] == 4
    assert visual[0] < visual[1] < visual[2] and len(set(visual)) == len(visual)


def test_host_memory_is_measured_inside_the_worker(facts):
    worker_pid = facts["workers"][0]["pid"]
    assert worker_pid in facts["engine_pids"] and facts["workers"][0]["backend"] == "host"
    for s in facts["samples"]:
        # the worker's RSS holds the model, torch and vLLM: hundreds of MB, far below the machine's total
        assert 100 << 20 < s["device_used_bytes"] < s["device_total_bytes"]
        assert s["allocated_bytes"] > 0 and s["reserved_bytes"] >= s["allocated_bytes"]
        assert s["non_torch_bytes"] == s["device_used_bytes"] - s["reserved_bytes"]  # baseline 0 on the host
        assert s["duration_ns"] > 0


def test_samples_are_on_disk_as_they_arrived(facts):
    assert len(facts["run_files"]) == 1
    assert facts["run_on_disk"] == facts["samples"]


def test_the_worker_sees_the_conf_after_the_vllm_ascend_policy(facts):
    (worker,) = facts["conf_workers"]
    assert worker["pid"] == facts["workers"][0]["pid"]
    assert facts["conf_given"]["PYTORCH_NPU_ALLOC_CONF"] == "page_size:1g,expandable_segments:True"
    assert worker["environ"]["PYTORCH_NPU_ALLOC_CONF"] == "page_size:1g,expandable_segments:True"
    assert facts["conf_differences"] == [
        "rank 0: PYTORCH_NPU_ALLOC_CONF is 'page_size:1g,expandable_segments:True', you asked for 'page_size:1g'"]
    assert "DIFFERS" in facts["status_text"]


def test_vllm_environment_rewrite_does_not_leak_into_the_caller(facts):
    assert "LD_PRELOAD" in facts["env_changed_by_vllm"]  # vLLM's CPU platform sets it in the caller
    assert facts["kernel_env_leaks"] == []  # ... and the engine restored it right after the start


def test_generate_returns_text_and_a_sample(facts):
    assert facts["generate"] == {"status": "ok", "text_is_str": True, "samples": 1,
                                 "prompt_tokens": facts["samples"][0]["prompt_tokens"]}


def test_snapshot_and_recording_say_why_not_on_the_host(facts):
    (snap,) = facts["snapshot"]
    assert snap["path"] is None and "host memory" in snap["reason"]
    (rec,) = facts["record"]
    assert rec["recording"] is False


def test_stop_ends_every_engine_process(facts):
    stop = facts["stop_a"]
    assert stop["clean"] and stop["released"] and stop["killed"] == []
    assert sorted(stop["engine_pids"]) == sorted(facts["engine_pids"]) and len(facts["engine_pids"]) >= 2
    assert facts["pids_alive_after_stop"] == []
    assert facts["generate_after_stop"].startswith("EngineError: engine 'script-a' is stopped")


def test_restart_with_another_conf_in_process(facts):
    assert facts["b_in_process"] and facts["b_worker_pid_is_self"]
    assert facts["b_conf_seen"] == "expandable_segments:False"
    assert facts["b_generate"] == "ok"
    assert facts["b_ld_preload_during"]  # in-process: vLLM's variables stay while its worker lives here
    assert facts["b_ld_preload_after"] is None  # ... and are restored at stop
    assert facts["stop_b"] == {"clean": True, "released": True}
    assert facts["b_conf_changed"] is None
    assert "needs a new engine" in facts["b_conf_changed_after_set"]
    assert facts["b_conf_after_stop"] == "max_split_size_mb:128"  # stop restored vLLM's variables, not this


def test_an_engine_left_running_is_cleaned_up_at_exit(facts):
    import psutil

    pids = facts["c_engine_pids"]
    assert len(pids) >= 2
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == []  # the scenario's interpreter has exited: its engine processes went with it

"""Scenarios run under the CPU-engine interpreter (``.venv-vllm``) by ``test_engine_script.py``.

``python engine_scenarios.py SCENARIO --model DIR --images DIR --out FILE.json``: runs the scenario with the
real vLLM engine and writes the facts it observed as JSON; the test (in the main environment) asserts on
them. CPU vLLM spawns its processes, hence the main guard.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from toolkit.engines.vllm._processes import alive as _alive  # the same liveness test the engine's stop() uses

ENGINE_ARGS: dict[str, Any] = dict(dtype="float32", max_model_len=1024, max_num_seqs=2, enforce_eager=True,
                                   kv_cache_memory_bytes=64 << 20, max_tokens=4)


def session_api(model: str, images: str, out: Path) -> dict[str, Any]:
    """The Session API as a script uses it: multiprocess engine, images, conf read back, stop, in-process
    restart with another conf, stop."""
    from toolkit.notebook._llm_session import LLMSession
    from toolkit.core.records import load_run

    facts: dict[str, Any] = {}
    env_before = dict(os.environ)
    s = LLMSession(run_dir=out.parent / "runs")
    s.conf.set_conf("page_size:1g")
    t0 = time.perf_counter()
    status = s.start(model, backend="cpu", name="script-a", **ENGINE_ARGS)
    facts["start_s"] = time.perf_counter() - t0
    eng = s.engine
    facts["engine_pids"] = list(eng.engine_pids)
    facts["pids_alive_after_start"] = _alive(list(eng.engine_pids))
    facts["workers"] = list(eng.workers)
    facts["conf_workers"] = [dict(w) for w in eng.readback.workers]
    facts["conf_given"] = eng.readback.given
    facts["conf_differences"] = list(eng.readback.differences)
    facts["status_text"] = str(status)
    facts["env_changed_by_vllm"] = sorted(eng.env_changed_by_vllm)
    env_now = dict(os.environ)
    facts["kernel_env_leaks"] = sorted(k for k in set(env_before) | set(env_now)
                                       if env_before.get(k) != env_now.get(k) and k != "PYTORCH_NPU_ALLOC_CONF")
    run = s.run_images(images, progress=False, name="script-a-run")
    facts["run_status"] = run.status
    facts["samples"] = [x.to_dict() for x in run.samples]
    files = sorted((out.parent / "runs").glob("script-a-run-*.jsonl"))
    facts["run_files"] = [str(f) for f in files]
    facts["run_on_disk"] = [x.to_dict() for x in load_run(files[-1]).samples] if files else []
    one = s.generate(None, sorted(Path(images).iterdir())[0])
    facts["generate"] = {"status": one.status, "text_is_str": isinstance(one.text, str),
                         "samples": len(one.samples), "prompt_tokens": one.prompt_tokens}
    facts["snapshot"] = eng.dump_snapshot(out.parent / "snap")
    facts["record"] = eng.start_recording(max_entries=1000)
    stop = s.stop()
    facts["stop_a"] = {"clean": stop.clean, "engine_pids": list(stop.engine_pids), "killed": list(stop.killed),
                       "released": stop.released, "seconds": stop.seconds}
    facts["pids_alive_after_stop"] = _alive(list(eng.engine_pids))
    try:
        eng.generate("x")
        facts["generate_after_stop"] = "no error"
    except Exception as exc:
        facts["generate_after_stop"] = f"{type(exc).__name__}: {exc}"
    # a new conf means a new engine; this one in-process (the worker runs here)
    s.conf.set_conf("expandable_segments:False")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    t0 = time.perf_counter()
    s.start(model, backend="cpu", name="script-b", **ENGINE_ARGS)
    facts["start_b_s"] = time.perf_counter() - t0
    b = s.engine
    facts["b_in_process"] = b.in_process
    facts["b_worker_pid_is_self"] = b.workers[0]["pid"] == os.getpid()
    facts["b_conf_seen"] = b.effective_conf
    facts["b_generate"] = s.generate(None, sorted(Path(images).iterdir())[-1]).status
    facts["b_ld_preload_during"] = os.environ.get("LD_PRELOAD")
    facts["b_conf_changed"] = s.conf_changed()  # the policy's value in this environment is no change
    s.conf.set_conf("max_split_size_mb:128")  # the user sets a new conf while the in-process engine runs
    facts["b_conf_changed_after_set"] = s.conf_changed()
    stop_b = s.stop()
    facts["b_conf_after_stop"] = os.environ.get("PYTORCH_NPU_ALLOC_CONF")
    facts["stop_b"] = {"clean": stop_b.clean, "released": stop_b.released}
    facts["b_ld_preload_after"] = os.environ.get("LD_PRELOAD")
    # an engine left running when the script ends: its processes must not outlive the interpreter
    os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING")
    s.start(model, backend="cpu", name="script-c", **ENGINE_ARGS)
    facts["c_engine_pids"] = list(s.engine.engine_pids)
    return facts


def tokenizer_determinism(model: str, images: str, out: Path) -> dict[str, Any]:
    from toolkit._testing.tiny_model import BPE_VOCAB, build_tokenizer

    a, b = build_tokenizer(0), build_tokenizer(0)
    import torchvision

    return {"same": a.to_str() == b.to_str(), "vocab": a.get_vocab_size(), "want_vocab": BPE_VOCAB,
            "torchvision_ops_loaded": bool(torchvision.extension._has_ops())}


SCENARIOS = {"session_api": session_api, "tokenizer_determinism": tokenizer_determinism}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--model", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args()
    facts = SCENARIOS[args.scenario](args.model, args.images, args.out)
    args.out.write_text(json.dumps(facts, default=str))  # then exit, engines left running included


if __name__ == "__main__":
    main()

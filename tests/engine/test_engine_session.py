"""``LLMSession`` and ``%ascend_llm`` on the simulator, and the kernel-side pieces of the real engine."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from toolkit.notebook._engine_magics import EngineMagics, ascend_llm_parser
from toolkit.engines.vllm import _environment, _processes, _requests
from toolkit.engines.vllm import engine as ve
from toolkit.notebook._llm_session import EngineSessionError, LLMSession, detect_backend
from toolkit.notebook.conf_session import Session

MODEL = "Qwen/Qwen3-VL-8B-Instruct"


def _spec(*present):
    # a found module has a file behind it (a bare folder on sys.path would be a namespace package)
    return lambda name: SimpleNamespace(origin=f"/site-packages/{name}/__init__.py") if name in present else None


@pytest.mark.parametrize(("mods", "files", "expected"), [
    (("torch_npu", "vllm", "vllm_ascend", "torch"), {"/dev/davinci[0-9]*"}, "npu"),
    (("torch_npu", "vllm", "torch"), {"/dev/davinci[0-9]*"}, "sim"),  # no vllm-ascend: no NPU engine
    (("torch", "vllm"), {"/dev/nvidiactl"}, "cuda"),
    (("torch", "vllm"), set(), "sim"),  # packages but no device
    (("torch",), {"/dev/nvidia[0-9]*"}, "sim"),  # a device but no vLLM
    ((), set(), "sim"),
])
def test_auto_backend_from_packages_and_device_files(mods, files, expected):
    assert detect_backend(_spec(*mods), lambda pattern: [pattern] if pattern in files else []) == expected


@pytest.fixture
def session():
    return LLMSession(Session(environ={}), run_dir=None)


def test_sim_engine_through_the_session(session):
    session.conf.set_conf("page_size:1g")
    status = session.start(MODEL, backend="sim", max_model_len=8192, enforce_eager=True)
    assert status.simulated and status.backend == "sim"
    assert ("conf (allocator gets)", "'page_size:1g,expandable_segments:True'") in status.conf_rows
    assert any("does not model enforce_eager" in n for n in status.notes)
    assert "[simulated]" in str(status) and "[simulated]" in status._repr_html_()
    from PIL import Image

    run = session.run_images([Image.new("RGB", (640, 480)), Image.new("RGB", (1280, 960))], progress=False,
                             max_tokens=8)
    assert run.simulated and run.status == "ok" and len(run.samples) == 2
    assert session.generate(None, Image.new("RGB", (320, 240)), max_tokens=4).status == "ok"
    assert session.conf_changed() is None
    session.conf.set_conf("expandable_segments:False")
    assert "needs a new engine" in session.conf_changed()
    again = session.start(MODEL, backend="sim", max_model_len=8192)
    assert any("a new conf means a new engine" in n for n in again.notes)
    report = session.stop()
    assert report.clean and "simulated" in report.notes[0]
    with pytest.raises(EngineSessionError, match="no engine is running"):
        session.stop()
    with pytest.raises(EngineSessionError, match="no engine is running"):
        session.generate("hi")


def test_unknown_backend_and_missing_vllm_are_one_line_errors(session):
    with pytest.raises(EngineSessionError, match="unknown backend 'tpu'"):
        session.start(MODEL, backend="tpu")
    with pytest.raises(ve.EngineError, match=r"vLLM cannot be imported .* use --backend sim"):
        session.start("/models/x", backend="cpu")  # the main environment has no vLLM
    assert session.conf.environ == {}  # a failed start leaves the environment as it was


@pytest.fixture
def shell():
    InteractiveShell.clear_instance()
    ip = InteractiveShell.instance()
    magics = EngineMagics(ip, LLMSession(Session(environ={}), run_dir=None))
    ip.register_magics(magics)
    yield ip, magics
    InteractiveShell.clear_instance()


def test_magic_binds_the_handle_and_returns_only_a_view(shell):
    ip, magics = shell
    status = ip.run_line_magic("ascend_llm", f"{MODEL} --backend sim --as eng --max-model-len 8192 -tp 2")
    eng = ip.user_ns["eng"]
    assert eng is magics.llm_session.engine and eng.args.tp == 2
    assert type(status).__name__ == "EngineStatus"  # no reference to the engine in Out[] / _
    assert "[simulated]" in str(ip.run_line_magic("ascend_llm", "--status"))
    ip.user_ns["Out"][7] = eng  # as if the user had displayed the handle
    ip.user_ns["_"] = eng
    report = ip.run_line_magic("ascend_llm", "--stop")
    assert report.clean
    assert "eng" not in ip.user_ns and 7 not in ip.user_ns["Out"] and ip.user_ns["_"] is None


@pytest.mark.parametrize(("line", "message"), [
    ("", "give a MODEL"),
    ("--stop --status", "go alone"),
    ("m --status", "take no model"),
    ("m --backend tpu", "invalid choice"),
    ("m --as 1x", "needs a Python name"),
    ("m --limit-mm-per-prompt image", "MODALITY=N"),
    ("--stop", "no engine is running"),
])
def test_magic_usage_errors(shell, line, message):
    ip, _ = shell
    with pytest.raises(UsageError, match=message):
        ip.run_line_magic("ascend_llm", line)


def test_parser_help_lists_the_engine_arguments():
    text = ascend_llm_parser().format_help()
    for flag in ("--max-model-len", "--max-num-seqs", "--max-num-batched-tokens", "--tensor-parallel-size",
                 "--gpu-memory-utilization", "--dtype", "--enforce-eager", "--enable-sleep-mode",
                 "--limit-mm-per-prompt", "--mm-processor-cache-gb", "--stop", "--status", "--name"):
        assert flag in text
    args = ascend_llm_parser().parse_args(["m", "--limit-mm-per-prompt", "image=2,video=0"])
    assert args.limit_mm_per_prompt == {"image": 2, "video": 0}


def test_policy_is_applied_like_vllm_ascend_before_the_start():
    env = {"PYTORCH_NPU_ALLOC_CONF": "page_size:1g"}
    notes = _environment.apply_policy(env, "npu", "upstream", None, sleep_mode=False, rl_enabled=False)
    assert env["PYTORCH_NPU_ALLOC_CONF"] == "page_size:1g,expandable_segments:True"
    assert _environment.apply_policy(env, "npu", "upstream", None, False, False)  # idempotent: applied twice ...
    assert env["PYTORCH_NPU_ALLOC_CONF"] == "page_size:1g,expandable_segments:True"  # ... same result
    assert "Set PYTORCH_NPU_ALLOC_CONF=page_size:1g,expandable_segments:True" in notes[0]
    sleepy = {"PYTORCH_NPU_ALLOC_CONF": "expandable_segments:True"}
    _environment.apply_policy(sleepy, "npu", "recommended", None, sleep_mode=True, rl_enabled=False)
    assert sleepy["PYTORCH_NPU_ALLOC_CONF"] == "expandable_segments:False"
    old = {}
    _environment.apply_policy(old, "npu", "upstream", "0.13.0", False, False)
    assert old == {}  # before v0.14.0rc1 there is no default
    cuda = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    assert _environment.apply_policy(cuda, "cuda", "upstream", None, False, False) == ()


def test_restore_puts_back_exactly_what_changed():
    env = {"A": "1", "LD_PRELOAD": "x"}
    saved = dict(env)
    env.update(LD_PRELOAD="x:libgomp.so", NEW="2")
    del env["A"]
    changed = _environment.restore(env, saved)
    assert env == saved
    assert changed == {"A": ("1", None), "LD_PRELOAD": ("x", "x:libgomp.so"), "NEW": (None, "2")}


def _worker(rank, conf, segments):
    return {"rank": rank, "pid": 100 + rank, "environ": {"PYTORCH_NPU_ALLOC_CONF": conf}, "segments": segments,
            "allocator_settings": None}


def test_conf_readback_names_every_difference():
    rb = ve.ConfReadback(
        platform="npu", backend="npu", requested={"PYTORCH_NPU_ALLOC_CONF": "page_size:1g"},
        given={"PYTORCH_NPU_ALLOC_CONF": "page_size:1g,expandable_segments:True"},
        workers=(_worker(0, "page_size:1g,expandable_segments:True",
                         {"known": True, "expandable": True, "segments": 4, "expandable_segments": 4}),
                 _worker(1, "page_size:1g,expandable_segments:True",
                         {"known": True, "expandable": False, "segments": 4, "expandable_segments": 0})))
    assert rb.requested_conf == "page_size:1g" and rb.effective_conf == "page_size:1g,expandable_segments:True"
    diffs = rb.differences
    assert diffs[0] == "rank 0: PYTORCH_NPU_ALLOC_CONF is 'page_size:1g,expandable_segments:True', you asked " \
                       "for 'page_size:1g'"
    assert any(d.startswith("rank 1: segments are not expandable") for d in diffs)  # the silent fallback
    assert not any(d.startswith("rank 0: segments") for d in diffs)
    same = ve.ConfReadback("npu", "cpu", {"PYTORCH_NPU_ALLOC_CONF": "x:1"}, {"PYTORCH_NPU_ALLOC_CONF": "x:1"},
                           (_worker(0, "x:1", {"known": False, "reason": "host"}),))
    assert same.differences == () and ("differences", "none") in same.rows()


def test_processor_spec_of_a_local_model(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(
        '{"patch_size": 14, "merge_size": 2, "temporal_patch_size": 2, "min_pixels": 3136, "max_pixels": 200704}')
    spec = _requests.processor_spec(str(tmp_path))
    assert (spec.factor, spec.min_pixels, spec.max_pixels) == (28, 3136, 200704)
    assert _requests.processor_spec(str(tmp_path / "missing")) is None


def _bare_engine(tmp_path, pids=()):
    eng = ve.VllmEngine.__new__(ve.VllmEngine)
    eng.engine_pids, eng.failure_log, eng._failures_seen = tuple(pids), tmp_path / "failures.jsonl", 0
    return eng


def test_a_worker_out_of_memory_is_told_apart_from_other_deaths(tmp_path):
    import json as _json

    eng = _bare_engine(tmp_path)
    dead = type("EngineDeadError", (Exception,), {})("EngineCore encountered an issue.")
    assert eng._classify(dead) == ("error", "EngineDeadError: EngineCore encountered an issue.", True)
    eng.failure_log.write_text(_json.dumps({"rank": 1, "where": "execute_model", "type": "RuntimeError", "oom": True,
                                            "message": "NPU out of memory. Tried to allocate 2.00 GiB"}) + "\n")
    status, message, is_dead = eng._classify(dead)
    assert (status, is_dead) == ("oom", True)
    assert message == "out of memory in rank 1 (execute_model): NPU out of memory. Tried to allocate 2.00 GiB"
    assert eng._classify(ValueError("prompt too long"))[::2] == ("error", False)  # each failure line counts once
    assert eng._classify(RuntimeError("CUDA out of memory"))[0] == "oom"


def test_a_script_without_main_guard_is_named(monkeypatch, tmp_path):
    import sys as _sys
    import types

    script = tmp_path / "run.py"
    script.write_text("from toolkit.engines.vllm.engine import VllmEngine\nVllmEngine('m')\n")
    main = types.ModuleType("__main__")
    main.__file__ = str(script)
    monkeypatch.setitem(_sys.modules, "__main__", main)
    assert _processes.script_without_main_guard()
    script.write_text("if __name__ == '__main__':\n    pass\n")
    assert not _processes.script_without_main_guard()
    assert not _processes.in_spawned_reimport()  # this is not a spawned child

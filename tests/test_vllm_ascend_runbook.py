"""The Ascend runbook folder: scripts that parse and start without torch_npu/vllm, the reproduction's logic
driven end to end on the simulated backend, the snapshot helper, and docs that match the code."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "vllm_ascend"
REPRO = FOLDER / "repro_multimodal_oom.py"
CAPTURE = FOLDER / "capture_snapshot.py"
TRACE = REPO.parent / "shared" / "data" / "traces" / "cuda-transformer-forward-a.pickle"
BLOCKED = ("torch", "torch_npu", "vllm", "vllm_ascend")


def _load(path: Path) -> ModuleType:
    """Import a script by path under a private name (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"_runbook_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def repro() -> ModuleType:
    return _load(REPRO)


@pytest.fixture(scope="module")
def capture() -> ModuleType:
    return _load(CAPTURE)


def _run(script: Path, *args: str, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five small photos of different sizes (one with an upper-case suffix), plus files that are not photos."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    sizes = [(640, 480), (1024, 768), (300, 800), (1600, 1200), (128, 128)]
    for i, (w, h) in enumerate(sizes):
        suffix = ".JPG" if i == 1 else ".png" if i == 2 else ".jpg"
        Image.new("RGB", (w, h), (40 * i, 120, 200)).save(folder / f"p{i}{suffix}",
                                                          "PNG" if suffix == ".png" else "JPEG")
    (folder / "notes.txt").write_text("not a photo")
    (folder / "sub.jpg").mkdir()  # a folder named like a photo
    return folder


# -- the folder stays a folder of scripts ----------------------------------------------------------------------


def test_no_file_makes_the_folder_a_package():
    assert not list(FOLDER.rglob("__init__.py")), "vllm_ascend/ must never become a package"
    assert not [p for p in FOLDER.rglob("*") if p.suffix in (".so", ".pyd")]
    assert {p.name for p in FOLDER.glob("*.py")} == {"repro_multimodal_oom.py", "capture_snapshot.py", "probe_driver_cache.py"}


@pytest.mark.parametrize("script", [REPRO, CAPTURE], ids=lambda p: p.name)
def test_scripts_parse_and_guard_their_main(script: Path):
    tree = ast.parse(script.read_text(), filename=str(script))
    guards = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
    assert guards, "vLLM spawns its processes: the script needs an if __name__ == '__main__' guard"
    top_imports = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    top_imports |= {(n.module or "").split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom)}
    assert not top_imports & set(BLOCKED), "heavy imports belong inside the worker functions"


_BLOCKER = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError('blocked for the test: ' + name)
        return None
sys.meta_path.insert(0, _Block())
import importlib.util as u
spec = u.spec_from_file_location('_script', {script!r})
m = u.module_from_spec(spec); sys.modules['_script'] = m; spec.loader.exec_module(m)
try:
    m.main(['--help'] if {sub!r} is None else [{sub!r}, '--help'])
except SystemExit as e:
    assert e.code == 0, e.code
assert not any(k.split('.')[0] in {blocked!r} for k in sys.modules), sorted(sys.modules)
print('HELP-OK')
"""


@pytest.mark.parametrize("script,sub", [(REPRO, None), (CAPTURE, None), (CAPTURE, "env"), (CAPTURE, "list")],
                         ids=["repro", "capture", "capture-env", "capture-list"])
def test_help_works_without_torch_npu_or_vllm(script: Path, sub: str | None):
    code = _BLOCKER.format(blocked=BLOCKED, script=str(script), sub=sub)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "HELP-OK" in out.stdout
    if script == REPRO:
        for option in ("--backend", "--confs", "--images", "--out", "--model", "--max-images", "{npu,cuda,sim}"):
            assert option in out.stdout


def test_help_as_a_command(repro: ModuleType):
    out = _run(REPRO, "--help")
    assert out.returncode == 0
    assert "one" in out.stdout and "--worker" not in out.stdout  # the worker mode is internal


def test_npu_backend_without_its_stack_is_one_clear_line(tmp_path: Path, photos: Path):
    if importlib.util.find_spec("torch_npu") is not None:
        pytest.skip("torch_npu is installed here")
    out = _run(REPRO, "--backend", "npu", "--images", str(photos), "--out", str(tmp_path / "o"))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert "torch_npu" in lines[0] and "README" in lines[0] and "--backend sim" in lines[0]
    assert not (tmp_path / "o").exists(), "nothing may be written before the requirements are met"


def test_missing_modules_ignores_a_namespace_folder(repro: ModuleType, monkeypatch: pytest.MonkeyPatch):
    from importlib.machinery import ModuleSpec

    fake = {"torch": ModuleSpec("torch", None, origin="/x/torch/__init__.py"),
            "vllm": ModuleSpec("vllm", None, origin="/x/vllm/__init__.py"),
            "vllm_ascend": ModuleSpec("vllm_ascend", None, origin=None, is_package=True)}  # namespace
    monkeypatch.setattr(repro.util, "find_spec", lambda name: fake.get(name))
    assert repro.missing_modules("npu") == ["torch_npu", "vllm_ascend"]
    assert repro.missing_modules("cuda") == []
    assert repro.missing_modules("sim") == []


# -- inputs --------------------------------------------------------------------------------------------------


def test_find_photos_lists_each_photo_once_sorted(repro: ModuleType, photos: Path):
    found = repro.find_photos(photos)
    assert [p.name for p in found] == ["p0.jpg", "p1.JPG", "p2.png", "p3.jpg", "p4.jpg"]
    assert [p.name for p in repro.find_photos(photos, max_images=2)] == ["p0.jpg", "p1.JPG"]


def test_find_photos_errors(repro: ModuleType, tmp_path: Path):
    with pytest.raises(repro.ReproError, match="not a folder"):
        repro.find_photos(tmp_path / "missing")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(repro.ReproError, match="no image files"):
        repro.find_photos(tmp_path)


def test_parse_confs(repro: ModuleType):
    specs = repro.parse_confs(["default", "expandable_segments:True", "page_size:1g,expandable_segments:True"],
                              "npu")
    assert [s.conf for s in specs] == [None, "expandable_segments:True", "page_size:1g,expandable_segments:True"]
    assert [s.slug for s in specs] == ["default", "expandable_segments_True",
                                       "page_size_1g_expandable_segments_True"]
    assert repro.parse_confs([""], "npu")[0].conf is None
    with pytest.raises(repro.ReproError, match="max_split_size_mb"):
        repro.parse_confs(["expandable_segments:True,max_split_size_mb:256"], "npu")
    with pytest.raises(repro.ReproError, match="listed twice"):
        repro.parse_confs(["default", ""], "npu")
    with pytest.raises(repro.ReproError, match="page_size"):
        repro.parse_confs(["page_size:1g"], "cuda")  # an NPU-only key is refused for the CUDA allocator


def test_worker_environ_leaves_exactly_one_allocator_variable(repro: ModuleType):
    base = {"PATH": "/bin", "PYTORCH_ALLOC_CONF": "x", "PYTORCH_NPU_ALLOC_CONF": "y",
            "PYTORCH_CUDA_ALLOC_CONF": "z", "ASCEND_RT_VISIBLE_DEVICES": "0,1"}
    env = repro.worker_environ(base, "npu", "expandable_segments:False")
    assert env["PYTORCH_NPU_ALLOC_CONF"] == "expandable_segments:False"
    assert not {"PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF"} & set(env)
    assert env["PATH"] == "/bin" and env["ASCEND_RT_VISIBLE_DEVICES"] == "0,1"
    assert not set(repro.ALLOC_VARS) & set(repro.worker_environ(base, "npu", None))
    assert repro.worker_environ(base, "cuda", "expandable_segments:True")["PYTORCH_CUDA_ALLOC_CONF"] \
        == "expandable_segments:True"
    assert base["PYTORCH_ALLOC_CONF"] == "x", "the parent's environment is not modified"


# -- the comparison ------------------------------------------------------------------------------------------


def _run_obj(status: Any, samples: list[tuple[int, Any]]) -> Any:
    """A real-engine-style run on two ranks; ``samples`` are (request index, sample status)."""
    from toolkit.core.records import MemorySample, Run

    rows = tuple(MemorySample(request_index=i, request_id=str(i), rank=r, started_at_ns=0, duration_ns=0,
                              status=st, reserved_bytes=100 * (i + 1))
                 for i, st in samples for r in (0, 1))
    return Run(name="c", backend="npu", platform="npu", model="m", conf=None, effective_conf="",
               device_capacity_bytes=1, simulated=False, status=status, samples=rows)


def test_oom_request(repro: ModuleType):
    assert repro.oom_request(_run_obj("ok", [(0, "ok"), (1, "ok")])) is None
    assert repro.oom_request(_run_obj("oom", [(0, "ok"), (1, "oom")])) == 1  # the sample says so
    assert repro.oom_request(_run_obj("oom", [(0, "ok"), (1, "ok")])) == 2  # real engine: died after request 1
    assert repro.oom_request(_run_obj("oom", [])) == 0
    assert repro.oom_request(_run_obj("error", [(0, "ok")])) is None


def test_compare_rows_and_table(repro: ModuleType):
    rows = repro.compare_rows([_run_obj("oom", [(0, "ok"), (1, "ok")])], requests_sent=5)
    assert rows[0]["requests_served"] == 2 and rows[0]["oom_at_request"] == 2
    assert rows[0]["peak_reserved_bytes"] == 200
    text = repro.format_table(rows, "title")
    assert text.startswith("title") and "2/5" in text and "oom" in text
    assert "[simulated]" not in text


# -- end to end on the simulated backend ---------------------------------------------------------------------


def _log_header(path: Path) -> str:
    return next(line for line in path.read_text().splitlines() if line.startswith("worker pid="))


@pytest.fixture(scope="module")
def sim_out(tmp_path_factory: pytest.TempPathFactory, photos: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("repro") / "out"
    proc = _run(REPRO, "--backend", "sim", "--images", str(photos), "--out", str(out), "--max-images", "4",
                "--confs", "default", "expandable_segments:True", "max_split_size_mb:256")
    return out, proc


def test_sim_end_to_end_one_run_file_per_conf(sim_out):
    from toolkit.core.records import load_run

    out, proc = sim_out
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = sorted(p.name for p in (out / "runs").glob("*.jsonl"))
    assert names == ["00-default.jsonl", "01-expandable_segments_True.jsonl", "02-max_split_size_mb_256.jsonl"]
    runs = [load_run(out / "runs" / n) for n in names]
    assert [r.conf for r in runs] == [None, "expandable_segments:True", "max_split_size_mb:256"]
    assert [r.effective_conf for r in runs] == ["", "expandable_segments:True", "max_split_size_mb:256"]
    for r in runs:
        assert r.simulated and r.backend == "sim" and r.status == "ok"
        assert r.ranks == (0, 1)  # tensor parallel 2 by default (the PR's script)
        assert r.requests_served == 4 and len(r.samples) == 8
        assert [s.input_name for s in r.samples_of_rank(0)] == ["p0.jpg", "p1.JPG", "p2.png", "p3.jpg"]
        assert r.engine_args["max_model_len"] == 65536 and r.engine_args["max_num_batched_tokens"] == 32768
        assert all(s.visual_tokens > 0 and s.output_tokens == 1024 for s in r.samples)
    assert all(s.inactive_split_bytes == 0 for s in runs[1].samples), "expandable segments do not split"


def test_sim_end_to_end_each_conf_ran_in_its_own_process(sim_out):
    out, _ = sim_out
    headers = [_log_header(p) for p in sorted((out / "logs").glob("*.log"))]
    assert len(headers) == 3
    pids = {re.search(r"pid=(\d+)", h).group(1) for h in headers}  # type: ignore[union-attr]
    assert len(pids) == 3, headers
    import os

    assert str(os.getpid()) not in pids
    # each worker inherited exactly its conf, and "default" inherited no variable at all
    assert headers[0].endswith("PYTORCH_NPU_ALLOC_CONF=None")
    assert headers[1].endswith("PYTORCH_NPU_ALLOC_CONF='expandable_segments:True'")
    assert headers[2].endswith("PYTORCH_NPU_ALLOC_CONF='max_split_size_mb:256'")


def test_sim_end_to_end_comparison_report(sim_out):
    import pandas as pd

    from toolkit.core.records import load_run

    out, proc = sim_out
    table = proc.stdout[proc.stdout.rindex("[simulated] Qwen3-VL-8B-Instruct, TP 2, 4 photos"):]
    lines = table.splitlines()
    assert [ln.split()[0] for ln in lines[2:5]] == ["default", "expandable_segments:True", "max_split_size_mb:256"]
    assert all("4/4" in ln for ln in lines[2:5])
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["run"]) == ["default", "expandable_segments:True", "max_split_size_mb:256"]
    loaded = [load_run(p) for p in sorted((out / "runs").glob("*.jsonl"))]
    assert list(summary["peak_reserved_bytes"]) == [
        max(max(s.reserved_peak_bytes, s.reserved_bytes) for s in r.samples) for r in loaded]
    if importlib.util.find_spec("plotly") is not None:
        html = (out / "report.html").read_text()
        assert "Simulated" in html and "<script src=" not in html  # labelled, and loads nothing from a CDN


def test_existing_runs_need_overwrite(sim_out, photos: Path):
    out, _ = sim_out
    again = _run(REPRO, "--backend", "sim", "--images", str(photos), "--out", str(out), "--max-images", "1",
                 "--confs", "default")
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_bad_conf_stops_before_any_engine(tmp_path: Path, photos: Path):
    out = _run(REPRO, "--backend", "sim", "--images", str(photos), "--out", str(tmp_path / "o"),
               "--confs", "expandable_segments:True", "max_split_size_mb:abc")
    assert out.returncode == 2 and "max_split_size_mb:abc" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra,needle", [
    (["--oom-snapshot", "state"], "--backend npu only"),
    (["--snapshot-max-entries", "1000"], "--backend npu or cuda"),
    (["--generate-photos", "0"], ">= 1"),
    ([], "give --images"),
])
def test_options_that_do_not_fit_the_backend_are_refused(tmp_path: Path, photos: Path, extra: list[str], needle: str):
    source = [] if extra in ([], ["--generate-photos", "0"]) else ["--images", str(photos)]
    out = _run(REPRO, "--backend", "sim", *source, "--out", str(tmp_path / "o"), *extra)
    assert out.returncode == 2 and needle in out.stderr and "Traceback" not in out.stderr


def test_a_conf_whose_engine_fails_is_recorded_and_the_next_conf_still_runs(tmp_path: Path, photos: Path):
    from toolkit.core.records import load_run

    # a 12 GiB device cannot hold the PR's engine (0.95 of memory must be free, weights + KV cache)
    proc = _run(REPRO, "--backend", "sim", "--images", str(photos), "--out", str(tmp_path / "o"),
                "--max-images", "1", "--sim-device-gib", "12", "--confs", "default")
    assert proc.returncode == 1
    run = load_run(tmp_path / "o" / "runs" / "00-default.jsonl")
    assert run.status == "error" and "engine start failed" in (run.message or "")


def test_a_worker_past_its_time_limit_is_stopped_and_recorded(tmp_path: Path, photos: Path):
    from toolkit.core.records import load_run

    proc = _run(REPRO, "--backend", "sim", "--images", str(photos), "--out", str(tmp_path / "o"),
                "--max-images", "1", "--timeout-per-conf", "0.001", "--confs", "default", "expandable_segments:True")
    assert proc.returncode == 1
    runs = [load_run(p) for p in sorted((tmp_path / "o" / "runs").glob("*.jsonl"))]
    assert len(runs) == 2, "every conf is still tried and listed"
    assert all(r.status == "error" and "timed out" in (r.message or "") for r in runs)


def test_vllm_ascend_version_models_the_plugin_default(tmp_path: Path, photos: Path):
    """sim --vllm-ascend 0.14.0rc1: an unset variable becomes expandable_segments:True (PR #5855)."""
    from toolkit.core.records import load_run

    proc = _run(REPRO, "--backend", "sim", "--images", str(photos), "--out", str(tmp_path / "o"),
                "--max-images", "1", "--vllm-ascend", "0.14.0rc1", "--confs", "default")
    assert proc.returncode == 0, proc.stderr
    run = load_run(tmp_path / "o" / "runs" / "00-default.jsonl")
    assert run.conf is None and run.effective_conf == "expandable_segments:True"


# -- the real-engine worker, against a stand-in for VllmEngine ---------------------------------------------------


class _FakeEngine:
    calls: list[tuple[str, Any]] = []
    fail_start = False
    fail_run = False

    def __init__(self, model: str, **kwargs: Any) -> None:
        if self.fail_start:
            raise RuntimeError("NPU out of memory while profiling")
        self.calls.append(("init", dict(model=model, **kwargs)))
        self.readback = "conf readback"

    def start_recording(self, max_entries: int) -> list[dict]:
        self.calls.append(("start_recording", max_entries))
        return [{"recording": True}]

    def run_images(self, images: list[Path], prompt: str, **kwargs: Any) -> Any:
        self.calls.append(("run_images", dict(images=images, prompt=prompt, **kwargs)))
        if self.fail_run:
            raise RuntimeError("engine died")
        return _run_obj("ok", [(0, "ok")])

    def dump_snapshot(self, directory: str) -> list[dict]:
        self.calls.append(("dump_snapshot", directory))
        return []

    def stop(self) -> str:
        self.calls.append(("stop", None))
        return "stopped"


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch):
    import toolkit.engines.vllm.engine as ve

    _FakeEngine.calls = []
    _FakeEngine.fail_start = _FakeEngine.fail_run = False
    monkeypatch.setattr(ve, "VllmEngine", _FakeEngine)
    return _FakeEngine


def _real_spec(tmp_path: Path, photos: Path, **over: Any) -> dict[str, Any]:
    spec = {"backend": "npu", "platform": "npu", "label": "expandable_segments:True",
            "conf": "expandable_segments:True", "predicted_conf": "expandable_segments:True",
            "model": "/models/Qwen3-VL-8B-Instruct",
            "engine_args": {"tensor_parallel_size": 2, "max_model_len": 65536, "max_num_seqs": 8,
                            "max_num_batched_tokens": 32768, "gpu_memory_utilization": 0.95,
                            "enforce_eager": False},
            "max_tokens": 1024, "question": "What is the content of this image?",
            "photos": [str(p) for p in sorted(photos.glob("p*"))][:2], "run_path": str(tmp_path / "run.jsonl"),
            "snapshot_dir": str(tmp_path / "snaps"), "snapshot_max_entries": 0,
            "sim": {}, "versions": {"vllm": None}}
    spec.update(over)
    return spec


def test_real_worker_drives_the_toolkit_engine(repro: ModuleType, fake_engine, tmp_path: Path, photos: Path):
    spec = _real_spec(tmp_path, photos, snapshot_max_entries=50_000)
    assert repro._work_real(spec) == 0
    kinds = [c[0] for c in fake_engine.calls]
    assert kinds == ["init", "start_recording", "run_images", "dump_snapshot", "stop"]
    init = fake_engine.calls[0][1]
    assert init["backend"] == "npu" and init["policy"] == "upstream" and init["max_tokens"] == 1024
    assert init["tensor_parallel_size"] == 2 and init["gpu_memory_utilization"] == 0.95
    assert init["limit_mm_per_prompt"] == {"image": 1}
    assert fake_engine.calls[1][1] == 50_000
    run_call = fake_engine.calls[2][1]
    assert [p.name for p in run_call["images"]] == [Path(p).name for p in spec["photos"]]
    assert "<|image_pad|>" in run_call["prompt"] and spec["question"] in run_call["prompt"]
    assert run_call["run_path"] == Path(spec["run_path"]) and run_call["name"] == spec["label"]


def test_real_worker_stops_the_engine_when_the_run_fails(repro: ModuleType, fake_engine, tmp_path: Path,
                                                         photos: Path):
    fake_engine.fail_run = True
    with pytest.raises(RuntimeError, match="engine died"):
        repro._work_real(_real_spec(tmp_path, photos))
    assert fake_engine.calls[-1][0] == "stop"


def test_real_worker_records_a_failed_start(repro: ModuleType, fake_engine, tmp_path: Path, photos: Path):
    from toolkit.core.records import load_run

    fake_engine.fail_start = True
    spec = _real_spec(tmp_path, photos)
    assert repro._work_real(spec) == 1
    run = load_run(spec["run_path"])
    assert run.status == "error" and "NPU out of memory while profiling" in (run.message or "")
    assert run.conf == "expandable_segments:True" and not run.simulated


# -- capture_snapshot.py -----------------------------------------------------------------------------------------


def test_capture_env_prints_exports_for_an_existing_absolute_folder(tmp_path: Path):
    out = _run(CAPTURE, "env", "--out", "snaps", "--mode", "history", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["export OOM_SNAPSHOT_ENABLE=1",
                                       f"export OOM_SNAPSHOT_PATH={(tmp_path / 'snaps').resolve()}"]
    assert (tmp_path / "snaps").is_dir()  # torch_npu fails on a missing folder
    assert "OOM_SNAPSHOT_ENABLE=2" in _run(CAPTURE, "env", "--out", "s2", cwd=tmp_path).stdout


def test_capture_describe_name(capture: ModuleType):
    oom = capture.describe_name(Path("oom_snapshot_4242_20260301120000.pickle"))
    assert (oom["source"], oom["pid"], oom["rank"]) == ("torch_npu on OOM", 4242, None)
    dump = capture.describe_name(Path("snapshot-rank1-777.pickle"))
    assert (dump["source"], dump["pid"], dump["rank"]) == ("toolkit dump", 777, 1)
    assert capture.describe_name(Path("x.pickle"))["source"] == "other"


@pytest.mark.skipif(not TRACE.is_file(), reason="shared trace not present")
def test_capture_list_reads_real_snapshots_safely(tmp_path: Path):
    folder = tmp_path / "snaps"
    (folder / "rank1").mkdir(parents=True)
    shutil.copy(TRACE, folder / "oom_snapshot_4242_20260301120000.pickle")
    shutil.copy(TRACE, folder / "rank1" / "snapshot-rank1-777.pickle")
    sentinel = tmp_path / "executed"
    (folder / "evil.pickle").write_bytes(pickle.dumps(_EvilTouch(str(sentinel))))
    out = _run(CAPTURE, "list", str(folder))
    assert out.returncode == 0, out.stderr
    rows = [ln for ln in out.stdout.splitlines() if ln.startswith(("oom_snapshot", "snapshot-rank"))]
    assert len(rows) == 2
    assert rows[0].split()[:4] == ["oom_snapshot_4242_20260301120000.pickle", "torch_npu", "on", "OOM"]
    assert "4242" in rows[0] and "516" in rows[0]  # pid; segments of the real trace
    assert re.search(r"toolkit dump\s+777\s+1\s+516", rows[1])
    assert "unreadable: " in out.stdout and "evil.pickle" in out.stdout
    assert not sentinel.exists(), "loading a snapshot must never execute code"
    assert "python -m toolkit replay" in out.stdout


class _EvilTouch:
    """What a malicious snapshot would do on a plain ``pickle.load``: run code (here: create a file)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_capture_list_errors(tmp_path: Path):
    assert _run(CAPTURE, "list", str(tmp_path / "nope")).returncode == 2
    (tmp_path / "empty").mkdir()
    out = _run(CAPTURE, "list", str(tmp_path / "empty"))
    assert out.returncode == 2 and "no snapshot files" in out.stderr


# -- docs and environment file match the code ------------------------------------------------------------------


def _readme() -> str:
    return (FOLDER / "README.md").read_text()


def test_readme_keeps_the_package_warning_and_the_version_facts():
    text = " ".join(_readme().split())  # line breaks do not matter
    assert "not a Python package and must never become one" in text
    assert "v0.14.0rc1" in text and "#5855" in text and "v0.13.0 does not have it" in text
    assert "OOM_SNAPSHOT_ENABLE" in text and "max_entries" in text and "python -m toolkit replay" in text
    assert "November 2026" in text and "check the live one" in text


def _options_in_commands(text: str, marker: str) -> set[str]:
    """``--options`` used on the command lines (with continuations) that mention ``marker``."""
    found: set[str] = set()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if marker not in line:
            continue
        chunk = line
        j = i
        while chunk.rstrip().endswith("\\") and j + 1 < len(lines):
            j += 1
            chunk += lines[j]
        found |= set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", chunk))
    return found


def _parser_options(parser: Any) -> set[str]:
    opts = set()
    for action in parser._actions:
        opts |= set(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):  # subcommands: their options count too
            for sub in action.choices.values():
                opts |= _parser_options(sub)
    return opts


def test_readme_command_lines_use_options_that_exist(repro: ModuleType, capture: ModuleType):
    from toolkit.cli.main import build_parser as toolkit_parser

    text = _readme()
    for marker, parser in (("repro_multimodal_oom.py", repro.build_parser()),
                           ("capture_snapshot.py", capture.build_parser()),
                           ("python -m toolkit replay", toolkit_parser())):
        used = _options_in_commands(text, marker)
        assert used, marker
        assert used <= _parser_options(parser), (marker, used - _parser_options(parser))
    section = text[text.index("## 5."):text.index("## 6.")]  # the reproduction's prose names options too
    named = set(re.findall(r"`(--[a-z][a-z-]+)", section))
    assert {"--snapshot-max-entries", "--oom-snapshot"} <= named
    assert named <= _parser_options(repro.build_parser()), named - _parser_options(repro.build_parser())


def test_environment_file_pins_one_matrix_row():
    yaml = pytest.importorskip("yaml")
    path = FOLDER / "environment-npu.yml"
    env = yaml.safe_load(path.read_text())
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python="))
    assert python in ("python=3.10", "python=3.11")  # the v0.13.0 row: >= 3.10, < 3.12
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert "torch==2.8.0" in pip and "torch-npu==2.8.0.post2" in pip
    assert not [p for p in pip if p.startswith(("vllm", "torch==", "torch-npu==")) and p not in
                ("torch==2.8.0", "torch-npu==2.8.0.post2")]
    editable = next(p for p in pip if p.startswith("-e "))
    target = editable.split()[1].split("[")[0]
    assert (path.parent / target / "pyproject.toml").is_file()  # conda runs pip in the file's folder
    assert "[notebook]" in editable
    header = path.read_text()
    assert "vllm-ascend v0.13.0 | vLLM v0.13.0" in header and "CANN 8.5.0" in header


def test_spec_reaches_the_worker_as_json(repro: ModuleType, tmp_path: Path, photos: Path):
    """The parent's spec is plain JSON with everything the worker reads (no code on a command line)."""
    args = repro.build_parser().parse_args(["--backend", "sim", "--images", str(photos), "--out", str(tmp_path)])
    plan = repro.plan_runs(repro.parse_confs(["default"], "sim"), tmp_path)[0]
    spec = repro.build_spec(args, plan, repro.find_photos(photos), {})
    assert json.loads(json.dumps(spec)) == spec
    assert spec["engine_args"] == {**repro.SEED_ENGINE_ARGS, "enforce_eager": False}
    assert spec["max_tokens"] == 1024 and spec["model"] == "Qwen/Qwen3-VL-8B-Instruct"

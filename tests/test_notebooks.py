"""The tutorial notebooks run top to bottom in a real Jupyter kernel, as part of the normal test command.

Each notebook in ``notebooks/`` is executed with nbclient, with cwd ``notebooks/``, in a kernel of the
interpreter it is written for: this one (``sys.executable``) for the simulated ones, the CPU-engine
environment ``.venv-vllm`` for ``05_cpu_vllm_engine`` (skipped, loudly, only when that environment does not
exist; CI creates it). Kernels are declared in a temporary kernelspec folder, so no installed kernel is
used. Files the notebooks write go to a temporary ``MEMLAB_NOTEBOOK_OUT``. A failing cell fails the test
with that cell's error; then a few concrete things are checked in the outputs. The committed notebooks
must carry no outputs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
EXPECTED = ("01_quickstart", "02_multimodal_oom", "03_conf_sweep", "04_replay_what_if", "05_cpu_vllm_engine",
            "06_ascend_host_walkthrough")
CELL_TIMEOUT_S = 300
TRACE_NAME = "cuda-transformer-forward-a.pickle"
PLOTLY = "application/vnd.plotly.v1+json"
PRELOAD_KIND = "memlab-plotly-preload"  # toolkit/notebook/_preload.py
WIDGET = "application/vnd.jupyter.widget-view+json"
SEED_LABELS = ("default", "expandable_segments:True", "max_split_size_mb:256",
               "garbage_collection_threshold:0.8 (fraction 1)")


def _load_engine_helpers() -> Any:
    """``tests/engine/engine_helpers.py`` (the CPU-engine interpreter and its lean, offline environment)."""
    spec = importlib.util.spec_from_file_location("_memlab_engine_helpers", ROOT / "tests" / "engine" / "engine_helpers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ENGINE = _load_engine_helpers()


from trace_paths import traces_dir  # noqa: E402


# -- running a notebook ------------------------------------------------------------------------------------


def _clean_env() -> dict[str, str]:
    """This environment without allocator confs or toolkit settings, so every notebook starts the same."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTORCH_", "MEMLAB_"))}


def execute(name: str, python: Path | str, kernels: Path, env: Mapping[str, str]) -> nbformat.NotebookNode:
    """Run ``notebooks/<name>.ipynb`` in a kernel of ``python``; fail with the failing cell's error."""
    kernel = f"memlab-test-{re.sub(r'[^a-z0-9]', '-', Path(python).parent.parent.name.lower())}"
    spec_dir = kernels / kernel
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": kernel, "language": "python"}))
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    km = KernelManager(kernel_name=kernel, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT_S, startup_timeout=120,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute(env=dict(env))  # the kernel's whole environment (a kernelspec "env" only adds to ours)
    except CellExecutionError as err:
        plain = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # the kernel's traceback, without terminal colours
        pytest.fail(f"{name}.ipynb: a cell failed\n{plain}", pytrace=False)
    return nb


@pytest.fixture(scope="session")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One output folder per test session (and xdist worker): the generated photos are shared."""
    return tmp_path_factory.mktemp("notebook-out")


@pytest.fixture(scope="session")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kernels")


@pytest.fixture(scope="session")
def main_env(out_dir: Path) -> dict[str, str]:
    if importlib.util.find_spec("ipykernel") is None:
        pytest.fail("ipykernel is missing from this environment: pip install -e '.[dev]' (the notebook extra)")
    env = _clean_env()
    env.update(MEMLAB_NOTEBOOK_OUT=str(out_dir), PYDEVD_DISABLE_FILE_VALIDATION="1")
    traces = traces_dir()
    if traces is not None:
        env["MEMLAB_TRACES"] = str(traces)
    return env


def run_main(name: str, kernels: Path, env: Mapping[str, str]) -> nbformat.NotebookNode:
    return execute(name, sys.executable, kernels, env)


# -- reading outputs ---------------------------------------------------------------------------------------


def outputs(nb: nbformat.NotebookNode) -> Iterator[tuple[int, dict[str, Any]]]:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            for out in cell.get("outputs", []):
                yield i, out


def text_of(out: Mapping[str, Any]) -> str:
    if out["output_type"] == "stream":
        return out["text"]
    data = out.get("data", {})
    return "\n".join(str(data[m]) for m in ("text/plain", "text/html") if m in data)


def all_text(nb: nbformat.NotebookNode) -> str:
    return "\n".join(text_of(o) for _, o in outputs(nb))


def figures(nb: nbformat.NotebookNode) -> list[dict[str, Any]]:
    """The plotly figures, less the empty one ``%load_ext toolkit`` shows to get plotly.js loaded early."""
    return [o["data"][PLOTLY] for _, o in outputs(nb) if PLOTLY in o.get("data", {})
            and (o["data"][PLOTLY].get("layout", {}).get("meta") or {}).get("kind") != PRELOAD_KIND]


def title(fig: Mapping[str, Any]) -> str:
    t = fig.get("layout", {}).get("title", {})
    return t.get("text", "") if isinstance(t, Mapping) else str(t)


def widgets(nb: nbformat.NotebookNode) -> int:
    return sum(1 for _, o in outputs(nb) if WIDGET in o.get("data", {}))


def assert_no_errors(nb: nbformat.NotebookNode, allowed_cells: tuple[int, ...] = ()) -> None:
    errors = [(i, o.get("ename")) for i, o in outputs(nb) if o["output_type"] == "error" and i not in allowed_cells]
    assert not errors, errors


# -- the committed files -----------------------------------------------------------------------------------


def test_every_tutorial_is_there() -> None:
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(EXPECTED)
    assert (NOTEBOOKS / "README.md").is_file()


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or execution counts: clear them before committing"
    assert "widgets" not in nb.metadata, f"{path.name}: saved widget state in the metadata"


# -- the simulated notebooks -------------------------------------------------------------------------------

@pytest.mark.slow
def test_01_quickstart(kernels: Path, main_env: dict[str, str], out_dir: Path) -> None:
    from toolkit.core.records import load_run

    nb = run_main("01_quickstart", kernels, main_env)
    raises = [i for i, c in enumerate(nb.cells) if "raises-exception" in c.metadata.get("tags", [])]
    assert_no_errors(nb, tuple(raises))
    text = all_text(nb)
    # the validation cell rejects the conf in one line, and the engine says it is simulated
    assert "cannot be combined with max_split_size_mb" in "".join(text_of(o) for i, o in outputs(nb) if i in raises)
    assert "engine [sim] [simulated]" in text and "conf changed since the engine started" in text
    assert "stopped the previous engine" in text
    # the live figures (plotly outputs redrawn in Output widgets: plotly.js once per page, not one ~5 MB
    # FigureWidget bundle each) and the inspector are widgets; the magics' figures are plotly, labelled simulated
    assert widgets(nb) >= 3
    figs = figures(nb)
    assert len(figs) >= 3 and all("simulated" in title(f) for f in figs)
    compare = next(text_of(o) for _, o in outputs(nb) if "peak inactive split" in text_of(o))
    assert "expandable_segments:False" in compare and "expandable_segments:True" in compare
    # the run files and the report were written where the notebook said
    for stem in ("01-baseline", "01-expandable"):
        run = load_run(out_dir / "runs" / f"{stem}.jsonl")
        assert run.simulated and run.status == "ok" and len(run.samples) == 40 * 2  # 40 photos, TP 2
    assert (out_dir / "01-quickstart-report.html").stat().st_size > 100_000


@pytest.mark.slow
def test_02_multimodal_oom(kernels: Path, main_env: dict[str, str]) -> None:
    nb = run_main("02_multimodal_oom", kernels, main_env)
    assert_no_errors(nb)
    text = all_text(nb)
    table = next(text_of(o) for _, o in outputs(nb) if "[simulated] seed scenario" in text_of(o))
    for label in SEED_LABELS:
        assert label in table, label
    assert "every claim above holds for this run" in text
    assert "[simulated what-if, assumed workspace sizes]" in text and "assumed KiB/patch" in text
    figs = figures(nb)
    assert len(figs) >= 5 and all("simulated" in title(f) for f in figs)
    assert any(title(f).startswith("WHAT-IF, assumed workspace of 48 KiB per vision patch") for f in figs)
    assert "default, what-if 48 KiB/patch" in text  # the what-if runs say so in their names
    assert widgets(nb) >= 1  # the inspector


@pytest.mark.slow
def test_03_conf_sweep(kernels: Path, main_env: dict[str, str]) -> None:
    nb = run_main("03_conf_sweep", kernels, main_env)
    assert_no_errors(nb)
    text = all_text(nb)
    assert "rejected 'expandable_segments:True,max_split_size_mb:256'" in text
    loop = next(text_of(o) for _, o in outputs(nb) if "what-if workspace" in text_of(o) and "headroom" in text_of(o))
    for conf in ("default", "expandable_segments:True", "expandable_segments:True,page_size:1g",
                 "max_split_size_mb:256", "max_split_size_mb:1024", "roundup_power2_divisions:4",
                 "garbage_collection_threshold:0.8 (fraction 1)", "garbage_collection_threshold:0.95 (fraction 1)"):
        assert conf in loop, conf
    assert "engine failed to start" in loop
    assert "[simulated] recommendation: expandable_segments:True" in text
    assert "every claim above holds for this run" in text
    assert widgets(nb) >= 1 and figures(nb) and all("simulated" in title(f) for f in figures(nb))


@pytest.mark.slow
def test_04_replay_what_if(kernels: Path, main_env: dict[str, str]) -> None:
    if "MEMLAB_TRACES" not in main_env:
        pytest.skip(f"!!! REAL TRACE MISSING: {TRACE_NAME} not found in $MEMLAB_TRACES or <repo>/../shared/data/"
                    "traces; 04_replay_what_if.ipynb NOT EXECUTED !!!")
    nb = run_main("04_replay_what_if", kernels, main_env)
    assert_no_errors(nb)
    text = all_text(nb)
    match = re.search(r"equal at (\d+) of (\d+) events \(largest gap 0 B\)", text)
    assert match and match.group(1) == match.group(2)
    assert "alloc addresses that differ from the recording: 0 of 2058" in text
    for conf in ("recorded (defaults)", "expandable_segments:True", "max_split_size_mb:256",
                 "roundup_power2_divisions:4", "roundup_power2_divisions:2"):
        assert conf in text, conf
    assert "CUDA out of memory. Tried to allocate" in text
    assert "every claim above holds for this replay" in text
    figs = figures(nb)
    assert len(figs) >= 4 and all("simulated" in title(f) for f in figs)
    assert widgets(nb) >= 1  # the inspector over the replay's stops


@pytest.mark.slow
@pytest.mark.parametrize("with_snapshot", [False, True], ids=["no-hardware", "npu-snapshot-given"])
def test_06_ascend_host_walkthrough(kernels: Path, main_env: dict[str, str], with_snapshot: bool) -> None:
    env = dict(main_env)
    if with_snapshot:  # the replay cell runs anywhere once a torch_npu snapshot is at hand
        env["MEMLAB_NPU_SNAPSHOT"] = str(ROOT / "tests" / "data" / "npu_synthetic.json")
    nb = run_main("06_ascend_host_walkthrough", kernels, env)
    assert_no_errors(nb)
    text = all_text(nb)
    assert "Ascend host: False" in text  # this machine has no NPU: the hardware cells must skip, and say why
    for would_run in ("would run: !npu-smi info", "would run: %ascend_llm Qwen/Qwen3-VL-8B-Instruct --backend npu",
                      "would run: %ascend_llm --status", "would run: watch(llm, PHOTOS", "would run: %ascend_llm --stop",
                      "would run: llm.start_recording"):
        assert would_run in text, would_run
    assert text.count("[skipped: not an Ascend host") >= 6
    assert "engine runs with" in text  # the policy cells need no hardware and ran
    replays = re.findall(r"\[simulated replay\]", text)
    if with_snapshot:
        assert len(replays) == 3 and "as recorded" in text
    else:
        assert not replays and "[skipped: no NPU snapshot recorded or given" in text


# -- the real engine on the CPU ----------------------------------------------------------------------------


@pytest.mark.slow
def test_05_cpu_vllm_engine(kernels: Path, out_dir: Path) -> None:
    if not ENGINE.VLLM_PYTHON.exists():
        pytest.skip(ENGINE.SKIP_REASON + " (05_cpu_vllm_engine.ipynb NOT EXECUTED)")
    env = ENGINE.engine_env(MEMLAB_NOTEBOOK_OUT=str(out_dir), PYDEVD_DISABLE_FILE_VALIDATION="1")
    nb = execute("05_cpu_vllm_engine", ENGINE.VLLM_PYTHON, kernels, env)
    assert_no_errors(nb)
    text = all_text(nb)
    assert "engine [cpu]" in text and "[simulated]" not in text
    assert re.search(r"rank 0 \(pid \d+\) sees\s+'expandable_segments:True'", text)
    table = next(text_of(o) for _, o in outputs(nb) if "visual_tokens" in text_of(o) and "latency_ms" in text_of(o))
    for i in range(6):
        assert re.search(rf"\n\s*{i}\s+{i}\s+0{i:03d}_", table), f"request {i} missing from the samples table"
    assert "ok 6 requests, 6 samples" in text
    assert "engine stopped" in text and "exited" in text
    assert "6 samples on disk, backend cpu, simulated=False" in text

"""``%alloc_conf`` + ``%ascend_llm`` with the real vLLM engine (CPU backend) in a Jupyter kernel (nbclient)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from engine_helpers import IMAGE_SIZES, engine_env

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cpu-engine")]
NOTEBOOK = Path(__file__).with_name("engine_notebook.ipynb")


@pytest.fixture(scope="module")
def executed(vllm_python, tiny_model, image_folder, tmp_path_factory):
    """Run the fixture notebook in a kernel of the CPU-engine interpreter; return (facts, notebook)."""
    work = tmp_path_factory.mktemp("notebook")
    spec_dir = work / "jupyter" / "kernels" / "memlab-vllm"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [str(vllm_python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "memlab CPU engine", "language": "python", "env": engine_env()}))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    out = work / "facts.json"
    params.source = f"MODEL = {str(tiny_model)!r}\nIMAGES = {str(image_folder)!r}\nOUT = {str(out)!r}"
    mp = pytest.MonkeyPatch()
    mp.setenv("JUPYTER_PATH", str(work / "jupyter"))
    try:
        NotebookClient(nb, timeout=240, kernel_name="memlab-vllm", startup_timeout=120,
                       resources={"metadata": {"path": str(work)}}).execute()
    finally:
        mp.undo()
    return json.loads(out.read_text()), nb


def test_runs_images_one_sample_per_request(executed):
    facts, _ = executed
    assert facts["run_status"] == "ok"
    samples = facts["samples"]
    assert [s["request_index"] for s in samples] == list(range(len(IMAGE_SIZES)))
    assert [(s["image_width_px"], s["image_height_px"]) for s in samples] == list(IMAGE_SIZES)
    assert len({s["visual_tokens"] for s in samples}) == len(IMAGE_SIZES)
    assert all(s["status"] == "ok" and s["device_used_bytes"] > 0 for s in samples)


def test_status_shows_the_conf_the_worker_sees(executed):
    facts, _ = executed
    text = facts["status_text"]
    assert re.search(r"PYTORCH_NPU_ALLOC_CONF \(you asked\) +'expandable_segments:False'", text)
    assert re.search(r"rank 0 \(pid \d+\) sees +'expandable_segments:False'", text)
    assert re.search(r"differences +none", text)


def test_killed_engine_keeps_every_sample_and_the_kernel(executed):
    facts, _ = executed
    assert facts["killed_status"] == "error"
    assert "at request" in facts["killed_message"] and "engine dead" in facts["killed_message"]
    # requests are numbered from 0 in each run (the engine served len(IMAGE_SIZES) before this run)
    assert facts["killed_samples"] == [[0, "ok"], [1, "ok"], [2, "error"]]
    assert facts["killed_on_disk"] == facts["killed_samples"]
    assert facts["killed_on_disk_status"] == "error"


def test_a_new_conf_means_a_new_engine_and_the_magic_says_so(executed):
    facts, _ = executed
    assert any("conf changed" in n and "new engine" in n for n in facts["changed_notes"])
    assert any("stopped the previous engine" in n and "a new conf means a new engine" in n
               for n in facts["restarted_notes"])
    rows = dict(map(tuple, facts["restarted_conf_rows"]))
    assert rows["PYTORCH_NPU_ALLOC_CONF (you asked)"] == "'page_size:1g'"
    seen = [v for k, v in rows.items() if k.endswith(") sees")]
    assert seen == ["'page_size:1g,expandable_segments:True'"]
    assert facts["second_status"] == "ok" and facts["second_text_is_str"]


def test_stop_ends_the_processes_and_unbinds_the_handle(executed):
    facts, _ = executed
    assert facts["stopped_clean"] and len(facts["stopped_pids"]) >= 2
    assert facts["alive_after_stop"] == []  # the second engine's and the killed first engine's processes
    assert not facts["llm_still_bound"] and not facts["out_holds_engine"]


def test_views_render_as_html_in_the_notebook(executed):
    _, nb = executed
    html_outputs = [o["data"]["text/html"] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                    if "data" in o and "text/html" in o["data"]]
    assert any("allocator conf, read back from the workers" in h for h in html_outputs)
    assert any("engine stopped" in h for h in html_outputs)

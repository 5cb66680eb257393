"""A new user's first ten minutes: comments after magics, options that do not stick, failures that cost one
request, runs that say where they are on disk (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from toolkit.core.records import load_run
from toolkit.notebook._conf_magics import ToolkitMagics
from toolkit.notebook.conf_session import Session
from toolkit.notebook._magic_args import split_line, strip_comment

NPU, CUDA = "PYTORCH_NPU_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF"


# -- trailing comments ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("line", "words"), [
    ("  # what a process started now reads", []),
    ("expandable_segments:True,page_size:1g   # validated", ["expandable_segments:True,page_size:1g"]),
    ("--platform cuda roundup_power2_divisions:[256:1,>:8]  # x", ["--platform", "cuda",
                                                                  "roundup_power2_divisions:[256:1,>:8]"]),
    ("'a # b' c  # d", ["a # b", "c"]),  # quoted: not a comment
    ("model#1 --name x", ["model#1", "--name", "x"]),  # inside a word: not a comment (POSIX sh)
    (r"a \# b", ["a", "#", "b"]),  # escaped
])
def test_a_trailing_comment_is_dropped_like_a_shell_does(line: str, words: list[str]) -> None:
    assert split_line(line, "p") == words


def test_strip_comment_keeps_lines_without_one() -> None:
    assert strip_comment('x "y" z') == 'x "y" z'


# -- what sticks ----------------------------------------------------------------------------------------

@pytest.fixture
def env() -> dict[str, str]:
    return {}


@pytest.fixture
def shell(env: dict[str, str]):
    ip = InteractiveShell.instance()
    magics = ToolkitMagics(ip, session=Session(env))
    ip.register_magics(magics)
    yield ip, magics.session
    InteractiveShell.clear_instance()


def test_platform_and_version_apply_to_one_call_only(shell, env) -> None:
    ip, session = shell
    status = ip.run_line_magic("alloc_conf", "--platform cuda --version 2.9 roundup_power2_divisions:4  # c")
    assert status.platform == "cuda" and status.version == "2.9" and env[CUDA] == "roundup_power2_divisions:4"
    assert "this call only" in str(status)
    assert (session.platform, session.version) == ("npu", None)
    # the next call validates for the default again: an NPU-only key is accepted, no "npu version '2.9'"
    status = ip.run_line_magic("alloc_conf", "expandable_segments:True,page_size:1g")
    assert status.platform == "npu" and env[NPU] == "expandable_segments:True,page_size:1g"
    # naming npu alone means its newest release, never the CUDA version given before
    assert ip.run_line_magic("alloc_conf", "--platform npu").version is None


def test_use_keeps_them_the_table_says_so_and_reset_returns_to_the_default(shell, env) -> None:
    ip, session = shell
    status = ip.run_line_magic("alloc_conf", "--platform cuda --version 2.9 --use")
    assert (session.platform, session.version) == ("cuda", "2.9")
    kept = dict(status.defaults)
    assert kept["platform"].startswith("cuda") and kept["version"] == "2.9"
    assert "kept between calls" in str(status) and "kept between calls" in status._repr_html_()
    assert ip.run_line_magic("alloc_conf", "max_split_size_mb:256").platform == "cuda"
    status = ip.run_line_magic("alloc_conf", "--reset")
    assert (session.platform, session.version) == ("npu", None) and status.platform == "npu"
    assert env == {} and "defaults back to npu" in str(status)


def test_use_needs_something_to_keep(shell) -> None:
    ip, _ = shell
    with pytest.raises(UsageError, match="--use keeps"):
        ip.run_line_magic("alloc_conf", "--use")


# -- failures cost one request ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from toolkit.workload.photos import generate_photo_set

    folder = tmp_path_factory.mktemp("photos")
    paths = generate_photo_set(folder, 6)
    (folder / "0002_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG" * 8)
    # a truncated JPEG: Pillow reads its header, decoding fails (what a real engine does)
    data = paths[0].read_bytes()
    (folder / "0004_truncated.jpg").write_bytes(data[: len(data) // 3])
    return folder


def test_an_unreadable_image_is_one_failed_request_and_the_run_goes_on(photos: Path, tmp_path: Path) -> None:
    from toolkit.engines.sim import SimEngine

    eng = SimEngine(tensor_parallel_size=2, run_dir=tmp_path)
    run = eng.run_images(photos, progress=False, max_tokens=8)
    names = [s.input_name for s in run.samples_of_rank(0)]
    assert len(names) == 8 and run.status == "ok"
    broken = [s for s in run.samples_of_rank(0) if s.input_name == "0002_broken.jpg"]
    assert broken and broken[0].status == "error" and "not an image Pillow can read" in broken[0].message
    assert run.requests_served == 7  # the header of the truncated file reads: the simulator sizes it
    assert "1 request(s) failed on their input" in run.message
    # the run says where it is, and the file holds the same samples
    assert run.path is not None and Path(run.path).parent == tmp_path
    assert load_run(run.path).samples == run.samples


def test_the_real_engine_decodes_and_names_a_truncated_file(photos: Path) -> None:
    from toolkit.workload.inputs import InputError, load_rgb

    with pytest.raises(InputError, match="0004_truncated.jpg cannot be decoded"):
        load_rgb(photos / "0004_truncated.jpg")


def test_an_interrupt_returns_the_run_kept_so_far_and_says_where_in_one_line(
        photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from toolkit.engines.sim import SimEngine

    eng = SimEngine(run_dir=tmp_path)
    served = []

    def stop_after_three(result) -> None:
        served.append(result.request_index)
        if len(served) == 3:
            raise KeyboardInterrupt

    run = eng.run_images(photos, progress=False, max_tokens=4, on_result=stop_after_three)
    assert run.status == "interrupted" and len(run.samples) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and run.path in err and "Traceback" not in err
    assert load_run(run.path).status == "interrupted" and len(load_run(run.path).samples) == 3


def test_request_numbers_start_at_zero_in_each_run_and_ids_stay_unique(photos: Path) -> None:
    from toolkit.engines.sim import SimEngine

    eng = SimEngine()
    first = eng.run_images(photos, progress=False, max_tokens=2)
    second = eng.run_images(photos, progress=False, max_tokens=2)
    assert [s.request_index for s in second.samples] == [s.request_index for s in first.samples] == list(range(8))
    assert not {s.request_id for s in first.samples} & {s.request_id for s in second.samples}


def test_inspecting_a_plain_run_shows_the_allocator_state(photos: Path) -> None:
    from toolkit.engines.sim import SimEngine
    from toolkit.notebook.widgets import Inspector

    run = SimEngine().run_images(photos, progress=False, max_tokens=2)
    snap = Inspector(run, mode="static").snapshot(0)
    assert snap is not None and snap["segments"]


# -- what a vLLM user expects to read ------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["0.99", "1.4", "0.5.0", "v0.27.0rc1"])
def test_an_unknown_vllm_ascend_release_is_refused_with_the_known_range(shell, version: str) -> None:
    ip, _ = shell
    with pytest.raises(UsageError, match=r"known releases are 0\.7\.3rc1 to 0\.26\.x"):
        ip.run_line_magic("alloc_conf", f"--policy {version}")


def test_known_releases_still_work(shell) -> None:
    ip, _ = shell
    for version in ("0.13.0", "0.14.0rc1", "v0.18.0", "0.26.0rc1", "main"):
        ip.run_line_magic("alloc_conf", f"--policy {version}")


def test_an_out_of_range_request_is_refused_with_the_range(photos: Path) -> None:
    from toolkit.engines.sim import SimEngine
    from toolkit.notebook.widgets import Inspector, WidgetError

    run = SimEngine().run_images(photos, progress=False, max_tokens=2, snapshots=False)
    with pytest.raises(WidgetError, match="has requests 0 to 7: request 999 is out of range"):
        Inspector(run, request=999, mode="static")


def test_runs_are_named_by_their_conf_and_the_status_has_vllms_breakdown() -> None:
    from toolkit.notebook._llm_session import LLMSession

    s = LLMSession(Session({"PYTORCH_NPU_ALLOC_CONF": "expandable_segments:False"}), run_dir=None)
    status = s.start("Qwen/Qwen3-VL-8B-Instruct", backend="sim", tensor_parallel_size=2)
    rows = dict(status.rows)
    assert rows["engine"] == "expandable_segments:False [simulated]"
    for key in ("budget", "weights", "activation peak", "non-torch (vLLM's log)", "KV cache", "non-torch (samples)"):
        assert key in rows, key
    eng = s.engine
    budget = eng.budget
    assert rows["budget"].startswith(f"{budget.requested_bytes / 2**30:.2f} GiB = total 64.00 GiB")
    # the two non-torch figures: the log's is the start-up growth, the samples' adds what was there before
    # the engine and what vllm-ascend allocates after profiling; their sum is what a sample shows
    dev = eng.device
    shown = dev.device_used_bytes - dev.memory_reserved()
    assert shown == dev.context_bytes + budget.non_torch_increase_bytes + eng.post_profile_non_torch_bytes
    assert f"{shown / 2**30:.2f} GiB = {dev.context_bytes / 2**30:.2f} GiB before the engine" in rows[
        "non-torch (samples)"]


def test_expandable_runs_count_their_segments() -> None:
    from toolkit.engines.sim import SimEngine

    eng = SimEngine(conf="expandable_segments:True")
    result = eng.generate("Hello", max_tokens=2)
    assert result.samples[0].segment_count == len(eng.device.snapshot()["segments"]) > 0


def test_the_repository_vllm_ascend_folder_is_not_the_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the repository root on sys.path (an editable install does that) the runbook folder imports as an
    empty namespace package; detection must not take it for vllm-ascend."""
    import importlib.util
    import sys

    from toolkit.notebook._llm_session import module_installed

    root = str(Path(__file__).resolve().parents[1])
    monkeypatch.setattr(sys, "path", [root, *sys.path])
    importlib.invalidate_caches()
    spec = importlib.util.find_spec("vllm_ascend")
    if spec is not None and spec.origin is not None:
        pytest.skip("a real vllm-ascend is installed here")
    assert spec is not None  # the trap is real: find_spec alone says "installed"
    assert module_installed("vllm_ascend") is False
    assert module_installed("json") is True


# -- the conf sweep panel ------------------------------------------------------------------------------------

def test_one_typo_is_one_line_in_the_sweep_panel() -> None:
    from toolkit.notebook.widgets import ConfSweep

    sweep = ConfSweep(lambda c, f: None, mode="static",  # type: ignore[arg-type,return-value]
                      options={"expandable_segments": "-, True", "max_split_size_mb": "-, 128, lots, 512",
                               "roundup_power2_divisions": "-, 4"})
    lines = sweep.preview_lines()
    typo = [line for line in lines if "lots" in line]
    assert len(typo) == 1 and typo[0].startswith("max_split_size_mb: rejected 'lots'")
    # expandable segments with max_split_size_mb: refused once, with a count, not once per combination
    conflict = [line for line in lines if "cannot be combined" in line]
    assert len(conflict) == 1 and "more" in conflict[0]
    assert len(lines) == 3


def test_switching_the_sweep_metric_removes_the_capacity_line_from_the_page() -> None:
    from test_widgets import make_run  # the widget tests' synthetic runs

    from toolkit.notebook.widgets import ConfSweep

    sweep = ConfSweep(lambda conf, f: make_run(4, conf=conf, name=conf or "default"), mode="widget",
                      options={"expandable_segments": "-, True"})
    sweep.widget  # noqa: B018 - builds the panel
    sweep.run()
    fw = sweep._ui["figure"]
    assert fw.layout.shapes  # reserved bytes: the device capacity line
    sent: list[dict] = []
    original = fw._send_relayout_msg
    fw._send_relayout_msg = lambda data, **kw: (sent.append(data), original(data, **kw))[1]
    sweep._ui["metric"].value = "inactive_split_bytes"
    # the front end is told to drop the line (a relayout without "shapes" would keep it there)
    assert any("shapes" in d and not d["shapes"] for d in sent), [sorted(d) for d in sent]
    assert not fw.layout.shapes


# -- simulated snapshots say what each block is -------------------------------------------------------------

def test_simulated_snapshots_name_each_block_and_mark_requests(photos: Path) -> None:
    from toolkit.engines.sim import SimEngine

    eng = SimEngine()
    snap = eng.snapshot()  # no history: the start-up's blocks are named anyway
    names = {b["frames"][0]["name"] for s in snap["segments"] for b in s["blocks"] if b["frames"]}
    assert "KV cache layer 3 (K)" in names
    assert all(b["frames"] for s in snap["segments"] for b in s["blocks"] if b["state"] != "inactive")
    eng.record_history()
    result = eng.generate(image=sorted(photos.glob("0001_*"))[0], max_tokens=2)
    snap = eng.snapshot()
    trace = snap["device_traces"][0]
    allocs = [e for e in trace if e["action"] == "alloc"]
    assert allocs and all(e["frames"] for e in allocs)
    assert any(e["frames"][0]["name"] == "vision block 12: attention output" for e in allocs)
    assert all(set(f) == {"filename", "line", "name"} for e in allocs for f in e["frames"])  # torch's frame keys
    # request boundaries, in torch's external_annotations layout, around the request's trace entries
    start, end = snap["external_annotations"]
    assert (start["stage"], end["stage"]) == ("START", "END") and start["name"] == end["name"]
    assert start["name"].startswith(f"request {result.request_index}")
    assert start["time_us"] < end["time_us"]


def test_torchs_memory_viz_reads_the_frames(photos: Path) -> None:
    pytest.importorskip("torch")
    from torch.cuda import _memory_viz

    from toolkit.engines.sim import SimEngine

    eng = SimEngine(platform="cuda")
    eng.record_history()
    eng.generate(image=sorted(photos.glob("0001_*"))[0], max_tokens=2)
    # torch's own reader: the folded stacks of its memory flamegraph (raw lines: no flamegraph.pl download)
    folded = _memory_viz.memory(eng.snapshot(), format_flamegraph=lambda lines: lines)
    assert "KV cache layer 3 " in folded and "embed_tokens" in folded  # CUDA: one KV tensor per layer
    assert "vision block" not in folded  # the request's activations were freed: only live blocks are drawn


def test_the_inspector_filters_to_segments_with_stranded_blocks(photos: Path) -> None:
    from toolkit.engines.sim import SimEngine
    from toolkit.notebook.widgets import Inspector
    from toolkit.viz.plots import holds_stranded

    run = SimEngine().run_images(photos, progress=False, max_tokens=2)
    ins = Inspector(run, mode="widget", stranded_only=False)
    snap = ins.snapshot()
    stranded = [s for s in snap["segments"] if holds_stranded(s)]
    assert stranded and len(stranded) < len(snap["segments"])
    box = ins.widget  # noqa: F841
    all_rows = len(ins._ui["state"].layout.yaxis.categoryarray)
    ins._ui["stranded"].value = True
    assert len(ins._ui["state"].layout.yaxis.categoryarray) == len(stranded) < all_rows
    assert "stranded" in ins._ui["state"].layout.title.text

"""Run / MemorySample records: durable JSON Lines, tolerant loading, DataFrame view."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from toolkit.core.records import SCHEMA_VERSION, MemorySample, RecordError, Run, RunWriter, load_run

GiB = 1024**3


def header(**kw) -> Run:
    base = dict(name="t", backend="sim", platform="npu", model="Qwen/Qwen3-VL-8B-Instruct", conf=None,
                effective_conf="expandable_segments:True", device_capacity_bytes=64 * GiB, simulated=True,
                engine_args={"tensor_parallel_size": 2})
    base.update(kw)
    return Run(**base)


def sample(i: int, rank: int = 0, **kw) -> MemorySample:
    base = dict(request_index=i, request_id=f"req-{i}", rank=rank, started_at_ns=1_000 + i, duration_ns=5,
                input_name=f"{i}.jpg", image_width_px=4032, image_height_px=3024, resized_width_px=4032,
                resized_height_px=3008, visual_tokens=11844, prompt_tokens=11873, output_tokens=1024,
                allocated_bytes=10 * GiB + i, allocated_peak_bytes=12 * GiB, reserved_bytes=13 * GiB,
                reserved_peak_bytes=13 * GiB, active_bytes=10 * GiB, inactive_split_bytes=GiB,
                device_used_bytes=14 * GiB, device_total_bytes=64 * GiB, non_torch_bytes=GiB,
                segment_count=40 + i, alloc_retries=0, num_ooms=0)
    base.update(kw)
    return MemorySample(**base)


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with RunWriter(path, header()) as w:
        w.append(sample(0, 0), sample(0, 1))
        w.append(sample(1, 0, status="oom", message="NPU out of memory. Tried to allocate 2.00 GiB"))
        finished = w.finish("oom", "OOM at request 1")
    loaded = load_run(path)
    assert loaded == finished
    assert loaded.status == "oom" and loaded.message == "OOM at request 1"
    assert loaded.samples[2].message.startswith("NPU out of memory")
    assert loaded.ranks == (0, 1)
    assert loaded.requests_served == 1  # request 1 is the OOM
    assert loaded.simulated is True and loaded.schema_version == SCHEMA_VERSION
    assert loaded.finished_at_ns is not None and loaded.finished_at_ns >= loaded.started_at_ns


def test_to_frame_has_one_row_per_sample_and_the_header(tmp_path: Path) -> None:
    with RunWriter(tmp_path / "r.jsonl", header()) as w:
        for i in range(3):
            w.append(sample(i, 0), sample(i, 1))
    frame = load_run(tmp_path / "r.jsonl").to_frame()
    assert len(frame) == 6
    assert list(frame["reserved_bytes"]) == [13 * GiB] * 6
    assert frame["allocated_bytes"].dtype.kind == "i"
    assert frame.attrs["run"]["simulated"] is True
    assert frame.attrs["run"]["engine_args"] == {"tensor_parallel_size": 2}


def test_truncated_last_line_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl"
    w = RunWriter(path, header())
    w.append(sample(0))
    w.append(sample(1))
    # simulate a kill in the middle of the next write: half a line, no newline, no end record
    line = json.dumps({"kind": "sample", **sample(2).to_dict()})
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line[: len(line) // 2])
    run = load_run(path)
    assert [s.request_index for s in run.samples] == [0, 1]
    assert run.status == "interrupted"


def test_complete_json_without_newline_is_still_dropped(tmp_path: Path) -> None:
    # a line is only complete with its newline: the writer writes both in one call
    path = tmp_path / "nl.jsonl"
    w = RunWriter(path, header())
    w.append(sample(0))
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"kind": "sample", **sample(1).to_dict()}))
    assert [s.request_index for s in load_run(path).samples] == [0]


def test_corrupt_line_before_the_end_is_an_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    with RunWriter(path, header()) as w:
        w.append(sample(0))
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:20]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=r"bad.jsonl:2: corrupt line"):
        load_run(path)


def test_unsupported_schema_and_non_run_files_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "v9.jsonl"
    p.write_text(json.dumps({"kind": "run", **header().header_dict(), "schema_version": 99}) + "\n")
    with pytest.raises(RecordError, match="schema_version 99"):
        load_run(p)
    q = tmp_path / "other.jsonl"
    q.write_text('{"a": 1}\n')
    with pytest.raises(RecordError, match="not a run"):
        load_run(q)
    with pytest.raises(FileNotFoundError):
        load_run(tmp_path / "missing.jsonl")


def test_bytes_must_be_ints_and_status_known() -> None:
    with pytest.raises(RecordError, match="reserved_bytes"):
        sample(0, reserved_bytes=1.5)
    with pytest.raises(RecordError, match="reserved_bytes"):
        sample(0, reserved_bytes=True)
    with pytest.raises(RecordError, match="status"):
        sample(0, status="fine")
    with pytest.raises(RecordError, match="status"):
        header(status="done")


def test_writer_records_exceptions_and_interrupts(tmp_path: Path) -> None:
    with pytest.raises(ZeroDivisionError):
        with RunWriter(tmp_path / "e.jsonl", header()) as w:
            w.append(sample(0))
            1 / 0  # noqa: B018
    run = load_run(tmp_path / "e.jsonl")
    assert run.status == "error" and "ZeroDivisionError" in run.message and len(run.samples) == 1
    with pytest.raises(KeyboardInterrupt):
        with RunWriter(tmp_path / "k.jsonl", header()) as w:
            raise KeyboardInterrupt
    assert load_run(tmp_path / "k.jsonl").status == "interrupted"
    with pytest.raises(RecordError, match="exists"):
        RunWriter(tmp_path / "k.jsonl", header())
    with pytest.raises(RecordError, match="already finished"):
        w.append(sample(1))


def test_sigkill_mid_run_keeps_every_written_sample(tmp_path: Path) -> None:
    """A real writer process killed with SIGKILL: every sample it reported written is on disk."""
    path = tmp_path / "killed.jsonl"
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_records import header, sample
        from toolkit.core.records import RunWriter
        w = RunWriter({str(path)!r}, header())
        i = 0
        while True:
            w.append(sample(i, 0), sample(i, 1))
            print(i, flush=True)
            i += 1
            time.sleep(0.01)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        reported = -1
        deadline = time.monotonic() + 60
        while reported < 20 and time.monotonic() < deadline:
            reported = int(proc.stdout.readline())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    run = load_run(path)
    assert run.status == "interrupted"
    indices = sorted({s.request_index for s in run.samples})
    assert indices[: reported + 1] == list(range(reported + 1))  # nothing reported is lost
    assert len(run.samples) == 2 * len(indices)  # both ranks of a request land together

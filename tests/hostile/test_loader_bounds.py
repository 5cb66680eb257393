"""The snapshot loader and ``load_run`` are bounded by construction and check types at the boundary."""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hostile_cases import _small_snapshot
from trace_paths import TRACES

from toolkit.core.records import RecordError, load_run
from toolkit.snapshot import SnapshotError, load_snapshot
from toolkit.snapshot._prescan import PickleShapeError, prescan
from toolkit.snapshot._unpickler import _SAFE_GLOBALS, loads_plain

REAL = sorted(TRACES.glob("*.pickle")) if TRACES is not None else []


@pytest.mark.skipif(not REAL, reason="REAL TRACES MISSING: ../shared/data/traces")
def test_the_prescan_accepts_every_real_recording_and_they_all_load() -> None:
    assert len(REAL) >= 6
    for path in REAL:
        data = path.read_bytes()
        assert prescan(data) > 1000, path.name  # they memoize (and share) thousands of dicts and lists
        snap = load_snapshot(path)
        assert snap["segments"] and any(snap["device_traces"]), path.name
        assert load_snapshot(path, normalize=False) == pickle.loads(data)  # the same data as pickle gives


def test_shared_small_tuples_and_lists_are_fine_shared_nested_tuples_are_not() -> None:
    pool = (0, 0)
    frames = [{"filename": "a.py", "line": 1, "name": "f"}]
    ok = {"a": [pool, pool, pool], "f": [frames, frames]}  # what the simulator and torch share
    assert loads_plain(pickle.dumps(ok, protocol=4)) == ok
    inner = (1, 2)
    with pytest.raises(PickleShapeError, match="memoized tuple fetched again"):
        loads_plain(pickle.dumps([(inner, inner), (inner, inner)][0:1] * 2, protocol=4))


def test_size_limit_names_the_limit_and_how_to_raise_it(tmp_path: Path) -> None:
    p = tmp_path / "big.pickle"
    p.write_bytes(pickle.dumps(_small_snapshot(), protocol=4))
    with pytest.raises(SnapshotError, match=r"big.pickle is .* MiB, over the 0 MiB limit .*pass max_bytes="):
        load_snapshot(p, max_bytes=100)
    assert load_snapshot(p, max_bytes=1 << 20)["segments"]


@pytest.mark.parametrize("kind", ["fifo", "dir", "dev"])
def test_non_regular_files_are_refused_without_reading(tmp_path: Path, kind: str) -> None:
    path = {"dir": tmp_path, "dev": Path("/dev/zero")}.get(kind, tmp_path / "f.pickle")
    if kind == "fifo":
        os.mkfifo(path)
    with pytest.raises(SnapshotError, match="not a snapshot file"):
        load_snapshot(path)
    with pytest.raises(RecordError, match="not a regular file"):
        load_run(path)


def test_build_cannot_change_an_allowed_function() -> None:
    before = {k: (v.__defaults__, dict(v.__dict__)) for k, v in _SAFE_GLOBALS.items()}
    evil = b"\x80\x04c_codecs\nencode\nN}(\x8c\x0c__defaults__(\x8c\x01xtu\x86b."
    with pytest.raises(SnapshotError):
        load_snapshot(evil)
    assert {k: (v.__defaults__, dict(v.__dict__)) for k, v in _SAFE_GLOBALS.items()} == before


@pytest.mark.parametrize("field,value", [(("segments", 0, "address"), "512"), (("segments", 0, "address"), 2**70),
                                         (("device_traces", 0, 0, "size"), True),
                                         (("allocator_settings",), [1])])
def test_types_are_checked_at_the_boundary(field, value) -> None:
    snap = json.loads(json.dumps(_small_snapshot()))
    obj = snap
    for k in field[:-1]:
        obj = obj[k]
    obj[field[-1]] = value
    with pytest.raises(SnapshotError, match=field[-1]):
        load_snapshot(json.dumps(snap).encode())


def test_two_segments_at_one_address_are_refused_not_merged() -> None:
    snap = _small_snapshot()
    snap["segments"].append(dict(snap["segments"][0]))
    with pytest.raises(SnapshotError, match="both start at 0x7f0000000000"):
        load_snapshot(pickle.dumps(snap))


def test_normalisation_budget_is_proportional_to_the_file_size() -> None:
    seg = _small_snapshot()["segments"][0]
    seg["blocks"] = [dict(seg["blocks"][1], address=seg["address"] + 512 * i, size=512) for i in range(4096)]
    seg["total_size"] = 512 * 4096
    seg["allocated_size"] = seg["active_size"] = seg["requested_size"] = 0
    blocks = seg["blocks"]
    # one segment dict repeated 2000 times: the file holds it once, normalising would visit 8 M blocks
    data = pickle.dumps({"segments": [seg] * 2000, "device_traces": []}, protocol=4)
    assert len(data) < 400_000 and len(blocks) * 2000 > 20 * len(data)
    with pytest.raises(SnapshotError, match="segments, blocks and trace entries for a file this size"):
        load_snapshot(data)


def _run_lines(*records) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def test_load_run_refuses_duplicates_order_and_records_after_the_end(tmp_path: Path) -> None:
    from hostile_cases import _END, _header, _sample

    cases = {"dup": (_sample(0), _sample(0), _END), "after": (_sample(0), _END, _sample(1)),
             "order": (_sample(1), _sample(0), _END), "str": (_sample("0"), _END)}
    match = {"dup": "second sample for request 0", "after": "after the end record", "order": "request order",
             "str": "request_index is '0', expected int"}
    for name, recs in cases.items():
        p = tmp_path / f"{name}.jsonl"
        p.write_bytes(_run_lines(_header(), *recs))
        with pytest.raises(RecordError, match=match[name]):
            load_run(p)
    cut = tmp_path / "cut.jsonl"  # a writer killed between the two ranks of request 1
    cut.write_bytes(_run_lines(_header(), _sample(0, 0), _sample(0, 1), _sample(1, 0)))
    run = load_run(cut)
    assert run.status == "interrupted" and len(run.samples) == 3
    assert run.incomplete_requests == (1,) and "incomplete: request 1" in run.message

"""Fidelity, measured on a real trace: the simulator reproduces a recorded CUDA run exactly (100 %).

The trace (``shared/data/traces/cuda-transformer-forward-a.pickle``, recorded by someone else on a real
GPU, default allocator settings, recording started mid-run) is replayed under its recorded conf with
its recorded segment addresses. Every assertion below is all-or-nothing: the same ``segment_alloc``
sequence, every block at the recorded address, the same reserved bytes after every request, and the
same final layout (segment and block addresses, sizes, states, requested sizes).

Where the traces live: ``$MEMLAB_TRACES``, else ``<repo>/../shared/data/traces`` (CI keeps ``shared/``
beside the checkout).
"""

from __future__ import annotations


import pytest

from toolkit.replay import ReplayResult, guess_torch_version, replay
from toolkit.snapshot import load_snapshot

from pathlib import Path

from trace_paths import TRACE_NAME, TRACES, needs_real_trace

pytestmark = needs_real_trace


@pytest.fixture(scope="module")
def recorded() -> dict:
    assert TRACES is not None
    return load_snapshot(TRACES / TRACE_NAME)


@pytest.fixture(scope="module")
def result(recorded: dict) -> ReplayResult:
    out = replay(recorded, record_history=True)  # recorded conf, recorded segment addresses
    assert out.completed
    return out


def _layout(segments: list[dict]) -> list[tuple]:
    return [
        (s["address"], s["total_size"], s["segment_type"], s["stream"], s["is_expandable"],
         tuple((b["address"], b["size"], b["state"], b["requested_size"]) for b in s["blocks"]))
        for s in sorted(segments, key=lambda s: s["address"])
    ]


def test_replays_under_the_recorded_conf(recorded: dict, result: ReplayResult) -> None:
    assert result.recorded_conf == "" and result.conf == ""
    assert guess_torch_version(recorded) == "2.8"  # settings without 2.9's key: address-order best fit
    assert result.device.settings.tie_break == "address"
    assert result.events_replayed == result.events_total == len(recorded["device_traces"][0]) == 4657


def test_same_segment_alloc_sequence(recorded: dict, result: ReplayResult) -> None:
    want = [(e["addr"], e["size"]) for e in recorded["device_traces"][0] if e["action"] == "segment_alloc"]
    got = [(e["addr"], e["size"]) for e in result.device.snapshot()["device_traces"][0]
           if e["action"] == "segment_alloc"]
    assert len(want) == 289
    assert got == want
    assert result.segment_mismatches == 0


def test_every_block_at_the_recorded_address(recorded: dict, result: ReplayResult) -> None:
    want = [(e["action"], e["addr"], e["size"]) for e in recorded["device_traces"][0]
            if e["action"] in ("alloc", "free_requested", "free_completed")]
    got = [(e["action"], e["addr"], e["size"]) for e in result.device.snapshot()["device_traces"][0]
           if e["action"] in ("alloc", "free_requested", "free_completed")]
    assert result.address_mismatches == 0
    assert got == want  # 2058 allocs, 1155 frees: same addresses, same order


def test_same_reserved_bytes_after_every_request(result: ReplayResult) -> None:
    tl = result.timeline
    requests = tl[tl["action"].isin(["alloc", "free_requested", "free_completed"])]
    assert len(requests) == 2058 + 2 * 1155
    assert (requests["reserved_bytes"] == requests["recorded_reserved_bytes"]).all()
    # a recorded segment_alloc is the first half of the malloc that follows it: compare after that alloc
    seg_rows = tl.index[tl["action"] == "segment_alloc"]
    assert (tl.loc[seg_rows + 1, "action"] == "alloc").all()
    assert (tl.loc[seg_rows + 1, "reserved_bytes"].values == tl.loc[seg_rows, "recorded_reserved_bytes"].values).all()


def test_same_final_layout(recorded: dict, result: ReplayResult) -> None:
    want = _layout(recorded["segments"])
    got = _layout(result.device.snapshot()["segments"])
    assert len(want) == 516
    assert got == want  # addresses, sizes, states and requested sizes of all 1276 blocks
    stats = result.device.memory_stats()
    assert stats["segment.all.current"] == 516
    assert stats["reserved_bytes.all.current"] == sum(s["total_size"] for s in recorded["segments"])
    assert stats["allocated_bytes.all.current"] == sum(s["allocated_size"] for s in recorded["segments"])
    result.device.check_invariants()


def test_the_best_fit_tie_break_is_observable(recorded: dict) -> None:
    """The trace pins the tie-break: registration order (recent CUDA) does not reproduce it."""
    other = replay(recorded, tie_break="registration")
    assert other.address_mismatches > 100


def _all_traces() -> list[Path]:
    return sorted(TRACES.glob("*.pickle")) if TRACES is not None else []


@pytest.mark.parametrize("path", _all_traces(), ids=lambda p: p.name)
def test_every_recorded_trace_replays_exactly(path: Path) -> None:
    """Every CUDA trace in the folder (e.g. from scripts/record_cuda_traces.py) replays exactly, every device.

    A ``.json`` sidecar next to a pickle supplies what a snapshot does not record: the torch version,
    the device capacity and free memory at start, and a per-process memory fraction.
    """
    import json

    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    recorded = load_snapshot(path)
    if recorded["platform"] != "cuda":
        pytest.skip(f"{path.name}: not a CUDA trace")
    total = meta.get("total_bytes")
    context = total - meta["free_bytes_at_start"] if total and "free_bytes_at_start" in meta else None
    devices = [d for d, trace in enumerate(recorded["device_traces"]) if trace]
    assert devices
    for d in devices:
        result = replay(recorded, torch_version=meta.get("torch_version"), capacity_bytes=total, device=d,
                        context_bytes=context, memory_fraction=meta.get("memory_fraction"))
        fid = result.fidelity()
        assert fid.exact, f"device {d}: {fid.line()}"

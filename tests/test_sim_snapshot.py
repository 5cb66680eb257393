"""snapshot(): the layout of torch.cuda.memory._snapshot(), readable by PyTorch's memory_viz (docs/allocator.md §5)."""

from __future__ import annotations

import pickle

import pytest

from toolkit.sim import SimDevice

MiB = 1 << 20
SEGMENT_KEYS = {"device", "address", "total_size", "allocated_size", "active_size", "requested_size", "stream",
                "segment_type", "segment_pool_id", "is_expandable", "frames", "blocks"}
BLOCK_KEYS = {"address", "size", "requested_size", "state", "frames"}


def busy_device(platform: str = "cuda", conf: str = "") -> SimDevice:
    dev = SimDevice(platform, conf, context_bytes=0)  # type: ignore[arg-type]
    dev.record_history()
    a = dev.malloc(5 * MiB)
    dev.free(dev.malloc(40 * MiB))
    dev.empty_cache()  # returns the 40 MiB segment; a's segment is split and stays
    b = dev.malloc(1000)
    dev.record_stream(b, 3)
    dev.free(b)  # pending until stream 3's event completes
    dev.malloc(2 * MiB)  # carved from a's free tail
    assert a
    return dev


def test_layout_matches_torch_snapshot() -> None:
    snap = busy_device().snapshot()
    assert snap["simulated"] is True and snap["simulator"]["platform"] == "cuda"
    assert set(snap) >= {"segments", "device_traces", "allocator_settings", "external_annotations"}
    assert snap["allocator_settings"]["max_split_size"] == -1
    assert len(snap["allocator_settings"]["roundup_power2_divisions"]) == 16
    for seg in snap["segments"]:
        assert set(seg) == SEGMENT_KEYS
        assert seg["total_size"] == sum(b["size"] for b in seg["blocks"])
        address = seg["address"]
        for blk in seg["blocks"]:
            assert set(blk) == BLOCK_KEYS
            assert blk["address"] == address  # segment address + sizes of the blocks before
            address += blk["size"]
            assert blk["state"] in ("active_allocated", "active_pending_free", "inactive")
        active = [b for b in seg["blocks"] if b["state"] != "inactive"]
        assert seg["active_size"] == sum(b["size"] for b in active)
        assert seg["allocated_size"] == sum(b["size"] for b in active if b["state"] == "active_allocated")
        assert seg["requested_size"] == sum(b["requested_size"] for b in active)
    addresses = [s["address"] for s in snap["segments"]]
    assert addresses == sorted(addresses)
    states = [b["state"] for s in snap["segments"] for b in s["blocks"]]
    assert "active_pending_free" in states
    entries = snap["device_traces"][0]
    assert {e["action"] for e in entries} == {"segment_alloc", "alloc", "free_requested", "free_completed",
                                              "segment_free"}
    for e in entries:
        assert {"action", "addr", "size", "stream", "time_us", "frames"} == set(e)
    alloc = next(e for e in entries if e["action"] == "alloc")
    assert alloc["size"] == 5 * MiB  # the requested size, as torch records it
    pickle.loads(pickle.dumps(snap))  # plain data only


def test_npu_snapshot_has_no_time_and_appends_workspace() -> None:
    dev = SimDevice("npu", "", context_bytes=0)
    dev.record_history()
    dev.malloc(1000)
    dev.workspace(3 * MiB)
    snap = dev.snapshot()
    assert "allocator_settings" not in snap
    trace = snap["device_traces"][0]
    assert [e["action"] for e in trace[:3]] == ["workspace_snapshot", "segment_alloc", "alloc"]
    assert all("time_us" not in e and e["pool_id"] == (0, 0) for e in trace)
    assert snap["segments"][-1]["total_size"] == 4 * MiB  # (3 MiB + 32) rounded up to 2 MiB
    from toolkit.snapshot import normalize_snapshot

    norm = normalize_snapshot(snap)  # the snapshot module separates the workspace again
    assert norm["platform"] == "npu"
    assert [s["total_size"] for s in norm["workspace_segments"]] == [4 * MiB]
    assert [s["total_size"] for s in norm["segments"]] == [2 * MiB]


def test_expandable_segments_report_one_segment_per_mapped_run() -> None:
    dev = SimDevice("cuda", "expandable_segments:True", context_bytes=0, torch_version="2.7")
    a = dev.malloc(30 * MiB)
    dev.malloc(30 * MiB)
    dev.free(a)
    dev.empty_cache()  # unmaps page 0: the mapped range is now [20, 60) MiB
    segs = dev.snapshot()["segments"]
    assert len(segs) == 1 and segs[0]["is_expandable"] and segs[0]["total_size"] == 40 * MiB
    assert segs[0]["address"] == a + 20 * MiB


def test_ring_buffer_keeps_the_newest_entries() -> None:
    dev = SimDevice("cuda", "", context_bytes=0)
    dev.record_history(max_entries=4)
    for _ in range(5):
        dev.free(dev.malloc(1000))
    entries = dev.snapshot()["device_traces"][0]
    assert len(entries) == 4 and entries[-1]["action"] == "free_completed"
    dev.record_history(None)
    assert dev.snapshot()["device_traces"] == [[]]


def test_memory_viz_reads_simulated_snapshots() -> None:
    """PyTorch's own memory_viz (text views and the HTML plots) accepts what the simulator emits."""
    mv = pytest.importorskip("torch.cuda._memory_viz")
    snap = busy_device().snapshot()
    summary = mv.segsum(snap)
    assert "segments: 2" in summary and "total_reserved: 22.0MiB" in summary
    text = mv.trace(snap)
    assert "cudaMalloc" in text and "cudaFree" in text
    assert "<html" in mv.trace_plot(snap).lower()
    assert "<html" in mv.segment_plot(snap).lower()
    flame = mv.segments(snap, format_flamegraph=lambda lines: lines)
    assert "active_pending_free" in flame
    exp = SimDevice("cuda", "expandable_segments:True", context_bytes=0)
    exp.record_history()
    exp.free(exp.malloc(30 * MiB))
    exp.empty_cache()
    assert "segment" in mv.segsum(exp.snapshot())
    assert mv.trace(exp.snapshot())

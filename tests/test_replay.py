"""toolkit.replay: replaying recorded snapshots under their own conf (exactly) and under other confs.

The round-trip tests record a run on the simulator itself, with the paths a real trace exercises
(pending multi-stream frees, ``empty_cache``, expandable mapping, NPU workspaces, recording that starts
mid-run), and require the replay to reproduce it block for block.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import pytest

from toolkit.replay import TIMELINE_COLUMNS, replay, replay_events
from toolkit.sim import SimDevice, SimOutOfMemoryError
from toolkit.snapshot import SnapshotError, initial_state, load_snapshot, trace_events

MiB = 1 << 20


def workload(dev: SimDevice, seed: int, steps: int = 600, record_from: int = 0) -> None:
    """Random allocations on two streams, cross-stream frees and occasional empty_cache."""
    rng = random.Random(seed)
    live: list[int] = []
    for step in range(steps):
        if step == record_from:
            dev.record_history()
        r = rng.random()
        if live and r < 0.45:
            addr = live.pop(rng.randrange(len(live)))
            if rng.random() < 0.1:
                dev.record_stream(addr, 1)
            dev.free(addr)
        elif r < 0.47:
            dev.empty_cache()
        elif r < 0.5:
            dev.complete_events(1)
        elif r < 0.52 and dev.platform == "npu":
            dev.workspace(rng.randrange(1, 8 * MiB))
        else:
            size = rng.choice([rng.randrange(1, MiB), rng.randrange(MiB, 12 * MiB), rng.randrange(12 * MiB, 64 * MiB)])
            try:
                live.append(dev.malloc(size, stream=rng.choice([0, 0, 0, 2])))
            except SimOutOfMemoryError:  # recorded as an "oom" entry; free half and go on
                for addr in live[::2]:
                    dev.free(addr)
                live = live[1::2]


def layout(segments: list[dict]) -> list[tuple]:
    return [
        (s["address"], s["total_size"], s["segment_type"], s["stream"], s["is_expandable"],
         tuple((b["address"], b["size"], b["state"]) for b in s["blocks"]))
        for s in sorted(segments, key=lambda s: s["address"])
    ]


@pytest.mark.parametrize(
    ("platform", "conf", "record_from", "capacity_gib", "fraction"),
    [
        ("cuda", "", 0, 64, None),
        ("cuda", "", 250, 64, None),  # recording starts mid-run: the state at the first event is rebuilt
        ("cuda", "max_split_size_mb:40", 150, 64, None),
        ("cuda", "expandable_segments:True", 0, 64, None),
        ("cuda", "expandable_segments:True", 300, 64, None),  # mapped runs seeded mid-run
        ("cuda", "", 100, 1, None),  # a tight device: release-and-retry inside malloc
        ("cuda", "max_split_size_mb:40", 0, 1, None),  # oversize release inside malloc
        ("cuda", "garbage_collection_threshold:0.5", 100, 4, 0.3),  # GC inside malloc
        ("cuda", "garbage_collection_threshold:0.5", 100, 4, 0.2),  # GC, retries and an OOM
        ("cuda", "expandable_segments:True", 0, 1, 0.5),  # unmapping inside malloc, and an OOM
        ("npu", "", 200, 64, None),
        ("npu", "expandable_segments:True", 0, 64, None),
        ("npu", "expandable_segments:True", 200, 64, None),
    ],
)
def test_round_trip_reproduces_a_recorded_run_exactly(
    platform: str, conf: str, record_from: int, capacity_gib: int, fraction: float | None
) -> None:
    capacity = capacity_gib << 30
    rec = SimDevice(platform, conf, capacity_bytes=capacity, context_bytes=0)  # type: ignore[arg-type]
    if fraction is not None:
        rec.set_per_process_memory_fraction(fraction)
    workload(rec, seed=len(conf) + record_from + capacity_gib, record_from=record_from)
    snap = rec.snapshot()
    result = replay(snap, conf=conf if platform == "npu" else None, platform=platform,  # type: ignore[arg-type]
                    capacity_bytes=capacity, memory_fraction=fraction, segment_addresses="recorded",
                    record_history=True)
    assert result.completed and result.events_replayed == result.events_total > 100
    assert result.address_mismatches == 0 and result.segment_mismatches == 0
    final = result.device.snapshot()
    assert layout(final["segments"]) == layout(load_snapshot(pickle.dumps(snap))["segments"])
    assert result.recorded_ooms == sum(e["action"] == "oom" for e in snap["device_traces"][0])
    tl = result.timeline
    user = tl[tl["action"].isin(["alloc", "free_requested"])]
    assert (user["reserved_bytes"] == user["recorded_reserved_bytes"]).all()
    recorded = load_snapshot(pickle.dumps(snap))  # normalised: NPU workspace entries set apart
    # recorded OOMs are replayed too: the same failed request, after the same release-and-retry
    want = [(e["action"], e["addr"], e["size"]) for e in recorded["device_traces"][0]]
    got = [(e["action"], e.get("addr", e.get("device_free")), e["size"]) for e in final["device_traces"][0]]
    if record_from == 0:
        assert got == want  # the simulator's own trace, entry for entry
    result.device.check_invariants()


def test_replay_under_another_conf_maps_addresses() -> None:
    rec = SimDevice("cuda", "", context_bytes=0, torch_version="2.7")
    workload(rec, seed=3, record_from=100)
    snap = rec.snapshot()
    result = replay(snap, conf="expandable_segments:True")
    assert result.completed and result.conf == "expandable_segments:True"
    assert result.recorded_conf == ""
    assert result.address_mismatches > 0  # other addresses, but every free found its block
    final = result.device.snapshot()["segments"]
    plain = [s for s in final if not s["is_expandable"]]
    seeded = {s.address for s in initial_state(snap)}
    assert {s["address"] for s in plain} <= seeded  # the new conf makes no plain segment, only keeps old ones
    assert any(s["is_expandable"] for s in final)
    assert result.device.memory_stats()["segment.all.current"] == len(plain)
    result.device.check_invariants()
    tl = result.timeline
    assert list(tl.columns) == list(TIMELINE_COLUMNS) and len(tl) == result.events_total
    assert tl.attrs["simulated"] is True
    assert (tl["fragmentation_bytes"] == tl["reserved_bytes"] - tl["allocated_bytes"]).all()
    assert str(tl["reserved_bytes"].dtype) == "int64"
    summary = result.summary()
    assert summary["simulated"] is True and summary["peak_reserved_bytes"] == tl["reserved_bytes"].max()


def test_oom_under_the_new_conf_stops_and_keeps_the_timeline() -> None:
    rec = SimDevice("cuda", "", context_bytes=0, torch_version="2.7")
    workload(rec, seed=5)
    snap = rec.snapshot()
    peak = rec.max_memory_reserved()
    result = replay(snap, capacity_bytes=peak // 3)
    assert not result.completed and result.oom is not None
    assert "CUDA out of memory" in str(result.oom)
    tl = result.timeline
    assert len(tl) == result.events_replayed == result.oom_event + 1 < result.events_total
    assert tl["oom"].iloc[-1] and not tl["oom"].iloc[:-1].any()
    assert "OOM at event" in repr(result)


def test_replay_events_drives_a_prepared_device() -> None:
    rec = SimDevice("cuda", "", context_bytes=0, torch_version="2.7")
    workload(rec, seed=9, steps=200)
    snap = load_snapshot(pickle.dumps(rec.snapshot()))
    dev = SimDevice("cuda", "", context_bytes=0, torch_version="2.7")
    assert initial_state(snap) == []  # recorded from the start
    result = replay_events(dev, trace_events(snap))
    assert result.completed and result.device is dev and dev.memory_reserved() == rec.memory_reserved()


def test_malicious_pickle_is_refused_without_running_anything(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps({"segments": [], "device_traces": [[Evil()]]}))
    with pytest.raises(SnapshotError, match="refused"):
        replay(path)
    assert not marker.exists()


def test_bad_arguments() -> None:
    rec = SimDevice("cuda", "", context_bytes=0)
    rec.record_history()
    rec.malloc(100)
    with pytest.raises(ValueError, match="segment_addresses"):
        replay(rec.snapshot(), segment_addresses="nearby")  # type: ignore[arg-type]
    with pytest.raises(SnapshotError):
        replay("/nonexistent/dump.pickle")


def test_snapshot_at_keeps_the_state_after_each_chosen_event_in_one_pass():
    from toolkit.replay import replay
    from toolkit.snapshot import load_snapshot

    snap = load_snapshot(_trace_path_for_steps())
    full = replay(snap)
    stops = [0, 10, 1000, full.events_total - 1]
    stepped = replay(snap, snapshot_at=stops)
    assert sorted(stepped.snapshots) == stops
    timeline = stepped.timeline
    for k in stops:
        reserved = sum(seg["total_size"] for seg in stepped.snapshots[k]["segments"])
        assert reserved == timeline["reserved_bytes"].iloc[k]
    last = stepped.snapshots[stops[-1]]["segments"]
    assert [s["address"] for s in last] == [s["address"] for s in full.device.snapshot()["segments"]]


def test_replay_steps_is_a_run_for_the_inspector_and_stops_at_an_oom():
    from toolkit.replay import replay_steps
    from toolkit.core.units import GiB

    run, snaps = replay_steps(_trace_path_for_steps(), "", steps=12, capacity_bytes=int(18.2 * GiB))
    assert run.simulated and run.backend == "replay"
    assert run.status == "oom" and run.samples[-1].status == "oom"
    assert len(run.samples) == len(snaps) and sorted(snaps) == list(range(len(run.samples)))
    reserved = [s.reserved_bytes for s in run.samples]
    assert all(s.reserved_bytes <= s.reserved_peak_bytes for s in run.samples)
    assert reserved[-1] == sum(seg["total_size"] for seg in snaps[len(snaps) - 1]["segments"])
    with pytest.raises(ValueError, match="steps"):
        replay_steps(_trace_path_for_steps(), steps=0)


def _trace_path_for_steps():
    from trace_paths import REAL_TRACE, TRACES

    if TRACES is None:
        pytest.skip(f"REAL TRACE MISSING: {REAL_TRACE} (set MEMLAB_TRACES)")
    return REAL_TRACE

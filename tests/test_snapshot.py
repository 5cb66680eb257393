"""toolkit.snapshot: safe loading, schema normalisation, and state reconstruction on a real CUDA trace.

The state checks use a tiny pure-data interpreter of the trace *as recorded* (``RecordedReplay``, below),
written independently of the module: each entry's address says which block is used, the CUDA/NPU split
rule (spec 2.8) says how big it is. Replaying the real trace from ``initial_state`` must reproduce the
recorded final segments exactly, and cutting the trace at event k (so everything before k becomes
"before recording") must give back the interpreter's state at k.
"""

from __future__ import annotations

import copy
import copyreg
import gzip
import json
import os
import pickle
from bisect import bisect_right
from pathlib import Path

import pytest

from toolkit.snapshot import (
    RoundingRules,
    SeedBlock,
    SegmentSeed,
    SnapshotError,
    final_state,
    initial_state,
    load_snapshot,
    normalize_snapshot,
    reconstruct_initial_state,
    summarize,
    trace_events,
    write_snapshot,
)

from trace_paths import REAL_TRACE as REAL
from trace_paths import needs_real_trace as needs_real

DATA = Path(__file__).parent / "data"
MiB = 1 << 20


@pytest.fixture(scope="module")
def real() -> dict:
    return load_snapshot(REAL)


# ------------------------------------------------------------------------------------------ interpreter
def round_cuda(n: int) -> int:
    return max(512, -(-n // 512) * 512)


def round_npu(n: int) -> int:
    return round_cuda(n + 32)


class RecordedReplay:
    """Apply trace entries to segments of [start, size, state, requested] blocks; assert each is legal."""

    def __init__(self, seeds: list[SegmentSeed], events: list, round_fn=round_cuda) -> None:
        self.round, self.events = round_fn, events
        self.segs: dict[int, dict] = {}
        for sd in seeds:
            pend = set(sd.pending_free)
            blocks = [
                [sd.address + b.offset, b.size, "free" if not b.allocated else ("pending" if b.offset in pend else "alloc"), rq]
                for b, rq in zip(sd.blocks, sd.requested_sizes)
            ]
            self.segs[sd.address] = {"pool": sd.pool, "stream": sd.stream, "exp": sd.is_expandable, "blocks": blocks}

    def _seg_at(self, addr: int) -> dict:
        starts = sorted(self.segs)
        k = bisect_right(starts, addr) - 1
        assert k >= 0 and addr < self._end(starts[k]), f"{addr:#x} is in no segment"
        return self.segs[starts[k]]

    def _end(self, start: int) -> int:
        last = self.segs[start]["blocks"][-1]
        return last[0] + last[1]

    def _block_at(self, addr: int) -> tuple[dict, int]:
        seg = self._seg_at(addr)
        for i, b in enumerate(seg["blocks"]):
            if b[0] == addr:
                return seg, i
        raise AssertionError(f"no block starts at {addr:#x}")

    def apply(self, index: int) -> None:
        action, addr, size, stream = self.events[index]
        if action == "alloc":
            seg, i = self._block_at(addr)
            b = seg["blocks"][i]
            r = self.round(size)
            assert b[2] == "free" and b[1] >= r, f"entry {index}: alloc at {addr:#x} hits {b}"
            rest = b[1] - r
            split = rest >= 512 if (seg["pool"] == "small" or seg["exp"]) else rest > MiB
            seg["blocks"][i:i + 1] = [[addr, r, "alloc", size], [addr + r, rest, "free", 0]] if split else [[addr, b[1], "alloc", size]]
        elif action == "free_requested":
            seg, i = self._block_at(addr)
            assert seg["blocks"][i][2] == "alloc", f"entry {index}"
            seg["blocks"][i][2] = "pending"
        elif action == "free_completed":
            seg, i = self._block_at(addr)
            bl = seg["blocks"]
            assert bl[i][2] == "pending", f"entry {index}"
            bl[i][2:] = ["free", 0]
            self._merge(bl, i)
        elif action == "segment_alloc":
            assert not any(s <= addr < self._end(s) for s in self.segs)
            self.segs[addr] = {"pool": "small" if size == 2 * MiB else "large", "stream": stream, "exp": False,
                               "blocks": [[addr, size, "free", 0]]}
        elif action == "segment_free":
            seg = self.segs.pop(addr)
            assert [b[1:3] for b in seg["blocks"]] == [[size, "free"]], f"entry {index}"
        elif action == "segment_map":
            self._map(index, addr, size, stream)
        elif action == "segment_unmap":
            self._unmap(addr, size)

    @staticmethod
    def _merge(bl: list, i: int) -> None:
        if i + 1 < len(bl) and bl[i + 1][2] == "free":
            bl[i][1] += bl.pop(i + 1)[1]
        if i > 0 and bl[i - 1][2] == "free":
            bl[i - 1][1] += bl.pop(i)[1]

    def _map(self, index: int, addr: int, size: int, stream: int) -> None:
        before = next((s for s in self.segs if self._end(s) == addr and self.segs[s]["exp"]), None)
        if before is None:
            nxt = next(e for e in self.events[index:] if e[0] == "alloc")
            self.segs[addr] = {"pool": "small" if self.round(nxt[2]) <= MiB else "large", "stream": stream,
                               "exp": True, "blocks": [[addr, size, "free", 0]]}
            before = addr
        else:
            bl = self.segs[before]["blocks"]
            bl.append([addr, size, "free", 0])
            self._merge(bl, len(bl) - 1)
        after = self.segs.pop(addr + size, None)
        if after is not None:
            bl = self.segs[before]["blocks"]
            n = len(bl)
            bl.extend(after["blocks"])
            self._merge(bl, n)

    def _unmap(self, addr: int, size: int) -> None:
        seg = self._seg_at(addr)
        start = seg["blocks"][0][0]
        bl = seg["blocks"]
        i = next(i for i, b in enumerate(bl) if b[0] <= addr and addr + size <= b[0] + b[1])
        b = bl[i]
        assert b[2] == "free"
        left = [[b[0], addr - b[0], "free", 0]] if addr > b[0] else []
        right = [[addr + size, b[0] + b[1] - addr - size, "free", 0]] if b[0] + b[1] > addr + size else []
        del self.segs[start]
        for part in (bl[:i] + left, right + bl[i + 1:]):
            if part:
                self.segs[part[0][0]] = {**seg, "blocks": part}

    def seeds(self, device: int = 0) -> list[SegmentSeed]:
        out = []
        for x in sorted(self.segs):
            s = self.segs[x]
            out.append(SegmentSeed(
                address=x, size=self._end(x) - x, pool=s["pool"], stream=s["stream"], is_expandable=s["exp"],
                blocks=tuple(SeedBlock(b[0] - x, b[1], b[2] != "free") for b in s["blocks"]),
                requested_sizes=tuple(b[3] for b in s["blocks"]),
                pending_free=tuple(b[0] - x for b in s["blocks"] if b[2] == "pending"), device=device,
            ))
        return out


def replay_states(seeds, events, cuts=(), round_fn=round_cuda):
    """Replay all events; return (state at each cut index, final state)."""
    r = RecordedReplay(seeds, events, round_fn)
    at = {}
    for i in range(len(events)):
        if i in cuts:
            at[i] = r.seeds()
        r.apply(i)
    return at, r.seeds()


# ------------------------------------------------------------------------------------------ loading
@needs_real
def test_real_trace_loads_with_its_documented_shape(real):
    assert real["platform"] == "cuda"
    assert len(real["segments"]) == 516
    actions = [e["action"] for e in real["device_traces"][0]]
    assert actions.count("segment_alloc") == 289
    assert real["allocator_settings"]["expandable_segments"] is False


def evil_payloads(marker: Path):
    class SystemCall:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    class OpenFile:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    class Exec:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    return {"posix.system": SystemCall(), "io.open": OpenFile(), "builtins.exec": Exec()}


@pytest.mark.parametrize("protocol", range(6))
@pytest.mark.parametrize("name", ["posix.system", "io.open", "builtins.exec"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, protocol, name):
    marker = tmp_path / "pwned"
    payload = {"segments": [evil_payloads(marker)[name]], "device_traces": []}
    evil = tmp_path / "evil.pickle"
    evil.write_bytes(pickle.dumps(payload, protocol=protocol))
    with pytest.raises(SnapshotError) as err:
        load_snapshot(evil)
    assert str(err.value) == f"refused to load '{name}' from evil.pickle: snapshots must contain plain data only"
    assert not marker.exists()
    assert isinstance(err.value, ValueError)


def test_persistent_id_and_extension_opcodes_are_refused(tmp_path):
    marker = tmp_path / "pwned"

    class PidPickler(pickle.Pickler):
        def persistent_id(self, obj):
            return "obj-1" if obj == "secret" else None

    import io

    buf = io.BytesIO()
    PidPickler(buf, protocol=2).dump({"segments": ["secret"], "device_traces": []})
    with pytest.raises(SnapshotError, match="refused to load persistent id 'obj-1' from <bytes>"):
        load_snapshot(buf.getvalue())

    # EXT1 names a global through copyreg's extension registry: register os.system under a code
    cmd = f"touch {marker}".encode()
    data = b"\x80\x02\x82\xf1X" + len(cmd).to_bytes(4, "little") + cmd + b"\x85R."  # EXT1, str, TUPLE1, REDUCE
    copyreg.add_extension("os", "system", 0xF1)
    try:
        with pytest.raises(SnapshotError, match="refused to load 'os.system'"):
            load_snapshot(data)  # registry only: the C reader asks find_class
        assert pickle.loads(b"\x80\x02\x82\xf1.") is os.system  # now os.system sits in copyreg's cache
        with pytest.raises(SnapshotError, match="refused to load an extension-registry object"):
            load_snapshot(data)  # cached: the C reader would skip find_class, so the safe reader is used
    finally:
        copyreg.remove_extension("os", "system", 0xF1)
        copyreg.clear_extension_cache()
    assert not marker.exists()


@needs_real
def test_safe_fallback_reader_when_copyreg_cache_is_populated(real, tmp_path):
    copyreg.add_extension("collections", "OrderedDict", 0xF2)
    try:
        pickle.loads(b"\x80\x02\x82\xf2.")  # populate copyreg._extension_cache
        assert load_snapshot(REAL) == real
        marker = tmp_path / "pwned"
        evil = pickle.dumps({"segments": [evil_payloads(marker)["posix.system"]]}, protocol=4)
        with pytest.raises(SnapshotError, match="refused to load 'posix.system'"):
            load_snapshot(evil)
        assert not marker.exists()
    finally:
        copyreg.remove_extension("collections", "OrderedDict", 0xF2)
        copyreg.clear_extension_cache()


def test_reduce_or_build_on_plain_data_fails_cleanly():
    # REDUCE with a str as callable; BUILD on a list: both must fail as SnapshotError, never run anything
    for data in (b"\x80\x02X\x01\x00\x00\x00a)R.", b"\x80\x02]}b."):
        with pytest.raises(SnapshotError, match="not a plain-data pickle"):
            load_snapshot(data)


@pytest.mark.parametrize("protocol", range(6))
def test_plain_pickles_of_every_protocol_load(protocol):
    raw = json.loads((DATA / "expandable_synthetic.json").read_text())
    raw["extra_bytes"] = b"\x00\xffraw"  # protocols 0-2 spell bytes via _codecs.encode(..., 'latin1')
    raw["segments"][0]["segment_pool_id"] = (0, 0)
    got = load_snapshot(pickle.dumps(raw, protocol=protocol))
    assert got["extra_bytes"] == b"\x00\xffraw"
    assert got["segments"][0]["segment_pool_id"] == (0, 0)
    assert got["segments"] == load_snapshot(DATA / "expandable_synthetic.json")["segments"]


@needs_real
def test_wrong_files_give_one_line_errors(tmp_path):
    data = REAL.read_bytes()
    cases = {
        "empty.pickle": b"",
        "truncated.pickle": data[: len(data) // 2],
        "noise.bin": bytes(range(7, 250)),
        "not_snapshot.json": b'{"hello": 1}',
        "broken.json": b'{"segments": [',
        "int.pickle": pickle.dumps(42),
        "truncated.pickle.gz": gzip.compress(data)[:1000],
        "bad_segments.json": b'{"segments": {"a": 1}, "device_traces": []}',
        "bad_block.json": b'{"segments": [{"address": 0, "blocks": [{"size": 512, "state": "weird"}]}]}',
    }
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(SnapshotError) as err:
            load_snapshot(tmp_path / name)
        msg = str(err.value)
        assert name in msg and "\n" not in msg and len(msg) < 200, (name, msg)
    with pytest.raises(SnapshotError, match="cannot read snapshot"):
        load_snapshot(tmp_path / "missing.pickle")


# ------------------------------------------------------------------------------------------ normalising
@needs_real
def test_npu_layout_is_normalised_and_workspace_separated(real):
    npu = copy.deepcopy(load_snapshot(REAL, normalize=False))
    ws_addr, ws_size = 0x10000, 4 * MiB  # below every caching segment, so also out of address order
    for e in npu["device_traces"][0]:
        del e["time_us"]
        e["pool_id"] = [0, 0]
    npu["device_traces"][0][:0] = [
        {"action": a, "addr": ws_addr, "size": ws_size, "stream": 3, "pool_id": (0, 0)}
        for a in ("workspace_snapshot", "segment_alloc", "alloc")
    ]
    ws_seg = {**npu["segments"][0], "address": ws_addr, "total_size": ws_size, "allocated_size": 0,
              "active_size": 0, "requested_size": 0, "stream": 3,
              "blocks": [{"address": ws_addr, "size": ws_size, "requested_size": 1000, "state": "inactive", "frames": []}]}
    npu["segments"].append(ws_seg)
    del npu["allocator_settings"], npu["external_annotations"]

    got = normalize_snapshot(npu)
    assert got["platform"] == "npu"
    assert got["workspace_segments"] == [ws_seg]
    assert [e["action"] for e in got["workspace_traces"][0]] == ["workspace_snapshot", "segment_alloc", "alloc"]
    assert got["segments"] == real["segments"]
    assert trace_events(got) == trace_events(real)
    assert got["device_traces"][0][0]["pool_id"] == (0, 0)
    assert initial_state(got) == initial_state(real)
    s = summarize(got)
    assert (s["workspace_segments"], s["workspace_reserved_bytes"], s["segments"]) == (1, ws_size, 516)
    assert s["time_span_us"] is None


def test_npu_fixture_without_trace_uses_address_order(tmp_path):
    raw = json.loads((DATA / "npu_synthetic.json").read_text())
    raw["device_traces"] = []  # recorded without history: no workspace entries to go by
    got = normalize_snapshot(raw, platform="npu")
    assert [s["stream"] for s in got["workspace_segments"]] == [7]
    assert len(got["segments"]) == 1


@needs_real
def test_legacy_cuda_layouts_are_normalised(real):
    legacy = []
    for seg in copy.deepcopy(load_snapshot(REAL, normalize=False)["segments"]):
        for key in ("is_expandable", "segment_pool_id", "requested_size", "frames"):
            del seg[key]
        for b in seg["blocks"]:
            frames, requested = b.pop("frames"), b.pop("requested_size")
            del b["address"]
            if b["state"] != "inactive":
                b["history"] = [{"addr": 0, "real_size": requested, "frames": frames}]
        legacy.append(seg)
    got = normalize_snapshot(legacy)  # a bare list: what torch.cuda.memory_snapshot() returns
    assert got["device_traces"] == [] and got["platform"] == "cuda"
    want = real["segments"]
    assert len(got["segments"]) == len(want)
    for g, w in zip(got["segments"], want):
        w = {**w, "frames": [], "blocks": [
            {**b, "requested_size": b["requested_size"] if b["state"] != "inactive" else 0} for b in w["blocks"]]}
        assert g == w
    assert final_state(got) == final_state(real)


@needs_real
@pytest.mark.parametrize("name", ["s.json", "s.json.gz", "s.pickle", "s.pickle.gz"])
def test_write_then_load_round_trips(real, tmp_path, name):
    path = write_snapshot(real, tmp_path / name)
    back = load_snapshot(path)
    assert back == real
    if name == "s.pickle":  # what memory_viz reads: plain data, protocol 4, torch's keys
        raw = pickle.loads(path.read_bytes())
        assert path.read_bytes()[:2] == b"\x80\x04"
        assert {"segments", "device_traces", "allocator_settings"} <= raw.keys()


def test_npu_written_in_torch_npu_layout(tmp_path):
    snap = load_snapshot(DATA / "npu_synthetic.json")
    path = write_snapshot(snap, tmp_path / "npu.pickle")
    raw = load_snapshot(path, normalize=False)
    assert raw["segments"][-1]["address"] == snap["workspace_segments"][0]["address"]
    assert raw["device_traces"][0][0]["action"] == "workspace_snapshot"
    assert load_snapshot(path) == snap
    assert normalize_snapshot(snap) is snap  # idempotent, no copy


# ------------------------------------------------------------------------------------------ state
@needs_real
def test_seeds_cover_every_segment_at_the_first_event(real):
    seeds = initial_state(real)
    created = {e.addr for e in trace_events(real) if e.action == "segment_alloc"}
    assert {s.address for s in seeds} == {s["address"] for s in real["segments"]} - created
    assert len(seeds) == 516 - 289
    ends = [s.address + s.size for s in seeds]
    assert all(e <= nxt.address for e, nxt in zip(ends, seeds[1:]))  # ascending, disjoint
    for s in seeds:
        assert sum(b.size for b in s.blocks) == s.size
        assert all(b.size % 512 == 0 for b in s.blocks)
        free_pairs = [a for a, b in zip(s.blocks, s.blocks[1:]) if not a.allocated and not b.allocated]
        assert not free_pairs, "free space must be merged"
        assert s.pool == ("small" if s.size == 2 * MiB else "large")


@needs_real
def test_replaying_the_real_trace_from_the_seeds_reproduces_the_final_state(real):
    events = trace_events(real)
    assert events[0] == ("segment_alloc", 139821353795584, 20971520, 0)
    _, end = replay_states(initial_state(real), events)  # asserts every alloc hits a free block that fits
    assert end == final_state(real)


@needs_real
def test_cutting_the_trace_reconstructs_the_hidden_state_exactly(real):
    events = trace_events(real)
    cuts = list(range(1, len(events), 97))
    at, _ = replay_states(initial_state(real), events, cuts=set(cuts))
    rules: dict[str, int] = {}
    slack_blocks = 0
    for k in cuts:
        cut = {**real, "device_traces": [real["device_traces"][0][k:]]}
        rec = reconstruct_initial_state(cut)
        assert list(rec.seeds) == at[k], f"cut at {k}"
        for inf in rec.inferred:
            rules[inf.rule] = rules.get(inf.rule, 0) + 1
            slack_blocks += inf.size != round_cuda(inf.requested_size)
    # the pitfall is exercised: blocks allocated before the cut and freed after it, some unsplit
    assert {"next-alloc", "always-split", "unsplit-tail", "rounded"} <= rules.keys()
    assert slack_blocks > 10


def test_expandable_fixture_initial_state():
    snap = load_snapshot(DATA / "expandable_synthetic.json")
    B, S = 0x7F0000000000, 0x7F1000000000
    rec = reconstruct_initial_state(snap)
    assert list(rec.seeds) == [
        SegmentSeed(B, 40 * MiB, "large", 0, True,
                    (SeedBlock(0, 5 * MiB, True), SeedBlock(5 * MiB, 3 * MiB, True), SeedBlock(8 * MiB, 32 * MiB, False)),
                    requested_sizes=(5 * MiB - 100, 3 * MiB, 0)),
        SegmentSeed(S, 2 * MiB, "small", 0, True,
                    (SeedBlock(0, 1024, True), SeedBlock(1024, 512, True), SeedBlock(1536, 2 * MiB - 1536, False)),
                    requested_sizes=(1000, 100, 0), pending_free=(1024,)),
    ]
    assert all(i.rule == "always-split" and not i.ambiguous for i in rec.inferred)
    _, end = replay_states(list(rec.seeds), trace_events(snap))
    assert end == final_state(snap)
    assert final_state(snap)[0].pending_free == (18 * MiB,)


def test_npu_fixture_initial_state_uses_the_pad():
    snap = load_snapshot(DATA / "npu_synthetic.json")
    assert RoundingRules.from_snapshot(snap).pad_bytes == 32
    C = 0x12C040000000
    seeds = initial_state(snap)
    assert seeds == [SegmentSeed(C, 2 * MiB, "small", 0, False,
                                 (SeedBlock(0, 1024, True), SeedBlock(1024, 2 * MiB - 1024, False)),
                                 requested_sizes=(512, 0))]
    _, end = replay_states(seeds, trace_events(snap), round_fn=round_npu)
    assert end == final_state(snap)


def test_rounding_rules():
    cuda = RoundingRules()
    assert [cuda.round_request(n) for n in (1, 512, 513, 5_000_000)] == [512, 512, 1024, 5_000_192]
    assert RoundingRules(pad_bytes=32).round_request(512) == 1024
    four = RoundingRules(divisions=(4,) * 16)  # roundup_power2_divisions:4 -> 1.25 GiB steps of 256 MiB
    assert four.round_request(1200 * MiB) == 1280 * MiB
    assert four.round_request(1024 * MiB) == 1024 * MiB


def test_inconsistent_trace_is_a_clear_error():
    snap = load_snapshot(DATA / "expandable_synthetic.json")
    bad = {**snap, "device_traces": [[*snap["device_traces"][0],
                                      {"action": "segment_alloc", "addr": 0x1000, "size": 2 * MiB, "stream": 0}]]}
    with pytest.raises(SnapshotError, match="segment_alloc of 2097152 B at 0x1000"):
        initial_state(bad)


@needs_real
def test_summarize_real_trace(real):
    s = summarize(real)
    blocks = [b for seg in real["segments"] for b in seg["blocks"]]
    assert s["segments"] == 516 and s["devices"] == 1
    assert s["reserved_bytes"] == sum(seg["total_size"] for seg in real["segments"])
    assert s["allocated_bytes"] == sum(b["size"] for b in blocks if b["state"] == "active_allocated")
    assert s["inactive_bytes"] == sum(b["size"] for b in blocks if b["state"] == "inactive")
    assert s["inactive_bytes"] == s["inactive_split_bytes"] + s["inactive_unsplit_bytes"]
    assert s["events_by_action"] == {"segment_alloc": 289, "alloc": 2058, "free_requested": 1155, "free_completed": 1155}
    assert s["time_span_us"] == 295399
    assert s["simulated"] is False and s["workspace_segments"] == 0


def test_other_device_is_empty_and_import_is_pure():
    snap = load_snapshot(DATA / "npu_synthetic.json")
    assert trace_events(snap, device=1) == [] and final_state(snap, device=1) == []
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import toolkit.snapshot, sys; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("history", [False, True])
def test_simulated_npu_snapshot_keeps_workspace_apart_with_or_without_a_trace(history):
    from toolkit.sim import SimDevice
    from toolkit.snapshot import normalize_snapshot

    dev = SimDevice("npu", "", capacity_bytes=8 * 2**30)
    if history:
        dev.record_history()
    dev.malloc(3 * 2**20)
    dev.workspace(64 * 2**20)
    raw = dev.snapshot()
    raw.pop("platform", None)  # force a full normalisation, as for a file
    snap = normalize_snapshot(raw)
    assert len(snap["workspace_segments"]) == 1
    assert sum(s["total_size"] for s in snap["segments"]) == dev.memory_reserved()
    assert all(e["action"] != "workspace_snapshot" for t in snap["device_traces"] for e in t)

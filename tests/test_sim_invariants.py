"""Randomised operation sequences keep every invariant, checked after every single step.

Invariants (``SimDevice.check_invariants``): per segment the blocks tile it exactly (sum of block sizes
== segment size, addresses contiguous, links consistent); free blocks are exactly the free set; running
statistics equal what the blocks say, in particular allocated/active + inactive == reserved.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit.sim import SimDevice, SimOutOfMemoryError

KiB, MiB = 1 << 10, 1 << 20

CONFS = [
    ("cuda", ""),
    ("cuda", "expandable_segments:True"),
    ("cuda", "max_split_size_mb:40"),
    ("cuda", "max_split_size_mb:40,max_non_split_rounding_mb:64"),
    ("cuda", "roundup_power2_divisions:[1:8,4:2,>:4]"),
    ("cuda", "garbage_collection_threshold:0.6"),
    ("npu", ""),
    ("npu", "expandable_segments:True"),
    ("npu", "expandable_segments:True,base_addr_aligned_kb:4,multi_stream_lazy_reclaim:True"),
]

sizes = st.one_of(
    st.integers(1, 4 * KiB),
    st.integers(1, MiB),
    st.integers(MiB, 12 * MiB),
    st.integers(12 * MiB, 120 * MiB),
)
op = st.one_of(
    st.tuples(st.just("malloc"), sizes, st.integers(0, 2)),
    st.tuples(st.just("free"), st.integers(0, 1000), st.just(0)),
    st.tuples(st.just("free_other_stream"), st.integers(0, 1000), st.integers(1, 3)),
    st.tuples(st.just("complete"), st.integers(1, 3), st.just(0)),
    st.tuples(st.just("sync"), st.just(0), st.just(0)),
    st.tuples(st.just("empty_cache"), st.just(0), st.just(0)),
    st.tuples(st.just("workspace"), sizes, st.integers(0, 1)),
)


@pytest.mark.parametrize(("platform", "conf"), CONFS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=1, max_size=60))
def test_invariants_hold_after_every_step(platform: str, conf: str, ops: list[tuple[str, int, int]]) -> None:
    dev = SimDevice(platform, conf, capacity_bytes=600 * MiB, context_bytes=0)  # type: ignore[arg-type]
    if "garbage_collection" in conf:
        dev.set_per_process_memory_fraction(0.8)
    live: list[int] = []
    for kind, a, b in ops:
        try:
            if kind == "malloc":
                live.append(dev.malloc(a, stream=b))
            elif kind in ("free", "free_other_stream") and live:
                addr = live.pop(a % len(live))
                if kind == "free_other_stream":
                    dev.record_stream(addr, b)
                dev.free(addr)
            elif kind == "complete":
                dev.complete_events(a)
            elif kind == "sync":
                dev.synchronize()
            elif kind == "empty_cache":
                dev.empty_cache()
            elif kind == "workspace" and platform == "npu":
                dev.workspace(a, stream=b)
        except SimOutOfMemoryError:
            pass  # the state must still be consistent after a failed request
        dev.check_invariants()
    for addr in live:
        dev.free(addr)
    dev.synchronize()
    dev.empty_cache()
    dev.check_invariants()
    st_ = dev.memory_stats()
    assert st_["allocated_bytes.all.current"] == 0 and st_["active_bytes.all.current"] == 0
    if "expandable" in conf:
        assert dev.memory_reserved() == 0  # every page is free again
    else:
        assert st_["segment.all.current"] == 0


def test_invariant_checker_detects_corruption() -> None:
    dev = SimDevice("cuda", "", context_bytes=0)
    a = dev.malloc(5 * MiB)
    dev.check_invariants()
    dev.block_at(a).size += 512  # blocks no longer tile the segment
    with pytest.raises(AssertionError, match="segment"):
        dev.check_invariants()
    dev = SimDevice("cuda", "", context_bytes=0)
    dev.malloc(5 * MiB)
    dev._large.stats.allocated_bytes_cur += 1
    with pytest.raises(AssertionError, match="allocated_bytes"):
        dev.check_invariants()

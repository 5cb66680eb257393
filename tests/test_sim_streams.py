"""Several streams: record_stream, pending frees, event completion (docs/allocator.md §2.9)."""

from __future__ import annotations

from toolkit.sim import SimDevice

MiB = 1 << 20


def dev_() -> SimDevice:
    dev = SimDevice("cuda", "", context_bytes=0, torch_version="2.7")
    dev.record_history()
    return dev


def test_free_with_extra_stream_stays_pending_until_events_complete() -> None:
    dev = dev_()
    a = dev.malloc(4 * MiB)
    dev.record_stream(a, 5)
    dev.free(a)
    block = dev.block_at(a)
    assert block is not None and block.state == "active_pending_free"
    st = dev.memory_stats()
    assert st["allocated_bytes.all.current"] == 0  # allocation ends at the free request
    assert st["active_bytes.all.current"] == 4 * MiB  # but the block stays active
    assert dev.pending_free_count == 1
    b = dev.malloc(4 * MiB)  # cannot reuse the pending block
    assert b != a
    dev.complete_events(5)  # the side stream's work is done ...
    assert dev.block_at(a).state == "active_pending_free"  # ... noticed only at the next malloc
    c = dev.malloc(4 * MiB)
    assert c == a  # freed by process_events, then reused (lowest address among equal fits)
    actions = [e["action"] for e in dev.snapshot()["device_traces"][0]]
    assert actions.count("free_requested") == 1 and actions.count("free_completed") == 1
    assert actions.index("free_completed") == len(actions) - 2  # completed right before the last alloc


def test_events_complete_per_stream_in_order() -> None:
    dev = dev_()
    a, b = dev.malloc(MiB // 2), dev.malloc(MiB // 2)
    dev.record_stream(a, 1)
    dev.record_stream(b, 2)
    dev.free(a)
    dev.free(b)
    dev.complete_events(2)
    assert dev.malloc(512) == b  # b's events completed: freed at this malloc and reused at once
    assert dev.block_at(a).state == "active_pending_free"
    dev.synchronize()
    dev.malloc(512)
    assert dev.pending_free_count == 0


def test_block_used_on_two_extra_streams_needs_both() -> None:
    dev = dev_()
    a = dev.malloc(MiB)
    dev.record_stream(a, 1)
    dev.record_stream(a, 2)
    dev.record_stream(a, 0)  # its own stream: ignored
    dev.free(a)
    dev.complete_events(1)
    dev.malloc(512)
    assert dev.block_at(a).state == "active_pending_free"
    dev.complete_events(2)
    dev.malloc(512)
    assert dev.pending_free_count == 0


def test_empty_cache_waits_for_all_events() -> None:
    dev = dev_()
    a = dev.malloc(30 * MiB)
    dev.record_stream(a, 9)
    dev.free(a)
    dev.empty_cache()  # synchronize_and_free_events: frees the pending block, then returns its segment
    assert dev.memory_reserved() == 0
    assert dev.memory_stats()["num_sync_all_streams"] == 1
    dev.check_invariants()


def test_lazy_reclaim_skips_polling_until_no_block_is_found() -> None:
    dev = SimDevice("npu", "multi_stream_lazy_reclaim:True", context_bytes=0)
    a = dev.malloc(MiB // 2)
    dev.record_stream(a, 1)
    dev.free(a)
    dev.synchronize()
    dev.malloc(1000)  # fits in the segment's free tail: no polling, a stays pending
    assert dev.pending_free_count == 1
    eager = SimDevice("npu", "", context_bytes=0)
    a = eager.malloc(MiB // 2)
    eager.record_stream(a, 1)
    eager.free(a)
    eager.synchronize()
    eager.malloc(1000)
    assert eager.pending_free_count == 0

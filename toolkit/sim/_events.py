"""Several streams: ``record_stream`` and frees that complete late (docs/allocator.md §2.9).

Mixin of :class:`toolkit.sim.device.SimDevice`. A block freed after ``record_stream(addr, s)`` gets one
event per extra stream and stays *pending* (``active_pending_free``) until those events complete. The
device's work is not simulated, so the caller says when it is done: ``complete_events(stream)`` (a
stream synchronises) or ``synchronize()`` (the whole device). Like torch, completed events are only
noticed at the next ``malloc`` (``process_events``) or by ``empty_cache``/the OOM retry, which wait
for every event (``synchronize_and_free_events``, counted in ``num_sync_all_streams``).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolkit.sim._blocks import Block
    from toolkit.sim.device import SimDevice as SimDeviceT


class EventsMixin:
    def record_stream(self: SimDeviceT, address: int, stream: int) -> None:
        """``Tensor.record_stream``: the block at ``address`` is also used on ``stream``."""
        b = self._by_ptr.get(address)
        if b is None or not b.allocated:
            raise ValueError(f"invalid device pointer: {address:#x} (not an allocated block of this device)")
        if stream == b.stream:
            return
        if b.stream_uses is None:
            b.stream_uses = {stream: None}  # an ordered set
        else:
            b.stream_uses[stream] = None

    def complete_events(self: SimDeviceT, stream: int | None = None) -> None:
        """Work queued so far on ``stream`` (None: every stream) has finished on the device."""
        queues = self._events.values() if stream is None else [self._events.get(stream, ())]
        for queue in queues:
            for event in queue:
                event[1] = True

    def synchronize(self: SimDeviceT) -> None:
        """``torch.cuda.synchronize()``: every outstanding event completes (blocks return at next malloc)."""
        self.complete_events(None)

    def process_events(self: SimDeviceT) -> None:
        """Reclaim blocks whose events completed now (torch does this at the start of every malloc)."""
        if self._events:
            self._process_events()

    @property
    def pending_free_count(self: SimDeviceT) -> int:
        """Blocks freed by the caller but still waiting for stream events."""
        return sum(1 for b in self._by_ptr.values() if not b.allocated and b.event_count)

    def _insert_events(self: SimDeviceT, b: Block) -> None:
        assert b.stream_uses is not None
        for stream in b.stream_uses:
            self._events.setdefault(stream, deque()).append([b, False])
            b.event_count += 1
            self._num_events += 1
        b.stream_uses = None

    def _process_events(self: SimDeviceT) -> None:
        """Free blocks whose events completed, in per-stream FIFO order (stop at the first pending)."""
        for stream in list(self._events):
            queue = self._events[stream]
            while queue and queue[0][1]:
                b = queue.popleft()[0]
                self._num_events -= 1
                b.event_count -= 1
                if b.event_count == 0:
                    self._free_block(b)
            if not queue:
                del self._events[stream]

    def _synchronize_and_free_events(self: SimDeviceT) -> None:
        """Wait for every event and free the blocks (``synchronize_and_free_events``)."""
        self._stats.num_sync_all_streams += 1
        events = self._events
        fresh: dict[int, deque[list[Any]]] = {}
        self._events = fresh
        self._num_events = 0
        for queue in events.values():
            for b, _done in queue:
                b.event_count -= 1
                if b.event_count == 0:
                    self._free_block(b)

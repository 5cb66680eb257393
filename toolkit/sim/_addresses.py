"""Where new segments go: a driver-like virtual-address model.

Real drivers hand out addresses from the top of a large VA window downwards and reuse freed ranges
(the recorded CUDA trace in ``shared/data/traces`` shows mostly decreasing ``segment_alloc`` addresses).
The simulator does the same: reuse the most recently freed range of the same size, else bump down.
Callers who need specific addresses pass ``SimDevice(segment_address=callable)`` instead.
"""

from __future__ import annotations

from collections.abc import Callable

from toolkit.sim.constants import ROUND_LARGE_BYTES

DEFAULT_TOP_ADDRESS = 0x7F00_0000_0000  # typical top of the CUDA/ACL device VA window on x86-64 Linux
WORKSPACE_TOP_ADDRESS = 0x7FF0_0000_0000  # NPU workspace blocks: a separate range above the segments

SegmentAddressFn = Callable[[int, int], "int | None"]  # (size_bytes, stream) -> address or None


class DecreasingAddresses:
    """Bump-down address allocator with exact-size reuse of released ranges."""

    __slots__ = ("_next", "_freed")

    def __init__(self, top: int = DEFAULT_TOP_ADDRESS) -> None:
        self._next = top
        self._freed: dict[int, list[int]] = {}

    def take(self, size: int, align: int = ROUND_LARGE_BYTES) -> int:
        """Address for a new range of ``size`` bytes, aligned to the largest power of two dividing
        ``align`` (at least 2 MiB: a 20 MiB page size gives 4 MiB alignment, 1 GiB pages 1 GiB)."""
        align = max(align & -align, ROUND_LARGE_BYTES)
        reuse = self._freed.get(size)
        if reuse:
            for i in range(len(reuse) - 1, -1, -1):
                if reuse[i] % align == 0:
                    return reuse.pop(i)
        address = (self._next - size) & ~(align - 1)
        if address <= 0:
            raise MemoryError("simulated virtual address space exhausted")
        self._next = address
        return address

    def give_back(self, address: int, size: int) -> None:
        """A released range becomes reusable for a later range of the same size."""
        self._freed.setdefault(size, []).append(address)

    def avoid(self, address: int, size: int) -> None:
        """Keep future ranges clear of ``[address, address + size)`` (segments seeded by the caller)."""
        if address < self._next:
            self._next = address

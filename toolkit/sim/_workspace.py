"""The NPU workspace allocator: one cached block per stream for operator workspaces.

torch_npu keeps op workspaces outside the caching allocator (``NPUWorkspaceAllocator.cpp``): each
stream owns one ``aclrtMalloc``'d block that only grows — a bigger request frees it and allocates
``ceil((n + 32) / 2 MiB) * 2 MiB`` — and every block is released by ``empty_cache`` and by the
caching allocator's last-resort retry. Its memory is not in ``memory_stats()``/``memory_reserved()``,
so vLLM counts it as "non-torch" memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolkit.sim.constants import NPU_PAD_BYTES, ROUND_LARGE_BYTES, WORKSPACE_ROUND_BYTES
from toolkit.sim.oom import SimOutOfMemoryError, npu_workspace_oom_message

if TYPE_CHECKING:
    from toolkit.sim.device import SimDevice as SimDeviceT


class WorkspaceBlock:
    __slots__ = ("address", "size", "requested")

    def __init__(self, address: int, size: int, requested: int) -> None:
        self.address = address
        self.size = size
        self.requested = requested


def workspace_block_size(nbytes: int) -> int:
    """Size of the block that serves a workspace request: ``(n + 32)`` rounded up to 2 MiB."""
    return -(-(nbytes + NPU_PAD_BYTES) // WORKSPACE_ROUND_BYTES) * WORKSPACE_ROUND_BYTES


class WorkspaceCache:
    """Per-stream workspace blocks and their device bytes (the device does the memory accounting)."""

    __slots__ = ("blocks", "reserved_bytes", "peak_reserved_bytes")

    def __init__(self) -> None:
        self.blocks: dict[int, WorkspaceBlock] = {}
        self.reserved_bytes = 0
        self.peak_reserved_bytes = 0

    def fits(self, nbytes: int, stream: int) -> WorkspaceBlock | None:
        """The stream's block if it already serves ``nbytes`` (no device call needed)."""
        b = self.blocks.get(stream)
        if b is not None and b.size >= nbytes + NPU_PAD_BYTES:
            return b
        return None

    def drop(self, stream: int) -> WorkspaceBlock | None:
        """Forget the stream's block (the caller returns its memory to the device)."""
        b = self.blocks.pop(stream, None)
        if b is not None:
            self.reserved_bytes -= b.size
        return b

    def add(self, stream: int, block: WorkspaceBlock) -> None:
        self.blocks[stream] = block
        self.reserved_bytes += block.size
        self.peak_reserved_bytes = max(self.peak_reserved_bytes, self.reserved_bytes)


class WorkspaceMixin:
    """The device-side calls of the NPU workspace allocator (mixin of ``SimDevice``)."""

    def workspace(self: SimDeviceT, nbytes: int, stream: int = 0) -> int:
        """NPU op workspace of ``nbytes`` on ``stream`` (one growing cached block per stream).

        Its memory is outside ``memory_stats()``/``memory_reserved()`` and shows up as non-torch
        memory in ``mem_get_info()``. Returns the workspace address.
        """
        if self.platform != "npu":
            raise ValueError(
                "the workspace allocator exists on NPU only (platform='npu'); on CUDA, library workspaces "
                "come from the caching allocator: use malloc()"
            )
        if nbytes <= 0:
            return 0
        ws = self._ws
        b = ws.fits(nbytes, stream)
        if b is not None:
            b.requested = nbytes
            return b.address
        size = workspace_block_size(nbytes)
        old = ws.drop(stream)
        if old is not None:
            self._release_workspace_block(old)
        rt = self._rt
        if rt is not None:
            # AclrtMallocAlign32(size, HUGE_ONLY) (NPUWorkspaceAllocator.cpp:141-146) through the driver
            va = rt.malloc(size, "HUGE_ONLY")
            if va is None:
                self.empty_cache()
                va = rt.malloc(size, "HUGE_ONLY")
            if va is None:
                report = self._oom_report(nbytes, size, size, source="workspace_allocator")
                raise SimOutOfMemoryError(npu_workspace_oom_message(report), report)
            address = self._ws_addresses.take(size, ROUND_LARGE_BYTES)
            self._ws_va[address] = va
            ws.add(stream, WorkspaceBlock(address, size, nbytes))
            return address
        if self.device_used_bytes + size > self.capacity_bytes:
            self.empty_cache()  # upstream: empty the workspace cache, then the caching allocator's
            if self.device_used_bytes + size > self.capacity_bytes:
                report = self._oom_report(nbytes, size, size, source="workspace_allocator")
                raise SimOutOfMemoryError(npu_workspace_oom_message(report), report)
        address = self._ws_addresses.take(size, ROUND_LARGE_BYTES)
        ws.add(stream, WorkspaceBlock(address, size, nbytes))
        return address

    def _release_workspace_block(self: SimDeviceT, old: WorkspaceBlock) -> None:
        """aclrtFree of a workspace block (through the driver when it is modelled)."""
        self._ws_addresses.give_back(old.address, old.size)
        if self._rt is not None:
            self._rt.free(self._ws_va.pop(old.address))

    def _empty_workspace(self: SimDeviceT) -> None:
        for stream in list(self._ws.blocks):
            old = self._ws.drop(stream)
            if old is not None:
                self._release_workspace_block(old)

    @property
    def workspace_bytes(self: SimDeviceT) -> int:
        """Device bytes held by the NPU workspace allocator (0 on CUDA)."""
        return self._ws.reserved_bytes

"""Request rounding and split rules of the caching allocator, as far as a recorded trace needs them.

Used to derive the real size of a block whose trace entries only carry the requested size. Follows
docs/allocator.md §2.3-2.8 (CUDACachingAllocator.cpp ``round_size``/``should_split``;
torch_npu adds a 32-byte pad before rounding). The simulator has the full model; this module only needs
the rules that decide a block's size from the request and the free block it was carved from; the
arithmetic itself is the simulator's (``toolkit.sim.rounding``), so both always agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from toolkit.sim.constants import LARGE_BUFFER_BYTES, NPU_PAD_BYTES
from toolkit.sim.rounding import is_small, round_size

LARGE_SPLIT_SLACK_BYTES = 1024 * 1024  # large-pool blocks are split only when the rest is > 1 MiB
DEFAULT_NON_SPLIT_ROUNDING_BYTES = LARGE_BUFFER_BYTES


@dataclass(frozen=True, slots=True)
class RoundingRules:
    """How a request becomes a block size, and which pool it lands in.

    ``round_request(5_000_000) == 5_000_192`` (CUDA, no options); with the NPU pad
    ``round_request(512) == 1024``.
    """

    pad_bytes: int = 0
    divisions: tuple[int, ...] = (0,) * 16  # roundup_power2_divisions per interval (spec 2.4)
    max_split_bytes: int | None = None  # None = unlimited (no oversize blocks)
    max_non_split_rounding_bytes: int = DEFAULT_NON_SPLIT_ROUNDING_BYTES

    def round_request(self, requested_bytes: int) -> int:
        return round_size(requested_bytes, self.divisions, self.pad_bytes)

    def pool_of(self, rounded_bytes: int) -> str:
        return "small" if is_small(rounded_bytes) else "large"

    def is_oversize(self, rounded_bytes: int) -> bool:
        return self.max_split_bytes is not None and rounded_bytes >= self.max_split_bytes

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any]) -> RoundingRules:
        """Rules recorded in ``allocator_settings`` (CUDA) plus the pad inferred from the final blocks.

        ``allocator_settings`` holds the *last* settings string; a conf changed at run time mid-trace
        cannot be seen. The pad is read off blocks that are always split exactly (small pool or
        expandable): size == round(requested) means no pad, size == round(requested + 32) means the NPU
        pad; without such evidence the flavour decides (NPU: 32, CUDA: 0).
        """
        settings = snapshot.get("allocator_settings") or {}
        divisions: tuple[int, ...] = (0,) * 16
        table = settings.get("roundup_power2_divisions")
        if isinstance(table, Mapping) and table:
            ordered = [int(v) for _, v in sorted(table.items(), key=lambda kv: int(kv[0]))]
            divisions = tuple((ordered + [0] * 16)[:16])
        max_split = settings.get("max_split_size")
        if not isinstance(max_split, int) or max_split <= 0 or max_split >= 2**62:
            max_split = None  # SIZE_MAX is reported as -1 after the int64 cast
        default_pad = NPU_PAD_BYTES if snapshot.get("platform") == "npu" else 0
        pad = _infer_pad(snapshot.get("segments", ()), divisions, default_pad)
        return cls(pad_bytes=pad, divisions=divisions, max_split_bytes=max_split)


def _infer_pad(segments: Any, divisions: tuple[int, ...], default: int) -> int:
    votes = {0: 0, NPU_PAD_BYTES: 0}
    for seg in segments:
        if seg.get("segment_type") != "small" and not seg.get("is_expandable"):
            continue
        for b in seg["blocks"]:
            if b["state"] == "inactive" or not b.get("requested_size"):
                continue
            for pad in votes:
                if RoundingRules(pad_bytes=pad, divisions=divisions).round_request(b["requested_size"]) == b["size"]:
                    votes[pad] += 1
    if votes[0] != votes[NPU_PAD_BYTES]:
        return max(votes, key=votes.__getitem__)
    return default

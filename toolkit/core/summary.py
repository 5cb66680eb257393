"""The one summary of a run: what every table, the report, the figure titles and the inspector call
"peak reserved", "OOM at", "retries". Defined once so that no two views disagree.

Bytes are ints, maxima over every rank and request. Rules:
- ``peak_reserved_bytes``: the highest reserved figure seen, counting the per-request peak
  (``reserved_peak_bytes``, peak stats are reset before each request) and the value after the request.
- ``oom_at_request``: the first request whose sample says ``oom``; when the run ended ``oom`` without such a
  sample (the engine died before the probe answered), the request after the last one recorded, since
  requests are sent one at a time in order; None when the run never ran out of memory.
- ``peak_driver_cached_bytes``: the most the Ascend driver held in its devmm caches (part of non-torch; 0 on
  CUDA and on real devices, which cannot see it: docs/ascend-memory-stack.md).
- ``alloc_retries``: ``num_alloc_retries`` is cumulative, so the largest value seen.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from toolkit.core.records import Run


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What one run shows, in numbers (see the module docstring for each rule)."""

    name: str
    conf: str
    effective_conf: str | None
    simulated: bool
    status: str
    requests: int
    requests_served: int
    oom_at_request: int | None
    peak_reserved_bytes: int
    peak_allocated_bytes: int
    peak_non_torch_bytes: int
    peak_driver_cached_bytes: int
    peak_device_used_bytes: int
    peak_fragmentation_bytes: int
    peak_inactive_split_bytes: int
    max_segments: int
    alloc_retries: int
    first_reserved_bytes: int
    last_reserved_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def oom_at_request(run: Run) -> int | None:
    """The request at which the run first ran out of memory (None: never); rule in the module docstring."""
    ooms = [s.request_index for s in run.samples if s.status == "oom"]
    if ooms:
        return min(ooms)
    if run.status == "oom":
        return max((s.request_index for s in run.samples), default=-1) + 1
    return None


def summarize_run(run: Run) -> RunSummary:
    """The summary of ``run`` (all ranks)."""
    s = run.samples
    r0 = run.samples_of_rank(run.ranks[0]) if s else ()
    return RunSummary(
        name=run.name,
        conf=run.conf or "",
        effective_conf=run.effective_conf,
        simulated=run.simulated,
        status=run.status,
        requests=len({x.request_index for x in s}),
        requests_served=run.requests_served,
        oom_at_request=oom_at_request(run),
        peak_reserved_bytes=max((max(x.reserved_peak_bytes, x.reserved_bytes) for x in s), default=0),
        peak_allocated_bytes=max((max(x.allocated_peak_bytes, x.allocated_bytes) for x in s), default=0),
        peak_non_torch_bytes=max((x.non_torch_bytes for x in s), default=0),
        peak_driver_cached_bytes=max((x.driver_cached_bytes for x in s), default=0),
        peak_device_used_bytes=max((x.device_used_bytes for x in s), default=0),
        peak_fragmentation_bytes=max((x.reserved_bytes - x.allocated_bytes for x in s), default=0),
        peak_inactive_split_bytes=max((x.inactive_split_bytes for x in s), default=0),
        max_segments=max((x.segment_count for x in s), default=0),
        alloc_retries=max((x.alloc_retries for x in s), default=0),
        first_reserved_bytes=r0[0].reserved_bytes if r0 else 0,
        last_reserved_bytes=r0[-1].reserved_bytes if r0 else 0,
    )

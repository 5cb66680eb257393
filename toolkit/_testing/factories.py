"""Runs and allocator states with known numbers, shared by the tests and the benchmarks."""

from __future__ import annotations


from toolkit.core.records import MemorySample, Run
from toolkit.core.units import GiB, MiB


def make_run(
    n: int = 10,
    *,
    ranks: tuple[int, ...] = (0,),
    oom_at: int | None = None,
    simulated: bool = True,
    conf: str | None = "expandable_segments:True",
    name: str = "run-a",
    scale: int = 1,
    capacity: int = 64 * GiB,
    util: float | None = 0.9,
) -> Run:
    """A run whose numbers are simple functions of (request, rank), so tests can predict every value."""
    samples = []
    for i in range(n if oom_at is None else oom_at + 1):
        for r in ranks:
            allocated = (10 * GiB + i * 100 * MiB + r * 7 * MiB) * scale
            reserved = allocated + (i % 3) * 64 * MiB + 32 * MiB
            failed = oom_at is not None and i == oom_at
            samples.append(MemorySample(
                request_index=i, request_id=f"req-{i}", rank=r, started_at_ns=1_000_000 * i,
                duration_ns=(20 + i) * 1_000_000, input_name=f"img{i}.jpg", image_width_px=4032,
                image_height_px=3024, resized_width_px=1024, resized_height_px=768, visual_tokens=1000 + i,
                prompt_tokens=1030 + i, output_tokens=64, allocated_bytes=allocated,
                allocated_peak_bytes=allocated + 200 * MiB, reserved_bytes=reserved,
                reserved_peak_bytes=reserved + 10 * MiB, active_bytes=allocated,
                inactive_split_bytes=(i % 3) * 16 * MiB, device_used_bytes=reserved + GiB + i * MiB,
                device_total_bytes=capacity, non_torch_bytes=GiB + i * MiB, segment_count=20 + i,
                alloc_retries=i // 4, num_ooms=1 if failed else 0, status="oom" if failed else "ok",
                message="NPU out of memory. Tried to allocate 2.00 GiB" if failed else None,
            ))
    return Run(name=name, backend="sim" if simulated else "npu", platform="npu", model="Qwen/Qwen3-VL-8B-Instruct",
               conf=conf, effective_conf=conf or "", device_capacity_bytes=capacity, simulated=simulated,
               engine_args={} if util is None else {"gpu_memory_utilization": util},
               status="oom" if oom_at is not None else "ok", samples=tuple(samples))


def sim_snapshot():
    """A small simulated NPU allocator state with known blocks (allocated, free, a workspace block)."""
    from toolkit.sim import SimDevice

    dev = SimDevice("npu", "", capacity_bytes=8 * GiB, context_bytes=0)
    # with history the normaliser tells the workspace allocator's segments apart by their trace entries
    dev.record_history("all")
    a = dev.malloc(3 * MiB)
    b = dev.malloc(5 * MiB)
    c = dev.malloc(100 * 1024)
    big = dev.malloc(40 * MiB)
    dev.free(b)
    dev.workspace(4 * MiB)
    return dev, dev.snapshot(), (a, b, c, big)

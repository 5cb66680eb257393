"""The seed scenario (vllm-ascend PR #5855) as one function: Qwen3-VL-8B on two 64 GiB NPUs, photos of
many sizes sent one by one, under several allocator confs. Everything here is simulated and labelled so.

The PR's engine: ``LLM(model=Qwen3-VL-8B-Instruct, max_model_len=65536, max_num_seqs=8,
max_num_batched_tokens=32768, gpu_memory_utilization=0.95, tensor_parallel_size=2)``,
``SamplingParams(max_tokens=1024)``, one chat request per photo, on vLLM v0.13.0 (before vllm-ascend
added ``expandable_segments:True`` by default, so the allocator gets exactly the conf the user set).

Confs compared by default:

* ``""`` -- the allocator's defaults (what the PR's author ran into);
* ``expandable_segments:True`` -- the PR's fix;
* ``max_split_size_mb:256`` -- the conf vllm-ascend's docs suggested before (issue #4246);
* ``garbage_collection_threshold:0.8`` with a memory fraction of 1.0 -- garbage collection only acts when
  a per-process memory fraction is set (docs/allocator.md §2.12), and vLLM sets none, so on its own this conf
  changes nothing; the scenario also calls ``set_per_process_memory_fraction(1.0)`` in the worker, which
  enables it without lowering the limit. 0.8 of 64 GiB is below what vLLM reserves after allocating the KV
  cache, so the collector runs on every allocation that misses the cache.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.core.records import Run
from toolkit.core.summary import summarize_run
from toolkit.core.units import GiB, format_bytes

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

SEED_MODEL = "Qwen/Qwen3-VL-8B-Instruct"
SEED_ENGINE_ARGS: dict[str, Any] = dict(tensor_parallel_size=2, max_model_len=65536, max_num_seqs=8,
                                        max_num_batched_tokens=32768, gpu_memory_utilization=0.95)
SEED_DEVICE_BYTES = 64 * GiB  # Atlas 800I A2 class (Ascend 910B, 64 GB HBM)
SEED_MAX_TOKENS = 1024


@dataclass(frozen=True, slots=True)
class ScenarioConf:
    """One allocator setting to compare: the conf string and, optionally, a per-process memory fraction."""

    conf: str
    memory_fraction: float | None = None
    label: str | None = None

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        base = self.conf or "default"
        return base if self.memory_fraction is None else f"{base} (fraction {self.memory_fraction:g})"


SEED_CONFS: tuple[ScenarioConf, ...] = (
    ScenarioConf(""),
    ScenarioConf("expandable_segments:True"),
    ScenarioConf("max_split_size_mb:256"),
    ScenarioConf("garbage_collection_threshold:0.8", memory_fraction=1.0),
)


@dataclass(frozen=True, slots=True)
class ConfSummary:
    """What one conf's run shows (bytes are ints; per rank 0, ranks are symmetric)."""

    conf: str
    label: str
    status: str
    requests_sent: int
    requests_served: int
    oom_at_request: int | None
    peak_reserved_bytes: int
    peak_non_torch_bytes: int
    peak_driver_cached_bytes: int
    peak_device_used_bytes: int
    max_inactive_split_bytes: int
    first_reserved_bytes: int
    last_reserved_bytes: int
    alloc_retries: int
    kv_cache_bytes: int
    run_path: str | None
    seconds: float

    @classmethod
    def of(cls, sc: ScenarioConf, run: Run, sent: int, run_path: str | None, seconds: float) -> ConfSummary:
        s = summarize_run(run)
        return cls(
            conf=sc.conf, label=sc.name, status=run.status, requests_sent=sent,
            requests_served=s.requests_served, oom_at_request=s.oom_at_request,
            peak_reserved_bytes=s.peak_reserved_bytes, peak_non_torch_bytes=s.peak_non_torch_bytes,
            peak_driver_cached_bytes=s.peak_driver_cached_bytes,
            peak_device_used_bytes=s.peak_device_used_bytes, max_inactive_split_bytes=s.peak_inactive_split_bytes,
            first_reserved_bytes=s.first_reserved_bytes, last_reserved_bytes=s.last_reserved_bytes,
            alloc_retries=s.alloc_retries,
            kv_cache_bytes=int(run.engine_args.get("kv_cache_bytes", 0)), run_path=run_path, seconds=seconds)


@dataclass(frozen=True, repr=False)  # the runs are large: repr is the summary table
class ScenarioResult:
    """Runs and a per-conf summary of the seed scenario. Simulated: every view says so."""

    runs: dict[str, Run]
    summaries: tuple[ConfSummary, ...]
    photos: tuple[Path, ...]
    out_dir: Path
    engine_args: dict[str, Any] = field(default_factory=dict)
    simulated: bool = True

    def table(self) -> pd.DataFrame:
        """One row per conf; byte columns are ints (format them with ``toolkit.core.units.format_bytes``)."""
        import pandas as pd

        cols = ["label", "status", "requests_served", "requests_sent", "oom_at_request", "peak_reserved_bytes",
                "peak_non_torch_bytes", "peak_driver_cached_bytes", "peak_device_used_bytes", "max_inactive_split_bytes",
                "alloc_retries",
                "kv_cache_bytes"]
        frame = pd.DataFrame([{c: getattr(s, c) for c in cols} for s in self.summaries], columns=cols)
        frame.attrs["simulated"] = True
        return frame

    def format_table(self) -> str:
        """The summary as aligned text, labelled simulated."""
        head = ("conf", "served", "OOM at", "peak reserved", "peak non-torch", "driver cache", "peak used",
                "max inactive split", "retries")
        rows = [head] + [
            (s.label, f"{s.requests_served}/{s.requests_sent}",
             "-" if s.oom_at_request is None else str(s.oom_at_request), format_bytes(s.peak_reserved_bytes),
             format_bytes(s.peak_non_torch_bytes), format_bytes(s.peak_driver_cached_bytes),
             format_bytes(s.peak_device_used_bytes),
             format_bytes(s.max_inactive_split_bytes), str(s.alloc_retries))
            for s in self.summaries]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
        return "[simulated] seed scenario (vllm-ascend PR #5855)\n" + "\n".join(lines)

    def __str__(self) -> str:
        return self.format_table()

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return "<p><b>[simulated]</b> seed scenario (vllm-ascend PR #5855)</p>" + self.table().to_html(index=False)


def _run_conf(sc: ScenarioConf, photos: Sequence[Path], path: Path, seed: int, max_tokens: int,
              progress: bool, kwargs: dict[str, Any]) -> tuple[Run, ConfSummary]:
    """One conf of the seed scenario: a fresh simulated engine, every photo (a picklable task)."""
    from toolkit.engines.sim import SimEngine

    started = time.perf_counter()
    engine = SimEngine(SEED_MODEL, conf=sc.conf, memory_fraction=sc.memory_fraction, seed=seed, **kwargs)
    path.unlink(missing_ok=True)  # the scenario owns out_dir/runs: a rerun replaces its runs
    # no per-request snapshots: four confs x hundreds of photos would hold them all for a summary table
    # (watch() or SimEngine.run_images record them for the inspector)
    run = engine.run_images(list(photos), max_tokens=max_tokens, progress=progress, run_path=path, name=sc.name,
                            snapshots=False)
    return run, ConfSummary.of(sc, run, len(photos), str(path), time.perf_counter() - started)


def _run_conf_task(args: tuple[Any, ...]) -> tuple[Run, ConfSummary]:
    return _run_conf(*args)


def seed_scenario(n_photos: int = 300, confs: Sequence[ScenarioConf | str] = SEED_CONFS,
                  out_dir: str | Path | None = None, *, seed: int = 0, max_tokens: int = SEED_MAX_TOKENS,
                  progress: bool = False, executor: Executor | None = None,
                  **engine_kwargs: Any) -> ScenarioResult:
    """Run the seed scenario: generate (or reuse) the photo set, then one simulated engine per conf.

    Args:
        n_photos: photos in the set (seeded, mixed sizes: ``toolkit.workload.photos``).
        confs: ``ScenarioConf``s or plain conf strings.
        out_dir: photos go to ``out_dir/photos`` (reused if present), runs to ``out_dir/runs/<n>.jsonl``
            (replaced on a rerun); None: a new temporary folder.
        executor: run one conf per task on this ``concurrent.futures.Executor`` (a process pool, or
            Dask's ``Client.get_executor()``); None: one after the other in this process (the default).
            Each conf is an independent seeded engine, so the runs are the same either way (only the
            ``seconds`` of each summary differ); per-request progress bars stay off in the workers.
        engine_kwargs: override ``SimEngine`` arguments (e.g. ``device_capacity_bytes``, ``workspace``).
    """
    from toolkit.workload.photos import generate_photo_set

    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="ascend-memlab-seed-"))
    photos = generate_photo_set(out / "photos", n_photos, seed=seed)
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = dict(SEED_ENGINE_ARGS, device_capacity_bytes=SEED_DEVICE_BYTES, platform="npu")
    kwargs.update(engine_kwargs)
    runs: dict[str, Run] = {}
    summaries = []
    scs = [ScenarioConf(c) if isinstance(c, str) else c for c in confs]
    paths = [runs_dir / f"{i}-{''.join(ch if ch.isalnum() else '_' for ch in sc.name)}.jsonl"
             for i, sc in enumerate(scs)]
    if executor is None:
        done = [_run_conf(sc, photos, path, seed, max_tokens, progress, kwargs) for sc, path in zip(scs, paths)]
    else:
        from toolkit.replay.sweep import map_tasks

        done = map_tasks(_run_conf_task, [(sc, tuple(photos), path, seed, max_tokens, False, kwargs)
                                          for sc, path in zip(scs, paths)],
                         executor, progress=progress, desc="seed scenario confs")
    for sc, (run, summary) in zip(scs, done):
        runs[sc.name] = run
        summaries.append(summary)
    args = dict(SEED_ENGINE_ARGS, **{k: v for k, v in engine_kwargs.items() if isinstance(v, (int, float, str))})
    return ScenarioResult(runs=runs, summaries=tuple(summaries), photos=tuple(photos), out_dir=out,
                          engine_args=args)

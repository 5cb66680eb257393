"""Replay sweeps (recordings x confs) in parallel through any ``concurrent.futures.Executor`` (simulated).

One task replays one device trace of one recording under one conf and returns a small dict (the
replay's ``summary()`` plus its fidelity line), so tasks and results pickle cheaply::

    rows = sweep_replays(["a.pickle", "b.pickle"], [None, "expandable_segments:True"])
    # default: a ProcessPoolExecutor over every local core; any Executor works unchanged, e.g. Dask:
    #   from dask.distributed import Client; rows = sweep_replays(paths, confs, executor=Client().get_executor())

Results come back in task order (sources outer, confs inner) whatever order the workers finish in, and
equal the serial sweep's (``executor=SerialExecutor()``): each replay is deterministic and independent.
A source is a path (it must be readable where the task runs: local pools and a LocalCluster share the
file system) or the snapshot's bytes. Pure: no torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from toolkit.core.errors import ToolkitError

T = TypeVar("T")
R = TypeVar("R")


class SerialExecutor(Executor):
    """An Executor that runs each task in the calling thread at ``submit`` (the serial baseline)."""

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:  # type: ignore[override]
        future: Future[R] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future, as a pool does
            future.set_exception(exc)
        return future


@dataclass(frozen=True)
class ReplayTask:
    """One replay: picklable (a path string or bytes, a conf string, plain options)."""

    source: str | bytes
    conf: str | None = None
    device: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return Path(self.source).name if isinstance(self.source, str) else f"<{len(self.source)} bytes>"


def run_replay_task(task: ReplayTask) -> dict[str, Any]:
    """Replay one task and reduce it to a summary row (runs in the worker)."""
    from toolkit.replay._replayer import replay

    result = replay(task.source, conf=task.conf, device=task.device, **task.options)
    fid = result.fidelity()
    return {
        "source": task.name,
        "device": task.device,
        "asked_conf": task.conf,
        **result.summary(),
        "exact": fid.exact,
        "allocs_placed": fid.allocs_placed,
        "allocs": fid.allocs,
        "reserved_mismatches": fid.reserved_mismatches,
        "fidelity": fid.line(),
    }


def map_tasks(fn: Callable[[T], R], tasks: Sequence[T], executor: Executor | None = None, *,
              progress: bool = True, desc: str = "sweep") -> list[R]:
    """``[fn(t) for t in tasks]`` through ``executor`` (None: a process pool over all local cores).

    Only ``submit`` and ``concurrent.futures.as_completed`` are used, which is what Dask's and Ray's
    executors provide. A progress bar (tqdm) counts finished tasks; it stays off when ``progress`` is
    False or stderr is not a terminal. Results are in task order.
    """
    if not tasks:
        return []
    own = executor is None
    if own:
        workers = min(len(tasks), os.cpu_count() or 1)
        executor = SerialExecutor() if workers == 1 else ProcessPoolExecutor(max_workers=workers)
    assert executor is not None
    try:
        futures = {executor.submit(fn, t): i for i, t in enumerate(tasks)}
        out: list[Any] = [None] * len(tasks)
        bar = _bar(len(tasks), progress, desc)
        try:
            for fut in as_completed(futures):
                out[futures[fut]] = fut.result()
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return out
    finally:
        if own:
            executor.shutdown(wait=True, cancel_futures=True)


def sweep_replays(sources: Iterable[str | os.PathLike[str] | bytes], confs: Iterable[str | None] = (None,), *,
                  devices: Iterable[int] = (0,), executor: Executor | None = None, progress: bool = True,
                  **replay_options: Any) -> list[dict[str, Any]]:
    """Replay every source x conf (x device) in parallel; one summary dict per replay, in task order.

    ``confs``: conf strings (None: the recorded conf). ``replay_options`` go to every ``replay`` call
    (``platform``, ``capacity_bytes``, ``torch_version`` ...; plain values only, they travel to the workers).
    """
    tasks = []
    for src in sources:
        if not isinstance(src, (bytes, str, os.PathLike)):
            raise ToolkitError(f"a sweep source is a path or the snapshot's bytes, not {type(src).__name__}")
        source = bytes(src) if isinstance(src, bytes) else os.fspath(src)
        for conf in confs:
            for d in devices:
                tasks.append(ReplayTask(source, conf, d, dict(replay_options)))
    return map_tasks(run_replay_task, tasks, executor, progress=progress, desc="replays")


def _bar(total: int, progress: bool, desc: str) -> Any:
    """A tqdm bar on a terminal, else None (notebooks and logs get no bar noise)."""
    if not progress:
        return None
    from tqdm import tqdm  # the plain bar: tqdm.auto would pull ipywidgets into a pure layer

    return tqdm(total=total, desc=desc, unit="task", disable=None)  # disable=None: off when not a TTY


__all__ = ["ReplayTask", "SerialExecutor", "map_tasks", "run_replay_task", "sweep_replays"]

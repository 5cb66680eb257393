"""The per-request loop every engine shares: one request at a time, each sample on disk as it arrives.

Why one loop: the guarantees users rely on -- a run that dies (out of memory, dead engine, Ctrl-C) keeps
every sample recorded before it, and ends with the status and the request where it stopped -- must not
differ between the simulated and the real engines.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from toolkit.core.errors import EngineError
from toolkit.core.records import (
    MemoryRunWriter,
    RequestResult,
    Run,
    RunStatus,
    RunWriter,
)
from toolkit.core.units import format_bytes


def run_path_for(header: Run, run_path: str | os.PathLike[str] | None, run_dir: Path | None) -> Path | None:
    """The run file: ``run_path`` if given, else ``run_dir/<name>-<start>.jsonl``, else None (in memory)."""
    if run_path is not None:
        return Path(run_path)
    if run_dir is None:
        return None
    path = run_dir / f"{header.name}-{header.started_at_ns}.jsonl"
    if path.parent != run_dir or header.name in ("", ".", "..") or "/" in header.name or "\\" in header.name:
        # a run's name becomes a file name: it must stay in run_dir (``--name ../..`` must not escape it)
        raise EngineError(f"run name {header.name[:60]!r} is not a plain file name: it would write outside "
                          f"{run_dir}; choose a name without '/' or '..'")
    return path


def run_requests(
    send: Callable[[Any], RequestResult],
    items: Iterable[Any],
    header: Run,
    *,
    path: Path | None,
    total: int | None,
    progress: bool,
    desc: str,
    on_result: Callable[[RequestResult], None] | None = None,
) -> Run:
    """Call ``send(item)`` for each item, appending its samples; stop at the first non-ok request.

    The run file (if any) is appended and flushed per request; an exception or an interrupt finishes the
    run as ``error``/``interrupted`` with every earlier sample kept, then propagates. ``on_result`` is
    called with each request's result once its samples are safe (live figures, snapshot recorders).
    """
    writer: RunWriter | MemoryRunWriter = RunWriter(path, header) if path is not None else MemoryRunWriter(header)
    status: RunStatus = "ok"
    message = None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, unit="req")
    try:
        for item in items:
            result = send(item)
            writer.append(*result.samples)
            if on_result is not None:
                on_result(result)
            if bar is not None:
                if result.samples:
                    s = result.samples[0]
                    bar.set_postfix_str(f"reserved {format_bytes(s.reserved_bytes)}, "
                                        f"non-torch {format_bytes(s.non_torch_bytes)}", refresh=False)
                bar.update(1)
            if result.status != "ok":
                status = result.status
                what = "out of memory" if result.status == "oom" else result.status
                message = f"{what} at request {result.request_index}: {result.message}"
                break
    except KeyboardInterrupt:
        writer.finish("interrupted", "interrupted by the user")
        raise
    except Exception as exc:
        writer.finish("error", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if bar is not None:
            bar.close()
    return writer.finish(status, message)

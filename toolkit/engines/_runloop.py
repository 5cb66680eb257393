"""The per-request loop every engine shares: one request at a time, each sample on disk as it arrives.

Why one loop: the guarantees users rely on -- a run that dies (out of memory, dead engine, Ctrl-C) keeps
every sample recorded before it, and ends with the status and the request where it stopped -- must not
differ between the simulated and the real engines.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from toolkit.core.errors import EngineError, ToolkitError
from toolkit.core.records import MemoryRunWriter, RequestResult, Run, RunStatus, RunWriter
from toolkit.core.units import format_bytes
from toolkit.workload.inputs import InputError


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


def _where(run: Run) -> str:
    """Where a run's samples are, and how to get them back, in a few words."""
    if run.path is None:
        return "kept in memory only (pass run_path= or a run_dir to keep runs on disk)"
    return f"on disk: {run.path} (toolkit.load_run reloads it)"


def _say(line: str) -> None:
    """One line on stderr: what happened to the run and where its samples are (never a traceback)."""
    print(line, file=sys.stderr, flush=True)


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
    failed_input: Callable[[Any, str], RequestResult] | None = None,
) -> Run:
    """Call ``send(item)`` for each item, appending its samples; stop at the first failed request.

    Failures cost as little as they can:

    * an item that cannot be used (``InputError``: a broken JPEG) becomes a failed request, built by
      ``failed_input(item, reason)`` (status ``error``, the reason as its message), and the run goes on;
    * an out-of-memory request or a dead engine ends the run at that request (its status says which);
    * an interrupt (Ctrl-C) or an engine error ends the run as ``interrupted``/``error``, prints one line
      saying where the kept samples are, and *returns* the run, so ``run = engine.run_images(...)``
      is bound to everything kept;
    * any other exception (a bug) finishes the run file the same way, prints that line, and propagates.

    The run file (if any) is appended and flushed per request. ``on_result`` is called with each
    request's result once its samples are safe (live figures, snapshot recorders).
    """
    writer: RunWriter | MemoryRunWriter = RunWriter(path, header) if path is not None else MemoryRunWriter(header)
    status: RunStatus = "ok"
    message = None
    bad_inputs: list[str] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, unit="req")
    try:
        for item in items:
            input_failed = False
            try:
                result = send(item)
            except InputError as exc:
                if failed_input is None:
                    raise
                result = failed_input(item, str(exc))
                bad_inputs.append(str(exc))
                input_failed = True
            writer.append(*result.samples)
            if on_result is not None:
                on_result(result)
            if bar is not None:
                if result.samples:
                    s = result.samples[0]
                    bar.set_postfix_str(f"reserved {format_bytes(s.reserved_bytes)}, "
                                        f"non-torch {format_bytes(s.non_torch_bytes)}", refresh=False)
                bar.update(1)
            if result.status != "ok" and not input_failed:
                status = result.status
                what = "out of memory" if result.status == "oom" else result.status
                message = f"{what} at request {result.request_index}: {result.message}"
                break
    except KeyboardInterrupt:
        run = writer.finish("interrupted", "interrupted by the user")
        _say(f"run {run.name!r} interrupted: {run.requests_served} requests kept, {_where(run)}")
        return run
    except ToolkitError as exc:  # the engine cannot go on (dead, stopped): keep what was served
        run = writer.finish("error", f"{type(exc).__name__}: {exc}")
        _say(f"run {run.name!r} stopped ({exc}): {run.requests_served} requests kept, {_where(run)}")
        return run
    except Exception as exc:
        run = writer.finish("error", f"{type(exc).__name__}: {exc}")
        _say(f"run {run.name!r} failed: {run.requests_served} requests kept, {_where(run)}")
        raise
    finally:
        if bar is not None:
            bar.close()
    if bad_inputs and message is None:
        message = (f"{len(bad_inputs)} request(s) failed on their input and were skipped; first: {bad_inputs[0]}")
    return writer.finish(status, message)

"""``watch``: run an engine with a live figure and per-request allocator snapshots."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from toolkit.engines.base import Engine
from toolkit.core.records import Run

if TYPE_CHECKING:  # pragma: no cover
    pass

from toolkit.notebook.widgets._display import Mode, WidgetError, _display
from toolkit.notebook.widgets._inspector import Inspector
from toolkit.notebook.widgets._live import LiveFigure
from toolkit.snapshot.by_request import SnapshotRecorder

# -- running an engine with live views ------------------------------------------------------------------


@dataclass
class Watched:
    """What ``watch`` returns: the finished run, its live figure and the recorded snapshots."""

    run: Run
    live: LiveFigure | None
    snapshots: SnapshotRecorder | None

    def inspect(self, **kwargs: Any) -> Inspector:
        """An ``Inspector`` over the run and its snapshots."""
        return Inspector(self.run, self.snapshots, **kwargs)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def __repr__(self) -> str:
        sim = " [simulated]" if self.run.simulated else ""
        return (f"Watched({self.run.name!r}{sim}: {self.run.status}, {self.run.requests_served} requests served, "
                f"{len(self.snapshots or ())} snapshots)")


def watch(
    engine: Any,
    images: Any,
    *,
    live: bool = True,
    record_snapshots: bool = True,
    snapshot_every: int = 1,
    interval_s: float = 0.25,
    mode: Mode = "auto",
    show: bool = True,
    **run_kwargs: Any,
) -> Watched:
    """Run ``engine.run_images(images, **run_kwargs)`` with a live figure and per-request snapshots.

    ``engine``: a ``SimEngine`` or any engine with ``header()`` and ``run_images(..., on_result=)`` (the
    real engines share that interface); snapshots need ``engine.device.snapshot()``. The live figure is
    displayed before the first request (``show=False`` to display it yourself).
    """
    header = engine.header() if hasattr(engine, "header") else None
    if header is None:
        raise WidgetError(f"{type(engine).__name__} has no header(): not an engine watch() can follow")
    tp = engine.tensor_parallel_size if isinstance(engine, Engine) else 1
    figure = LiveFigure(header, ranks=range(tp), interval_s=interval_s, mode=mode) if live else None
    recorder = None
    if record_snapshots:
        device = getattr(engine, "device", None)
        if device is None or not hasattr(device, "snapshot"):
            raise WidgetError(f"{type(engine).__name__} exposes no device.snapshot(): pass record_snapshots=False")
        # the engine's own snapshot() names the blocks (SimEngine); a bare device snapshot does not
        source = engine if callable(getattr(engine, "snapshot", None)) else device
        recorder = SnapshotRecorder(source, every=snapshot_every)
    params = inspect.signature(engine.run_images).parameters
    if "snapshots" in params:  # the engine records into our recorder itself (and registers it for the run)
        run_kwargs["snapshots"] = recorder if recorder is not None else False
        callbacks: list[LiveFigure | SnapshotRecorder] = [c for c in (figure,) if c is not None]
    else:
        callbacks = [c for c in (figure, recorder) if c is not None]

    def on_result(result: Any) -> None:
        for c in callbacks:
            c(result)

    if figure is not None and show:
        _display(figure)
    if "on_result" not in params:
        raise WidgetError(f"{type(engine).__name__}.run_images takes no on_result callback: watch() cannot follow it")
    run = engine.run_images(images, on_result=on_result, **run_kwargs)
    if figure is not None:
        figure.finish(run)
    return Watched(run=run, live=figure, snapshots=recorder)



"""A recording as a torch-format memory snapshot (``device_traces``), so every snapshot tool opens it (pure).

The trace has, per storage, an ``alloc`` and (when it died) a ``free_requested`` immediately followed by
its ``free_completed`` (one stream: nothing waits), in the recorded order; ``size`` is the storage's
bytes. There are no segments: the CPU has no caching allocator, so what a device's allocator would make
of these requests is the simulator's job (``toolkit.replay.replay(snapshot, platform="npu", conf=...)``).
Addresses are synthetic and never reused (512-byte aligned, the caching allocator's smallest rounding),
so each storage is one address. Frames, innermost first: a first frame naming the phase, the module and
the op (``filename="<encoder> visual.blocks.0.attn.qkv"``, ``name="aten.mm.default"``), then the vLLM
source lines. Storages flagged CPU-specific or cached (``format.DROPPED``) are left out unless
``cpu_specific=True``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from toolkit.workload.recorded.format import ALLOC, DROPPED, Recording

BASE_ADDRESS = 0x7F0000000000
_ALIGN = 512


def recording_to_snapshot(rec: Recording, *, phases: tuple[str, ...] | None = None,
                          cpu_specific: bool = False) -> dict[str, Any]:
    """The ``_snapshot()``-shaped dict of ``rec`` (the phases named, in recorded order; default all)."""
    trace: list[dict[str, Any]] = []
    nxt = BASE_ADDRESS
    for ph in rec.phases:
        if phases is not None and ph.name not in phases:
            continue
        addr: dict[int, tuple[int, int, list[dict[str, Any]]]] = {}
        for e in ph.events:
            if e.kind == ALLOC:
                if e.nbytes == 0 or (e.flag in DROPPED and not cpu_specific):
                    continue
                frames = [{"filename": f"<{ph.name}> {e.module}", "line": 0,
                           "name": f"{e.op} {e.dtype}{list(e.shape)}"}]
                frames += [{"filename": f.filename, "line": f.line, "name": f.name} for f in e.frames]
                addr[e.sid] = (nxt, e.nbytes, frames)
                trace.append({"action": "alloc", "addr": nxt, "size": e.nbytes, "stream": 0, "frames": frames})
                nxt += -(-e.nbytes // _ALIGN) * _ALIGN
            elif e.sid in addr:
                a, n, frames = addr.pop(e.sid)
                for action in ("free_requested", "free_completed"):
                    trace.append({"action": action, "addr": a, "size": n, "stream": 0, "frames": frames})
    # plain data only (the snapshot loader refuses anything else): a JSON round trip of the metadata
    meta = json.loads(json.dumps({"preset": rec.preset, "image": rec.image, "grid": rec.grid, **rec.meta},
                                 default=str))
    return {"segments": [], "device_traces": [trace], "recorded_program": meta}


def write_recording_snapshot(rec: Recording, path: str | os.PathLike[str], **kw: Any) -> Path:
    """Write the snapshot with ``toolkit.snapshot.write_snapshot`` (pickle, or JSON for ``.json``)."""
    from toolkit.snapshot import write_snapshot

    return write_snapshot(recording_to_snapshot(rec, **kw), path)  # type: ignore[arg-type]

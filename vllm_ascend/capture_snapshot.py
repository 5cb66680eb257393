#!/usr/bin/env python3
"""Capture allocator snapshots on an Ascend host, and find your way through the files afterwards.

Two ways to get snapshots out of vLLM's worker processes (one per tensor-parallel rank):

* **On OOM, for any script** (no code change): torch_npu reads ``OOM_SNAPSHOT_ENABLE`` at device
  initialisation in every process and, on an out-of-memory error, writes
  ``$OOM_SNAPSHOT_PATH/oom_snapshot_<pid>_<YYYYmmddHHMMSS>.pickle``. ``1`` records the full history
  (unbounded: its ring buffer is sized ``UINT64_MAX``), ``2`` only the live state. The folder must exist
  (torch_npu resolves it with ``realpath`` and fails otherwise) and should be absolute, since engine
  processes may run elsewhere. Source: ``OptionsManager::IsOomSnapshotEnable`` and ``oom_observer`` in
  Ascend/pytorch ``torch_npu/csrc/core/npu/register/OptionsManager.cpp``. ``env`` below prints the exports::

      eval "$(python vllm_ascend/capture_snapshot.py env --out snapshots --mode state)"
      python my_vllm_script.py

* **On demand, bounded** (your script holds the ``LLM``): start the engine with the toolkit's worker
  extension and record a ring buffer of ``max_entries`` events in every rank, then dump one file per rank
  (``toolkit.engines.vllm.engine.VllmEngine.start_recording`` / ``dump_snapshot``, or ``llm.collective_rpc(
  "memlab_record_start", ...)`` with ``worker_extension_cls="toolkit.worker.extension.MemlabWorkerExtension"``).
  ``repro_multimodal_oom.py --snapshot-max-entries N`` does this for the reproduction.

Then ``list`` tells which file is which rank/process, what each holds (loaded with the toolkit's restricted
unpickler: nothing in a file is executed) and prints the replay command::

    python vllm_ascend/capture_snapshot.py list snapshots/
    python -m toolkit replay snapshots/oom_snapshot_4242_20260101120000.pickle --conf expandable_segments:True

A plain script in a folder that must never become a package (see README.md there).
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
REPO_ROOT = SCRIPT.parent.parent
MODES = {"state": "2", "history": "1"}  # torch_npu OOM_SNAPSHOT_ENABLE values
SNAPSHOT_SUFFIXES = (".pickle", ".pkl", ".json", ".pickle.gz", ".json.gz")
# oom_snapshot_<pid>_<time>.pickle (torch_npu) and snapshot-rank<r>-<pid>.pickle (toolkit probe)
_OOM_NAME = re.compile(r"oom_snapshot_(?P<pid>\d+)_(?P<time>\d{14})")
_RANK_NAME = re.compile(r"snapshot-rank(?P<rank>\d+)-(?P<pid>\d+)")


class CaptureError(Exception):
    """Bad input: printed as one line, exit status 2."""


def oom_snapshot_env(out: str | Path, mode: str = "state") -> dict[str, str]:
    """The variables that make torch_npu dump a snapshot on OOM into ``out`` (created, made absolute)."""
    if mode not in MODES:
        raise CaptureError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    folder = Path(out).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)  # torch_npu fails on a missing OOM_SNAPSHOT_PATH
    return {"OOM_SNAPSHOT_ENABLE": MODES[mode], "OOM_SNAPSHOT_PATH": str(folder)}


def describe_name(path: Path) -> dict[str, Any]:
    """What a snapshot's file name says: who wrote it (torch_npu on OOM, or the toolkit), pid, rank."""
    m = _OOM_NAME.search(path.name)
    if m:
        return {"source": "torch_npu on OOM", "pid": int(m["pid"]), "rank": None, "time": m["time"]}
    m = _RANK_NAME.search(path.name)
    if m:
        return {"source": "toolkit dump", "pid": int(m["pid"]), "rank": int(m["rank"]), "time": None}
    return {"source": "other", "pid": None, "rank": None, "time": None}


def find_snapshots(paths: Sequence[str | Path]) -> list[Path]:
    """Snapshot files among ``paths`` (folders are searched recursively), sorted by path."""
    found: set[Path] = set()
    for p in map(Path, paths):
        if p.is_dir():
            found.update(f for f in p.rglob("*") if f.is_file() and f.name.endswith(SNAPSHOT_SUFFIXES))
        elif p.is_file():
            found.add(p)
        else:
            raise CaptureError(f"{p}: no such file or folder")
    return sorted(found)


def summarize_file(path: Path) -> dict[str, Any]:
    """Name facts plus ``toolkit.snapshot.summarize`` of the file (safe load), or the reason it failed."""
    from toolkit.snapshot import SnapshotError, load_snapshot, summarize

    row: dict[str, Any] = {"path": str(path), "file_bytes": path.stat().st_size, **describe_name(path)}
    try:
        s = summarize(load_snapshot(path))
    except SnapshotError as exc:
        row["error"] = str(exc)
        return row
    row.update({k: s[k] for k in ("platform", "segments", "expandable_segments", "reserved_bytes",
                                  "allocated_bytes", "inactive_split_bytes", "events")})
    row["oom_events"] = s["events_by_action"].get("oom", 0)
    return row


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    from toolkit.core.units import format_bytes

    head = ("file", "written by", "pid", "rank", "segments", "expandable", "reserved", "allocated",
            "inactive split", "events", "oom")
    lines = [head]
    for r in rows:
        if "error" in r:
            continue
        who = (str(r["pid"]) if r["pid"] is not None else "-", str(r["rank"]) if r["rank"] is not None else "-")
        lines.append((Path(r["path"]).name, r["source"], *who, str(r["segments"]), str(r["expandable_segments"]),
                      format_bytes(r["reserved_bytes"]), format_bytes(r["allocated_bytes"]),
                      format_bytes(r["inactive_split_bytes"]), str(r["events"]), str(r["oom_events"])))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = [("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()) for line in lines]
    text += [f"unreadable: {r['error']}" for r in rows if "error" in r]
    return "\n".join(text)


def _import_toolkit() -> None:
    """As in repro_multimodal_oom.py: append (never prepend) the checkout when toolkit is not installed."""
    from importlib import invalidate_caches, util

    spec = util.find_spec("toolkit")
    if spec is None or spec.origin is None:
        sys.path.append(str(REPO_ROOT))
        invalidate_caches()
        spec = util.find_spec("toolkit")
        if spec is None or spec.origin is None:
            raise CaptureError("the toolkit is not installed: pip install -e '.[notebook]' in the checkout")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="capture_snapshot.py",
                                description="Capture allocator snapshots on an Ascend host and list them.")
    sub = p.add_subparsers(dest="command", required=True)
    env = sub.add_parser("env", help="print the exports that make torch_npu dump a snapshot on OOM")
    env.add_argument("--out", required=True, help="folder for the snapshots (created)")
    env.add_argument("--mode", choices=tuple(MODES), default="state",
                     help="state: live blocks only (OOM_SNAPSHOT_ENABLE=2, default); history: every event since "
                          "start (=1, unbounded: large files, slow viewers)")
    ls = sub.add_parser("list", help="which snapshot file is which process/rank, what it holds, how to replay it")
    ls.add_argument("paths", nargs="+", help="snapshot files or folders")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _import_toolkit()
        if args.command == "env":
            for key, value in oom_snapshot_env(args.out, args.mode).items():
                print(f"export {key}={shlex.quote(value)}")
            return 0
        files = find_snapshots(args.paths)
        if not files:
            raise CaptureError(f"no snapshot files ({', '.join(SNAPSHOT_SUFFIXES)}) in {', '.join(args.paths)}")
        rows = [summarize_file(f) for f in files]
        print(format_rows(rows))
        good = [r for r in rows if "error" not in r]
        if good:
            print("\nreplay one under other confs (simulated):")
            print(f"  python -m toolkit replay {shlex.quote(good[0]['path'])} --conf recorded "
                  "--conf expandable_segments:True --conf max_split_size_mb:256")
        return 0 if good else 1
    except CaptureError as exc:
        print(f"capture_snapshot.py: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

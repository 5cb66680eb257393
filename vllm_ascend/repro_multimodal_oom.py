#!/usr/bin/env python3
"""Reproduce the multi-modal OOM of vllm-ascend PR #5855 under several allocator confs, one engine each.

The PR's script (``shared/seeds``) sends a folder of photos one by one to Qwen3-VL on two NPUs
(``LLM(max_model_len=65536, max_num_seqs=8, max_num_batched_tokens=32768, gpu_memory_utilization=0.95,
tensor_parallel_size=2)``, ``SamplingParams(max_tokens=1024)``) until the engine dies of fragmentation.
This script runs that workload once per conf and compares the runs:

* ONE FRESH ENGINE PROCESS PER CONF. The caching allocator reads its conf once, at its first allocation,
  in the process that allocates (torch_npu ``NPUAllocatorConfig``; torch_npu's own
  ``test/npu/test_large_segment_size.py`` spawns a process per conf for that reason), and freeing an
  ``LLM`` inside a process is unreliable (vLLM #1908, #3281, #6544). So this script re-runs itself as a
  subprocess in worker mode for each conf, with the conf in its environment and nothing else changed.
* Per-request memory of every rank goes to a run file (``OUT/runs/NN-<conf>.jsonl``, ``toolkit.core.records``)
  as it is measured, so an engine that dies keeps every sample taken before.
* At the end: a printed comparison table, ``OUT/summary.csv`` and a self-contained ``OUT/report.html``
  (``toolkit.viz.report``; needs plotly, the ``notebook`` extra).

Backends: ``npu`` (vLLM + vllm-ascend + torch_npu; the real thing), ``cuda`` (vLLM on NVIDIA), ``sim``
(the toolkit's simulated NPU and workload model: runs anywhere in seconds, every result labelled simulated).

Examples::

    # anywhere: a generated photo set, simulated
    python vllm_ascend/repro_multimodal_oom.py --backend sim --generate-photos 60 --out out/repro-sim
    # on an Ascend host (see vllm_ascend/README.md first)
    python vllm_ascend/repro_multimodal_oom.py --backend npu --images ~/photos \\
        --model /models/Qwen3-VL-8B-Instruct --out out/repro-npu \\
        --confs expandable_segments:False expandable_segments:True max_split_size_mb:256

A conf of ``default`` leaves the allocator variable unset: vllm-ascend >= 0.14.0rc1 then sets
``expandable_segments:True`` itself (PR #5855), earlier versions leave the allocator's defaults.

This file is a plain script in a folder that must never become a package (see README.md there).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata, util
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
REPO_ROOT = SCRIPT.parent.parent

# The seed script's workload (vllm-ascend PR #5855, "scripts" section).
SEED_MODEL = "Qwen/Qwen3-VL-8B-Instruct"
SEED_ENGINE_ARGS: dict[str, Any] = {
    "tensor_parallel_size": 2,
    "max_model_len": 65536,
    "max_num_seqs": 8,
    "max_num_batched_tokens": 32768,
    "gpu_memory_utilization": 0.95,
}
SEED_MAX_TOKENS = 1024
SEED_QUESTION = "What is the content of this image?"
SEED_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
# A true baseline needs expandable_segments:False spelled out: with the variable unset, vllm-ascend
# >= 0.14.0rc1 turns expandable segments on (docs/vllm-facts.md, "vllm-ascend behaviour").
DEFAULT_CONFS = ("expandable_segments:False", "expandable_segments:True", "max_split_size_mb:256")
DEFAULT_WORD = "default"

BACKENDS = ("npu", "cuda", "sim")
# The variable the worker's allocator reads. sim models the NPU allocator.
CONF_VAR = {"npu": "PYTORCH_NPU_ALLOC_CONF", "cuda": "PYTORCH_CUDA_ALLOC_CONF", "sim": "PYTORCH_NPU_ALLOC_CONF"}
ALLOC_VARS = ("PYTORCH_NPU_ALLOC_CONF", "PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_HIP_ALLOC_CONF")
# Import names each real backend needs (checked with find_spec: nothing is imported in the parent).
REQUIRED_MODULES = {
    "npu": ("torch", "torch_npu", "vllm", "vllm_ascend"),
    "cuda": ("torch", "vllm"),
    "sim": (),
}
PIP_NAMES = {"torch": "torch", "torch_npu": "torch-npu", "vllm": "vllm", "vllm_ascend": "vllm-ascend"}
# torch_npu: OOM_SNAPSHOT_ENABLE=1 records full history, 2 only the live state; the OOM observer writes
# OOM_SNAPSHOT_PATH/oom_snapshot_<pid>_<time>.pickle (torch_npu/csrc/core/npu/register/OptionsManager.cpp)
OOM_SNAPSHOT_MODES = {"off": None, "state": "2", "history": "1"}

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class ReproError(Exception):
    """Bad input or a missing requirement: printed as one line, exit status 2."""


def _toolkit_origin() -> str | None:
    spec = util.find_spec("toolkit")
    return None if spec is None else spec.origin


def _import_toolkit() -> None:
    """Make ``toolkit`` importable when the project is checked out but not installed.

    The repository root is *appended* to ``sys.path``: a real vllm-ascend installed in site-packages is
    found first, and a folder without ``__init__.py`` is at most a namespace package, which any regular
    package wins over (PEP 420), so this never shadows the plugin. The same rule repairs an editable
    install that resolves ``toolkit`` as a namespace package outside the checkout (no ``__init__``).
    """
    if _toolkit_origin() is None:  # not installed, or only seen as a namespace package
        sys.path.append(str(REPO_ROOT))
        importlib.invalidate_caches()
        if _toolkit_origin() is None:
            raise ReproError("the toolkit is not installed: run `pip install -e '.[notebook]'` in the "
                             "ascend-memlab checkout (see vllm_ascend/README.md)")


# -- inputs ------------------------------------------------------------------------------------------------


def find_photos(folder: str | os.PathLike[str], max_images: int | None = None) -> list[Path]:
    """Image files of ``folder`` with the seed script's extensions (either case), sorted by name.

    The seed globbed ``*.jpg`` and ``*.JPG`` separately, which lists a file twice on a case-insensitive
    file system; each file is listed once here. ``max_images`` keeps the first N.
    """
    p = Path(folder).expanduser()
    if not p.is_dir():
        raise ReproError(f"--images {folder}: not a folder")
    files = sorted((f for f in p.iterdir() if f.is_file() and f.suffix.lower() in SEED_IMAGE_EXTENSIONS),
                   key=lambda f: f.name)
    if not files:
        raise ReproError(f"--images {folder}: no image files ({', '.join(SEED_IMAGE_EXTENSIONS)})")
    if max_images is not None:
        files = files[:max_images]
    return files


@dataclass(frozen=True)
class ConfSpec:
    """One conf to run: ``conf`` is the canonical string written to the variable, None = leave it unset."""

    conf: str | None

    @property
    def label(self) -> str:
        return DEFAULT_WORD if self.conf is None else (self.conf or "(empty)")

    @property
    def slug(self) -> str:
        text = self.label if self.conf is not None else DEFAULT_WORD
        return "".join(ch if ch.isalnum() else "_" for ch in text).strip("_") or "empty"


def parse_confs(values: Sequence[str], backend: str, torch_version: str | None = None) -> list[ConfSpec]:
    """Validate every conf before any engine starts (one bad conf must not waste an hour of NPU time).

    ``default`` (or an empty string) means "leave the variable unset". Each value is one whole conf
    string (commas inside it separate its options). Raises ``ReproError`` naming the bad conf.
    """
    from toolkit.conf import ConfError, parse

    platform = "cuda" if backend == "cuda" else "npu"
    specs: list[ConfSpec] = []
    for value in values:
        text = value.strip()
        if text in ("", DEFAULT_WORD):
            spec = ConfSpec(None)
        else:
            try:
                spec = ConfSpec(str(parse(text, platform=platform, version=torch_version)))
            except ConfError as exc:
                raise ReproError(f"--confs {value!r}: {exc}") from None
        if spec in specs:
            raise ReproError(f"--confs: {spec.label!r} is listed twice")
        specs.append(spec)
    if not specs:
        raise ReproError("--confs: give at least one conf")
    return specs


def worker_environ(base: Mapping[str, str], backend: str, conf: str | None) -> dict[str, str]:
    """The worker's environment: ``base`` with every allocator variable removed, then the conf set.

    Only one variable is left so that every torch / torch_npu version reads the same thing (torch_npu
    reads ``PYTORCH_NPU_ALLOC_CONF`` first; newer builds refuse it together with ``PYTORCH_ALLOC_CONF``).
    """
    env = {k: v for k, v in base.items() if k not in ALLOC_VARS}
    if conf is not None:
        env[CONF_VAR[backend]] = conf
    env["PYTHONUNBUFFERED"] = "1"  # the log file follows the run
    return env


def missing_modules(backend: str) -> list[str]:
    """Import names the backend needs that this Python cannot import (nothing is imported).

    A folder without ``__init__.py`` (like this repository's ``vllm_ascend/``) is a namespace package,
    not an installed plugin: its spec has no origin, and it counts as missing.
    """
    missing = []
    for name in REQUIRED_MODULES[backend]:
        try:
            spec = util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None or spec.origin is None:
            missing.append(name)
    return missing


def installed_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# -- the comparison --------------------------------------------------------------------------------------


def oom_request(run: Any) -> int | None:
    """The request the engine died at, or None (``toolkit.core.summary.oom_at_request``, the one rule every view
    uses: a real engine that dies cannot be sampled any more, so the OOM is the request after the last one)."""
    from toolkit.core.summary import oom_at_request

    return oom_at_request(run)


def compare_rows(runs: Sequence[Any], requests_sent: int | None = None) -> list[dict[str, Any]]:
    """One row per run (bytes are ints, max over ranks and requests), from ``toolkit.core.summary``."""
    from toolkit.core.summary import summarize_run

    rows = []
    for run in runs:
        s = summarize_run(run)
        rows.append({
            "conf": run.name,
            "effective_conf": run.effective_conf,
            "status": run.status,
            "requests_served": s.requests_served,
            "requests_sent": requests_sent,
            "oom_at_request": s.oom_at_request,
            "peak_reserved_bytes": s.peak_reserved_bytes,
            "peak_non_torch_bytes": s.peak_non_torch_bytes,
            "peak_device_used_bytes": s.peak_device_used_bytes,
            "max_inactive_split_bytes": s.peak_inactive_split_bytes,
            "alloc_retries": s.alloc_retries,
            "simulated": run.simulated,
        })
    return rows


def format_table(rows: Sequence[Mapping[str, Any]], title: str) -> str:
    """The rows as aligned text under ``title`` (marked ``[simulated]`` when any run is)."""
    from toolkit.core.units import format_bytes

    head = ("conf", "allocator got", "status", "served", "OOM at", "peak reserved", "peak non-torch",
            "peak used", "max inactive split", "retries")
    lines = [head]
    for r in rows:
        sent = "?" if r["requests_sent"] is None else str(r["requests_sent"])
        lines.append((
            r["conf"], r["effective_conf"] or "(allocator defaults)", r["status"],
            f"{r['requests_served']}/{sent}", "-" if r["oom_at_request"] is None else str(r["oom_at_request"]),
            format_bytes(r["peak_reserved_bytes"]), format_bytes(r["peak_non_torch_bytes"]),
            format_bytes(r["peak_device_used_bytes"]), format_bytes(r["max_inactive_split_bytes"]),
            str(r["alloc_retries"])))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    body = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    mark = "[simulated] " if any(r["simulated"] for r in rows) else ""
    return f"{mark}{title}\n" + "\n".join(body)


# -- parent: one worker process per conf -------------------------------------------------------------------


@dataclass(frozen=True)
class RunPlan:
    index: int
    spec: ConfSpec
    run_path: Path
    log_path: Path
    spec_path: Path
    snapshot_dir: Path


def plan_runs(confs: Sequence[ConfSpec], out: Path) -> list[RunPlan]:
    plans = []
    for i, c in enumerate(confs):
        stem = f"{i:02d}-{c.slug}"
        plans.append(RunPlan(i, c, out / "runs" / f"{stem}.jsonl", out / "logs" / f"{stem}.log",
                             out / "specs" / f"{stem}.json", out / "snapshots" / stem))
    return plans


def _kill_group(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """End the worker and everything it started (vLLM's EngineCore and TP workers hold device memory).

    The worker runs in its own session, so its process group holds exactly the processes of this run.
    """
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_worker(plan: RunPlan, env: Mapping[str, str], timeout_s: float | None) -> int:
    """Run this script in worker mode for one conf; output goes to the plan's log file.

    Returns the worker's exit status (124 when it ran past ``timeout_s``). Whatever the outcome, nothing
    the worker started is left running before the next conf starts.
    """
    plan.log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(SCRIPT), "--worker", str(plan.spec_path)]
    with open(plan.log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(env), start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return 124
        except KeyboardInterrupt:
            _kill_group(proc)
            raise
    try:  # the worker exited; stray engine processes of its group must not outlive it
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return rc


def _last_lines(path: Path, n: int = 3) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(ln.strip()[:300] for ln in lines[-n:])


def _write_failed_run(plan: RunPlan, spec: Mapping[str, Any], message: str) -> None:
    """A run file for a conf whose worker died before writing one, so the comparison lists every conf."""
    from toolkit.core.records import Run, RunWriter

    header = Run(name=plan.spec.label, backend=spec["backend"], platform=spec["platform"], model=spec["model"],
                 conf=plan.spec.conf, effective_conf=spec.get("predicted_conf") or "",
                 device_capacity_bytes=0, simulated=spec["backend"] == "sim",
                 engine_args=dict(spec["engine_args"]))
    RunWriter(plan.run_path, header, overwrite=True).finish("error", message)


def build_spec(args: argparse.Namespace, plan: RunPlan, photos: Sequence[Path], env: Mapping[str, str]) -> dict:
    """Everything the worker needs, as plain JSON (no code on a command line: style lessons, 17)."""
    from toolkit.conf.policy import NPU_VAR, upstream_policy

    predicted = plan.spec.conf
    if args.backend in ("npu", "sim"):
        version = installed_version("vllm-ascend") if args.backend == "npu" else args.vllm_ascend
        if version is not None:  # what vllm-ascend will do to the variable before its workers start
            predicted = upstream_policy(env, version).after.get(NPU_VAR)
    engine_args = {k: getattr(args, k) for k in SEED_ENGINE_ARGS}
    engine_args["enforce_eager"] = args.enforce_eager
    return {
        "backend": args.backend,
        "platform": "cuda" if args.backend == "cuda" else "npu",
        "label": plan.spec.label,
        "conf": plan.spec.conf,
        "predicted_conf": predicted,
        "model": args.model,
        "engine_args": engine_args,
        "max_tokens": args.max_tokens,
        "question": args.question,
        "photos": [str(p) for p in photos],
        "run_path": str(plan.run_path),
        "snapshot_dir": str(plan.snapshot_dir),
        "snapshot_max_entries": args.snapshot_max_entries,
        "sim": {"device_bytes": int(args.sim_device_gib * 2**30), "vllm_ascend_version": args.vllm_ascend,
                "seed": args.seed},
        "versions": {d: installed_version(d) for d in ("vllm", "vllm-ascend", "torch", "torch-npu")},
    }


def _model_name(model: str) -> str:
    return model.rstrip("/").rsplit("/", 1)[-1]


def _write_outputs(runs: list[Any], out: Path, title: str) -> list[str]:
    """summary.csv and report.html; returns lines telling where they are (or why not)."""
    notes = []
    try:
        from toolkit.viz.report import summary_frame, write_html_report

        summary_frame(runs).to_csv(out / "summary.csv", index=False)
        notes.append(f"summary: {out / 'summary.csv'}")
        try:
            import plotly  # noqa: F401  (the report's plots)
        except ImportError:
            notes.append("report:  not written (needs plotly: pip install -e '.[notebook]')")
        else:
            path = write_html_report(runs, out / "report.html", title=title)
            notes.append(f"report:  {path}  (self-contained, opens offline)")
    except ImportError as exc:  # toolkit.viz.report not available in this checkout
        notes.append(f"report:  not written ({exc})")
    return notes


def run_all(args: argparse.Namespace) -> int:
    """The parent: validate everything, then one worker process per conf, then the comparison."""
    _import_toolkit()
    if args.backend != "sim" and args.vllm_ascend is not None:
        raise ReproError("--vllm-ascend is for --backend sim; on a real host the installed vllm-ascend applies")
    if args.backend != "npu" and args.oom_snapshot != "off":
        raise ReproError("--oom-snapshot uses torch_npu's OOM_SNAPSHOT_ENABLE: --backend npu only "
                         "(elsewhere use --snapshot-max-entries)")
    if args.backend == "sim" and args.snapshot_max_entries:
        raise ReproError("--snapshot-max-entries records a real allocator: --backend npu or cuda")
    missing = missing_modules(args.backend)
    if missing:
        pip = " ".join(PIP_NAMES.get(m, m) for m in missing)
        raise ReproError(f"--backend {args.backend} needs {', '.join(missing)} in this Python ({sys.executable}); "
                         f"install the matched stack ({pip}) as vllm_ascend/README.md says, or try --backend sim")
    confs = parse_confs(args.confs, args.backend, args.torch_version)
    out = Path(args.out)
    plans = plan_runs(confs, out)
    existing = [str(p.run_path) for p in plans if p.run_path.exists()]
    if existing and not args.overwrite:
        raise ReproError(f"{existing[0]} exists: choose a new --out or pass --overwrite")
    if args.images is None and args.generate_photos is None:
        raise ReproError("give --images FOLDER (your photos) or --generate-photos N")
    if args.generate_photos is not None:
        from toolkit.workload.photos import generate_photo_set

        if args.generate_photos < 1:
            raise ReproError("--generate-photos must be >= 1")
        photos = generate_photo_set(out / "photos", args.generate_photos, seed=args.seed)[: args.max_images]
    else:
        photos = find_photos(args.images, args.max_images)
    model_path = Path(args.model).expanduser()
    if args.backend != "sim" and model_path.is_absolute() and not model_path.exists():
        raise ReproError(f"--model {args.model}: no such path")
    title = (f"{_model_name(args.model)}, TP {args.tensor_parallel_size}, {len(photos)} photos, "
             f"backend {args.backend}")
    print(f"{'[simulated] ' if args.backend == 'sim' else ''}{title}: {len(plans)} conf(s), "
          f"one fresh engine process each; results in {out}", flush=True)

    for d in ("runs", "logs", "specs"):
        (out / d).mkdir(parents=True, exist_ok=True)
    finished: list[Any] = []
    from toolkit.core.records import RecordError, load_run

    failures = 0
    interrupted = False
    for plan in plans:
        env = worker_environ(os.environ, args.backend, plan.spec.conf)
        if args.backend == "npu" and OOM_SNAPSHOT_MODES[args.oom_snapshot] is not None:
            plan.snapshot_dir.mkdir(parents=True, exist_ok=True)  # torch_npu requires an existing folder
            env["OOM_SNAPSHOT_ENABLE"] = OOM_SNAPSHOT_MODES[args.oom_snapshot]  # type: ignore[assignment]
            env["OOM_SNAPSHOT_PATH"] = str(plan.snapshot_dir.resolve())
        spec = build_spec(args, plan, photos, env)
        plan.spec_path.write_text(json.dumps(spec, indent=1))
        if plan.run_path.exists():
            plan.run_path.unlink()
        print(f"[{plan.index + 1}/{len(plans)}] {plan.spec.label}: running (log: {plan.log_path})", flush=True)
        started = time.monotonic()
        try:
            rc = run_worker(plan, env, args.timeout_per_conf)
        except KeyboardInterrupt:
            print("interrupted: the running engine was stopped; finished runs are kept", file=sys.stderr)
            interrupted = True
            break
        seconds = time.monotonic() - started
        if not plan.run_path.exists():
            why = "timed out" if rc == 124 else f"worker exited with status {rc}"
            _write_failed_run(plan, spec, f"{why} before the engine started: {_last_lines(plan.log_path)}")
        try:
            run = load_run(plan.run_path)
        except RecordError as exc:
            print(f"    could not read {plan.run_path}: {exc}", file=sys.stderr)
            failures += 1
            continue
        if run.status not in ("ok", "oom"):
            failures += 1
        elif rc != 0:
            print(f"    note: the worker exited with status {rc} after finishing its run (see its log)")
        finished.append(run)
        oom = oom_request(run)
        what = run.status if oom is None else f"out of memory at request {oom}"
        print(f"    {what}: {run.requests_served}/{len(photos)} requests served, {seconds:.1f} s"
              + (f" — {run.message}" if run.status == "error" and run.message else ""), flush=True)

    if not finished:
        print("no run finished", file=sys.stderr)
        return EXIT_RUN_FAILED
    print()
    print(format_table(compare_rows(finished, len(photos)), title))
    print()
    for line in [f"runs:    {out / 'runs'}", f"logs:    {out / 'logs'}", *_write_outputs(finished, out, title)]:
        print(line)
    if args.backend != "sim":
        print(f"replay a snapshot under other confs: python -m toolkit replay SNAPSHOT.pickle --conf ... "
              f"(snapshots, if recorded: {out / 'snapshots'})")
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_RUN_FAILED if failures else EXIT_OK


# -- worker: one engine, one conf --------------------------------------------------------------------------


def _work_sim(spec: Mapping[str, Any]) -> int:
    from toolkit.engines.sim import SimEngine
    from toolkit.core.records import Run, RunWriter
    from toolkit.workload.prompt import chat_prompt

    sim = spec["sim"]
    ea = dict(spec["engine_args"])
    ea.pop("enforce_eager", None)  # the simulated engine always runs eagerly
    try:
        engine = SimEngine(spec["model"], conf=spec["conf"], platform="npu",
                           vllm_ascend_version=sim["vllm_ascend_version"], device_capacity_bytes=sim["device_bytes"],
                           seed=sim["seed"], **ea)
    except Exception as exc:  # the simulated engine failed to start: record it like a real one
        header = Run(name=spec["label"], backend="sim", platform="npu", model=spec["model"], conf=spec["conf"],
                     effective_conf=spec.get("predicted_conf") or "", device_capacity_bytes=sim["device_bytes"],
                     simulated=True, engine_args=spec["engine_args"])
        RunWriter(spec["run_path"], header, overwrite=True).finish("error", f"engine start failed: {exc}")
        print(f"[simulated] engine start failed: {exc}", file=sys.stderr)
        return EXIT_RUN_FAILED
    print(f"[simulated] {engine!r}\n[simulated] {engine.startup_log[-1] if engine.startup_log else ''}")
    run = engine.run_images([Path(p) for p in spec["photos"]], chat_prompt(spec["question"]),
                            max_tokens=spec["max_tokens"], progress=True, run_path=spec["run_path"],
                            name=spec["label"])
    tail = f" ({run.message})" if run.message else ""
    print(f"[simulated] {run.status}: {run.requests_served} requests served{tail}")
    return EXIT_OK


def _work_real(spec: Mapping[str, Any]) -> int:
    """The seed script on real vLLM: ``toolkit.engines.vllm.engine.VllmEngine`` measures every rank.

    The allocator variable is already in this process's environment (set by the parent); the engine
    applies vllm-ascend's own rewrite (``policy="upstream"``, idempotent) and reads the conf back from the
    workers, so the run file says what the allocator really got.
    """
    from toolkit.engines.vllm.engine import VllmEngine
    from toolkit.core.records import Run, RunWriter
    from toolkit.workload.prompt import chat_prompt

    run_path = Path(spec["run_path"])
    engine_args = dict(spec["engine_args"])
    try:
        engine = VllmEngine(spec["model"], backend=spec["backend"], name=spec["label"], policy="upstream",
                            max_tokens=spec["max_tokens"], limit_mm_per_prompt={"image": 1}, **engine_args)
    except Exception as exc:  # startup failed (OOM while profiling, bad model path, ...): keep a record
        header = Run(name=spec["label"], backend=spec["backend"], platform=spec["platform"], model=spec["model"],
                     conf=spec["conf"], effective_conf=spec.get("predicted_conf") or "", device_capacity_bytes=0,
                     simulated=False, engine_args={**engine_args, **spec["versions"]})
        RunWriter(run_path, header, overwrite=True).finish("error", f"engine start failed: {type(exc).__name__}: "
                                                                   f"{str(exc)[:1500]}")
        print(f"engine start failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_RUN_FAILED
    try:
        print(engine.readback, flush=True)  # what the workers really run with
        if spec["snapshot_max_entries"]:
            print(engine.start_recording(max_entries=spec["snapshot_max_entries"]), flush=True)
        run = engine.run_images([Path(p) for p in spec["photos"]], chat_prompt(spec["question"]),
                                max_tokens=spec["max_tokens"], run_path=run_path, name=spec["label"])
        print(f"{run.status}: {run.requests_served} requests served" + (f" ({run.message})" if run.message else ""))
        if spec["snapshot_max_entries"] and run.status == "ok":
            print(engine.dump_snapshot(spec["snapshot_dir"]), flush=True)
    finally:
        print(engine.stop(), flush=True)
    return EXIT_OK if run.status in ("ok", "oom") else EXIT_RUN_FAILED


def worker_main(spec_path: str) -> int:
    _import_toolkit()
    spec = json.loads(Path(spec_path).read_text())
    var = CONF_VAR[spec["backend"]]
    # first line of every log: which process ran this conf, and the conf it inherited
    print(f"worker pid={os.getpid()} conf={spec['label']!r} {var}={os.environ.get(var)!r}", flush=True)
    if spec["backend"] == "sim":
        return _work_sim(spec)
    return _work_real(spec)


# -- command line ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="repro_multimodal_oom.py",
        description="Send a folder of photos to Qwen3-VL one by one (vllm-ascend PR #5855's script), once per "
                    "allocator conf, each in a fresh engine process; record per-request memory of every rank "
                    "and compare the confs.",
        epilog="Run files: OUT/runs/*.jsonl (toolkit.core.records.load_run); logs: OUT/logs; report: OUT/report.html. "
               "See vllm_ascend/README.md for the Ascend setup.")
    p.add_argument("--backend", choices=BACKENDS, default="npu",
                   help="npu: vLLM + vllm-ascend; cuda: vLLM on NVIDIA; sim: the toolkit's simulated NPU "
                        "(default: npu)")
    src = p.add_mutually_exclusive_group()  # one is required (checked in run_all: not in worker mode)
    src.add_argument("--images", metavar="FOLDER", help="folder of photos (.jpg .jpeg .png .gif .bmp .webp)")
    src.add_argument("--generate-photos", type=int, metavar="N",
                     help="generate a seeded set of N photos of mixed sizes into OUT/photos instead")
    p.add_argument("--confs", nargs="+", default=list(DEFAULT_CONFS), metavar="CONF",
                   help="allocator confs to compare, one engine each; 'default' leaves the variable unset "
                        f"(default: {' '.join(DEFAULT_CONFS)})")
    p.add_argument("--out", default="out/repro-multimodal-oom", help="output folder (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace run files already in OUT")
    p.add_argument("--model", default=SEED_MODEL,
                   help="model path or hub id (default: %(default)s; sim needs a model it has a preset for)")
    p.add_argument("--max-images", type=int, default=None, metavar="N", help="send only the first N photos")
    p.add_argument("--max-tokens", type=int, default=SEED_MAX_TOKENS, help="SamplingParams.max_tokens (%(default)s)")
    p.add_argument("--question", default=SEED_QUESTION, help="the question asked about each photo")
    eng = p.add_argument_group("engine arguments (defaults: the PR's script)")
    eng.add_argument("--tensor-parallel-size", type=int, default=SEED_ENGINE_ARGS["tensor_parallel_size"])
    eng.add_argument("--max-model-len", type=int, default=SEED_ENGINE_ARGS["max_model_len"])
    eng.add_argument("--max-num-seqs", type=int, default=SEED_ENGINE_ARGS["max_num_seqs"])
    eng.add_argument("--max-num-batched-tokens", type=int, default=SEED_ENGINE_ARGS["max_num_batched_tokens"])
    eng.add_argument("--gpu-memory-utilization", type=float, default=SEED_ENGINE_ARGS["gpu_memory_utilization"])
    eng.add_argument("--enforce-eager", action="store_true", help="no graph capture (npu/cuda)")
    rec = p.add_argument_group("recording (npu/cuda)")
    rec.add_argument("--snapshot-max-entries", type=int, default=0, metavar="N",
                     help="record allocator history in every rank (ring buffer of N events) and dump one snapshot "
                          "per rank into OUT/snapshots at the end; 0 = off (default)")
    rec.add_argument("--oom-snapshot", choices=tuple(OOM_SNAPSHOT_MODES), default="off",
                     help="npu: let torch_npu dump a snapshot when an OOM happens (OOM_SNAPSHOT_ENABLE: "
                          "state=2, history=1 - unbounded history) into OUT/snapshots")
    rec.add_argument("--timeout-per-conf", type=float, default=None, metavar="S",
                     help="stop a conf's engine after S seconds (its samples so far are kept)")
    simg = p.add_argument_group("sim backend")
    simg.add_argument("--sim-device-gib", type=float, default=64.0,
                      help="simulated device memory per rank (default 64: Atlas 800I A2)")
    simg.add_argument("--vllm-ascend", default=None, metavar="VERSION",
                      help="model that vllm-ascend's conf rewrite (e.g. 0.14.0rc1 adds expandable_segments:True "
                           "when unset); default: none, as v0.13.0 in the PR")
    simg.add_argument("--seed", type=int, default=0, help="seed of the generated photo set and the simulation")
    p.add_argument("--torch-version", default=None, metavar="V",
                   help="torch_npu / torch version to validate confs for (default: newest known)")
    p.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)  # internal: run one conf
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.worker:
            return worker_main(args.worker)
        if args.max_images is not None and args.max_images < 1:
            raise ReproError("--max-images must be >= 1")
        if args.snapshot_max_entries < 0:
            raise ReproError("--snapshot-max-entries must be >= 0")
        return run_all(args)
    except ReproError as exc:
        print(f"repro_multimodal_oom.py: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # required: vLLM starts its engine processes with spawn
    sys.exit(main())

"""What a real engine's start does to ``os.environ`` and the allocator conf, and how it is undone.

The engine processes read the allocator conf from the environment they inherit, so the start works on the
environment: it measures the device baseline from a throw-away child, snapshots the environment, applies the
vllm-ascend policy (NPU platform), and puts back what ``vllm.LLM()`` changed (docs/vllm-facts.md, "Real vLLM
on this kind of machine"). Kept apart from the processes and the requests: none of this touches vLLM.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal

from toolkit.conf import guard
from toolkit.core.errors import EngineError, TooLateError
from toolkit.engines.vllm.reports import ALLOC_VARS

PROBE_BACKEND = {"cpu": "host", "cuda": "cuda", "npu": "npu"}
BASELINE_TIMEOUT_S = 180.0
PROBE_VAR = "MEMLAB_PROBE_BACKEND"  # read by toolkit.worker.extension in every worker
Policy = Literal["upstream", "recommended", "none"]
POLICIES = ("upstream", "recommended", "none")

Changes = dict[str, tuple[str | None, str | None]]  # var -> (before, after)


def check_not_too_late(platform: str, backend: str, in_process: bool) -> None:
    """In-process, the worker's allocator lives here: a conf cannot reach an allocator already initialised."""
    if in_process and platform in guard.inspect_allocators().initialized_platforms and backend != "cpu":
        raise TooLateError(guard.too_late_message(platform, in_process=True))


def measure_baseline(backend: str, timeout_s: float = BASELINE_TIMEOUT_S) -> dict[str, Any]:
    """Device memory in use before the engine starts, measured in a child process (this one stays clean)."""
    probe_backend = PROBE_BACKEND[backend]
    if probe_backend == "host":
        return {"backend": "host", "method": "none", "used_bytes": {}, "total_bytes": {}}
    cmd = [sys.executable, "-m", "toolkit.worker.probe", "baseline", "--backend", probe_backend]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise EngineError(f"measuring the device baseline took over {timeout_s:.0f} s: is the device busy?") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EngineError(f"cannot read {backend} device memory before the start: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def apply_policy(environ: MutableMapping[str, str], platform: str, policy: Policy,
                 vllm_ascend_version: str | None, sleep_mode: bool, rl_enabled: bool) -> tuple[str, ...]:
    """Apply the vllm-ascend policy to ``environ`` (NPU platform only); returns what it said."""
    if platform != "npu" or policy == "none":
        return () if platform != "npu" else ("none applied (vllm-ascend, if installed, still applies its own)",)
    from toolkit.conf import policy as pol

    if policy == "upstream":
        result = pol.upstream_policy(environ, vllm_ascend_version, sleep_mode=sleep_mode, rl_enabled=rl_enabled)
        notes = [f"{result.policy}: {line}" for line in result.log] or [f"{result.policy}: no change"]
        notes += [f"quirk {q.code}: {q.message}" for q in result.quirks]
    else:
        result = pol.recommended_policy(environ, sleep_mode=sleep_mode)
        notes = [f"{result.policy}: {n}" for n in result.notes] or [f"{result.policy}: no change"]
    for var in (pol.NPU_VAR, pol.GENERIC_VAR):
        if var in result.after:
            environ[var] = result.after[var]
        else:
            environ.pop(var, None)
    return tuple(notes)


def installed_vllm_ascend() -> str | None:
    import importlib.metadata

    for dist in ("vllm-ascend", "vllm_ascend"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


@dataclass(frozen=True)
class Prepared:
    """The allocator variables around the policy, and the environment with only the toolkit's changes."""

    requested: dict[str, str | None]  # what the user set (``%alloc_conf``), before the policy
    given: dict[str, str | None]  # what the engine processes inherit, after it
    policy_notes: tuple[str, ...]
    ours: dict[str, str]  # the snapshot plus the toolkit's own changes: what vLLM changed is measured against it


def prepare(environ: MutableMapping[str, str], saved: Mapping[str, str], *, backend: str, platform: str,
            policy: Policy, vllm_ascend_version: str | None, engine_args: Mapping[str, Any]) -> Prepared:
    """Apply the policy and the probe backend to ``environ`` (``saved``: its snapshot before the start)."""
    requested = {v: saved.get(v) for v in ALLOC_VARS}
    rl = bool(((engine_args.get("additional_config") or {}).get("rl_config") or {}).get("enabled"))
    version = vllm_ascend_version or (installed_vllm_ascend() if backend == "npu" else None)
    notes = apply_policy(environ, platform, policy, version, bool(engine_args.get("enable_sleep_mode")), rl)
    given = {v: environ.get(v) for v in ALLOC_VARS}
    environ[PROBE_VAR] = PROBE_BACKEND[backend]
    ours = dict(saved)  # what the environment would be with only the toolkit's changes
    for var in (*ALLOC_VARS, PROBE_VAR):
        if var in environ:
            ours[var] = environ[var]
        else:
            ours.pop(var, None)
    return Prepared(requested, given, notes, ours)


def changes(before: Mapping[str, str], after: Mapping[str, str]) -> Changes:
    """What differs between two environments (var -> (before, after))."""
    return {k: (before.get(k), after.get(k)) for k in set(before) | set(after) if before.get(k) != after.get(k)}


def restore(environ: MutableMapping[str, str], saved: Mapping[str, str]) -> Changes:
    """Put ``environ`` back to ``saved``; returns what had changed (var -> (before, after))."""
    changed = changes(saved, environ)
    for k, (before, _after) in changed.items():
        if before is None:
            environ.pop(k, None)
        else:
            environ[k] = before
    return changed


def set_by_start(environ: Mapping[str, str], saved: Mapping[str, str]) -> tuple[dict[str, str | None],
                                                                                 dict[str, str | None]]:
    """In-process mode, where the worker lives here and may read its variables, nothing is restored after the
    start: (each variable the start changed -> its value before, -> its value the start left), for
    :func:`restore_at_stop`."""
    before = {k: b for k, (b, _a) in changes(saved, environ).items()}
    return before, {k: environ.get(k) for k in before}


def restore_at_stop(environ: MutableMapping[str, str], before: Mapping[str, str | None],
                    left: Mapping[str, str | None]) -> None:
    """Undo what the start set, only where nobody changed it since (a conf set with ``%alloc_conf`` meanwhile is
    the user's, not ours)."""
    for key, value in before.items():
        if environ.get(key) != left[key]:
            continue  # changed since the start by someone else: theirs
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value

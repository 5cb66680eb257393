"""The engine's processes: importing vLLM, finding the EngineCore and worker processes, stopping them.

vLLM V1 runs its engine core and workers in processes of their own (CPU vLLM always spawns them), which
outlive a forgotten reference unless shut down explicitly (docs/vllm-facts.md, "vLLM process model" and
"Real vLLM on this kind of machine"). This module knows those processes; the environment they inherit is
``_environment``'s, the requests they serve ``_requests``'s.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from toolkit.core.errors import EngineError

RPC_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
EXIT_SHUTDOWN_TIMEOUT_S = 5.0

# variables ``import vllm`` set in this process (vllm/env_override.py and the platform plugins); they are
# restored with the rest after a start, and given again to every in-process engine
IMPORT_ENV: dict[str, str] = {}

MAIN_GUARD_HINT = ("a script must start engines under `if __name__ == \"__main__\":`: CPU vLLM (and vLLM on "
                   "Ascend) spawns its processes, which import the script again")


def import_vllm() -> Any:
    """``vllm``, imported on first use (never at module import); records what the import set in ``os.environ``."""
    if "vllm" in sys.modules:
        return sys.modules["vllm"]
    before = dict(os.environ)
    try:
        import vllm
        from vllm import LLM  # noqa: F401  (the entry point's imports set more variables)
    except Exception as exc:  # ImportError, or a broken install (e.g. torchvision, see _cpu_env)
        raise EngineError(
            f"vLLM cannot be imported in this Python ({sys.executable}): {type(exc).__name__}: {exc}. "
            "Install it (CPU: scripts/setup_cpu_engine.sh; NPU: vllm + vllm-ascend) or use --backend sim"
        ) from None
    IMPORT_ENV.update({k: v for k, v in os.environ.items() if before.get(k) != v})
    return vllm


def child_pids() -> set[int]:
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}


def in_spawned_reimport() -> bool:
    """True inside a process vLLM spawned that is re-running the user's script (``__mp_main__``)."""
    import multiprocessing

    main = sys.modules.get("__main__")
    return multiprocessing.parent_process() is not None and getattr(main, "__name__", "") == "__mp_main__"


def script_without_main_guard() -> bool:
    """The program is a script file whose source never tests ``__name__`` (spawned children re-run it)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path or not str(path).endswith(".py"):
        return False
    try:
        return "__main__" not in Path(path).read_text(errors="replace")
    except OSError:
        return False


def start_failure(model: str, backend: str, exc: BaseException) -> EngineError:
    """The error for a ``vllm.LLM()`` that raised: its last line, and the ``__main__`` guard hint if it applies."""
    hint = f" ({MAIN_GUARD_HINT})" if script_without_main_guard() else ""
    return EngineError(f"vLLM failed to start {model} on {backend}: {type(exc).__name__}: "
                       f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r}{hint}")


def engine_processes(pids: Iterable[int]) -> tuple[int, ...]:
    """The new child processes that belong to the engine: multiprocessing's resource tracker (started by the
    first spawn, shared by every later one, alive as long as this process) is not the engine's."""
    import psutil

    out = []
    for pid in pids:
        try:
            cmd = " ".join(psutil.Process(pid).cmdline())
        except psutil.Error:
            continue
        if "multiprocessing.resource_tracker" not in cmd and "multiprocessing.forkserver" not in cmd:
            out.append(pid)
    return tuple(sorted(out))


def alive(pids: Iterable[int]) -> list[int]:
    """The processes among ``pids`` that still run (a zombie does not)."""
    import psutil

    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def shutdown_llm(llm: Any, timeout_s: float) -> None:
    """Ask vLLM to stop its engine core now (works even while other references to ``llm`` survive)."""
    try:
        llm.llm_engine.engine_core.shutdown(timeout=timeout_s)
    except TypeError:  # an engine-core client whose shutdown takes no timeout
        llm.llm_engine.engine_core.shutdown()


def exit_cleanup(holder: dict[str, Any]) -> None:
    """weakref.finalize callback (kernel exit or engine garbage-collected): stop the engine processes."""
    llm = holder.pop("llm", None)
    if llm is not None:
        try:
            shutdown_llm(llm, EXIT_SHUTDOWN_TIMEOUT_S)
        except Exception:
            pass
    pids = alive(holder.get("pids", ()))
    if pids:
        import psutil

        for pid in pids:
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass


def holders_of(target: Any, namespaces: Sequence[Mapping[str, Any]]) -> list[str]:
    """The names in ``namespaces`` (e.g. the notebook's ``user_ns``) bound to ``target``."""
    out: list[str] = []
    for ns in namespaces:
        out += [k for k, v in list(ns.items()) if v is target]
    return out


def kill_stragglers(pids: Iterable[int], timeout_s: float, notes: list[str]) -> tuple[int, ...]:
    """Wait up to ``timeout_s`` for the engine processes to exit, kill those that do not; returns the killed."""
    import psutil

    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    _gone, still = psutil.wait_procs(procs, timeout=timeout_s)
    killed = []
    for p in still:
        try:
            p.kill()
            killed.append(p.pid)
        except psutil.NoSuchProcess:
            pass
    if killed:
        psutil.wait_procs(list(still), timeout=5)
        notes.append("some engine processes did not exit and were killed")
    return tuple(killed)


def teardown_in_process(notes: list[str]) -> None:
    """In-process mode: the worker's distributed state lives in this process; tear it down for the next."""
    try:
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        destroy_distributed_environment()
    except Exception as exc:  # pragma: no cover (depends on the vLLM build)
        notes.append(f"in-process teardown: {type(exc).__name__}: {exc}")

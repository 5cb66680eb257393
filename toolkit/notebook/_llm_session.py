"""The plain Python API behind ``%ascend_llm``: start, stop, inspect and use one engine per kernel (or script).

Everything the magic does is a method here, so a script does the same without IPython (CPU vLLM spawns its
processes, so a script needs a main guard)::

    from toolkit.notebook._llm_session import LLMSession

    if __name__ == "__main__":
        s = LLMSession()
        s.conf.set_conf("expandable_segments:True")          # the conf Session (what %alloc_conf calls)
        print(s.start("/models/Qwen3-VL-8B-Instruct", backend="auto", tensor_parallel_size=2))
        run = s.run_images("photos/", max_tokens=1024)       # one MemorySample per request and rank
        print(s.stop())

Importing this module never imports torch or vLLM, and never touches a device: the backend is detected from
installed packages and device files, and the real engine is imported only when it starts.
"""

from __future__ import annotations

import glob
import html
import importlib.util
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.engines.base import Engine
from toolkit.workload.engine_args import EngineArgs
from toolkit.core.errors import ToolkitError
from toolkit.core.vocab import BACKEND_CHOICES
from toolkit.notebook.conf_session import WRITE_VAR, Session
from toolkit.core.tables import rows_html, rows_text

# engine arguments the simulator models; the others (enforce_eager, sleep mode, multi-modal limits...) only
# exist on a real engine (one definition: toolkit.workload.engine_args.EngineArgs)
SIM_ARGS = EngineArgs.SIMULATED
DEFAULT_RUN_DIR = "runs"


class EngineSessionError(ToolkitError):
    """A wrong step with engines (none running, unknown backend...); the message says what to do."""


def module_installed(name: str, find_spec: Any = importlib.util.find_spec) -> bool:
    """Whether ``name`` is an installed module or package, found without importing it.

    A folder without ``__init__.py`` on ``sys.path`` imports as an empty namespace package: this
    repository's ``vllm_ascend/`` runbook folder does whenever the repository root is on the path (an
    editable install, a notebook started there), and ``find_spec`` then finds it. A real package or
    module has a file behind it (``spec.origin``); a namespace package has none (PEP 420).
    """
    try:
        spec = find_spec(name)
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin not in (None, "namespace")


def detect_backend(find_spec: Any = importlib.util.find_spec, exists: Any = glob.glob) -> str:
    """``npu`` if torch_npu and vllm-ascend are installed and an Ascend device file exists, else ``cuda`` if
    torch and vLLM are installed and an NVIDIA device file exists, else ``sim``.

    Never imports torch (a device query here could initialise the allocator before the conf is set); the
    real engine checks the device when it starts. ``cpu`` is never picked automatically: ask for it.
    """
    def have(*mods: str) -> bool:
        return all(module_installed(m, find_spec) for m in mods)

    if have("torch_npu", "vllm", "vllm_ascend") and exists("/dev/davinci[0-9]*"):
        return "npu"
    if have("torch", "vllm") and (exists("/dev/nvidia[0-9]*") or exists("/dev/nvidiactl")):
        return "cuda"
    return "sim"


@dataclass(frozen=True)
class EngineStatus:
    """What runs now (plain data only: holding it never keeps an engine alive)."""

    backend: str | None
    simulated: bool
    rows: tuple[tuple[str, str], ...]
    conf_rows: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()

    def _sections(self) -> list[tuple[str, Sequence[tuple[str, str]]]]:
        title = "no engine" if self.backend is None else (
            f"engine [{self.backend}]" + (" [simulated]" if self.simulated else ""))
        out: list[tuple[str, Sequence[tuple[str, str]]]] = [(title, self.rows)]
        if self.conf_rows:
            out.append(("allocator conf, read back from the workers" if not self.simulated
                        else "allocator conf [simulated]", self.conf_rows))
        if self.notes:
            out.append(("notes", [("note", n) for n in self.notes]))
        return out

    def __str__(self) -> str:
        return "\n".join(f"{title}\n{rows_text(rows)}" for title, rows in self._sections())

    __repr__ = __str__

    def _repr_html_(self) -> str:
        out = [f"<b>{html.escape(title)}</b>" + rows_html(rows) for title, rows in self._sections()]
        return "<div class='memlab-engine'>" + "".join(out) + "</div>"


class LLMSession:
    """One engine at a time, started with the conf the conf ``Session`` left in the environment.

    Args:
        conf: the conf session shared with ``%alloc_conf`` (default: a new one on ``os.environ``).
        run_dir: where ``run_images`` writes its run files (``None``: keep runs in memory).
    """

    def __init__(self, conf: Session | None = None, *, run_dir: str | os.PathLike[str] | None = DEFAULT_RUN_DIR
                 ) -> None:
        self.conf = conf or Session()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.engine: Engine | None = None
        self._last_run: Any = None  # the Run of the latest run_images through this session
        self._engine_conf: str | None = None  # the platform variable when the engine started

    # -- conf ----------------------------------------------------------------------------------------------
    def pending_conf(self) -> str | None:
        """The conf a new engine would start with (the platform's variable, as ``%alloc_conf`` wrote it)."""
        return self.conf.environ.get(WRITE_VAR[self.conf.platform])

    def conf_changed(self) -> str | None:
        """A one-line note when the pending conf differs from the running engine's, else None."""
        if self.engine is None:
            return None
        pending = self.pending_conf()
        readback = getattr(self.engine, "readback", None)  # a real engine: what its processes inherited
        given = readback.given if readback is not None else {}
        # in-process engines keep the policy's value in this environment while they run: that is no change
        if pending == self._engine_conf or pending == given.get(WRITE_VAR[self.conf.platform], self._engine_conf):
            return None
        return (f"the conf changed since the engine started ({self._engine_conf!r} -> {pending!r}): an allocator "
                "reads its conf once, at start, so this needs a new engine: run %ascend_llm MODEL again "
                "(LLMSession.start)")

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self, model: str, *, backend: str = "auto", name: str | None = None, **engine_args: Any
              ) -> EngineStatus:
        """Start ``model`` on ``backend`` with the pending conf (stopping a running engine first).

        ``engine_args``: ``vllm.LLM`` keyword arguments (``tensor_parallel_size``, ``max_model_len``,
        ``max_num_seqs``, ``max_num_batched_tokens``, ``gpu_memory_utilization``, ``dtype``, ``enforce_eager``,
        ``enable_sleep_mode``, ``limit_mm_per_prompt``, ``mm_processor_cache_gb``, ...), plus ``policy`` and
        ``vllm_ascend_version`` (see ``VllmEngine``) and ``max_tokens`` (default per request).
        """
        if backend not in BACKEND_CHOICES:
            raise EngineSessionError(f"unknown backend {backend!r}: use one of {', '.join(BACKEND_CHOICES)}")
        chosen = detect_backend() if backend == "auto" else backend
        notes: list[str] = []
        if backend == "auto":
            notes.append(f"backend auto -> {chosen}")
        if self.engine is not None:
            old_conf, pending = self._engine_conf, self.pending_conf()
            report = self.stop()
            why = (f"the conf changed ({old_conf!r} -> {pending!r}) and an allocator reads its conf once, "
                   "at start: a new conf means a new engine") if old_conf != pending else "one engine at a time"
            notes.append(f"stopped the previous engine ({report.name}) first: {why}")
        conf = self.pending_conf()
        if chosen == "sim":
            self.engine = self._start_sim(model, name, engine_args, notes)
        else:
            from toolkit.engines.vllm.engine import VllmEngine

            platform = "cuda" if chosen == "cuda" else self.conf.platform
            if chosen == "cuda" and self.conf.platform != "cuda":
                notes.append("the cuda backend reads PYTORCH_CUDA_ALLOC_CONF: set it with "
                             "%alloc_conf --platform cuda --use ...")
            self.engine = VllmEngine(model, backend=chosen, platform=platform, name=name, run_dir=self.run_dir,
                                     environ=self.conf.environ, **engine_args)
        self._engine_conf = conf
        return self.status(tuple(notes))

    def _start_sim(self, model: str, name: str | None, engine_args: dict[str, Any], notes: list[str]) -> Any:
        from toolkit.engines.sim import SimEngine

        args = {k: v for k, v in engine_args.items() if k in SIM_ARGS and v is not None}
        ignored = sorted(k for k, v in engine_args.items()
                         if k not in SIM_ARGS and k not in ("policy", "vllm_ascend_version", "max_tokens")
                         and v is not None)
        if ignored:
            notes.append(f"the simulator does not model {', '.join(ignored)}: ignored")
        platform = self.conf.platform
        version = engine_args.get("vllm_ascend_version") or "main"
        if platform != "npu" or engine_args.get("policy") == "none":
            version = None
        try:
            return SimEngine(model, conf=self.pending_conf(), platform=platform, vllm_ascend_version=version,
                             run_dir=self.run_dir, name=name, **args)
        except (ToolkitError, ValueError) as exc:
            raise EngineSessionError(str(exc)) from None

    def stop(self, namespaces: Sequence[Mapping[str, Any]] = ()) -> Any:
        """Stop the engine and check its processes are gone (a ``StopReport``)."""
        eng, self.engine = self.engine, None
        self._engine_conf = None
        self._last_run = self.last_run if eng is None else max(
            [r for r in (self._last_run, getattr(eng, "last_run", None)) if r is not None],
            key=lambda r: getattr(r, "started_at_ns", 0), default=None)  # keep it after the engine stops
        if eng is None:
            raise EngineSessionError("no engine is running: start one with %ascend_llm MODEL (LLMSession.start)")
        if hasattr(eng, "stop"):
            return eng.stop(namespaces=namespaces)
        from toolkit.engines.vllm.reports import StopReport

        return StopReport(eng.name, notes=("simulated engine: nothing to shut down",))

    def status(self, notes: tuple[str, ...] = ()) -> EngineStatus:
        """What runs, with which conf (read back from the workers), and whether the conf changed since."""
        eng = self.engine
        if eng is None:
            return EngineStatus(None, False, (("pending conf", repr(self.pending_conf())),), notes=notes)
        changed = self.conf_changed()
        notes = (*notes, changed) if changed else notes
        return EngineStatus(eng.backend, eng.simulated, tuple(eng.status_rows()), tuple(eng.conf_rows()), notes)

    # -- requests ------------------------------------------------------------------------------------------
    def _engine(self) -> Any:
        if self.engine is None:
            raise EngineSessionError("no engine is running: start one with %ascend_llm MODEL (LLMSession.start)")
        return self.engine

    def generate(self, prompt: Any = None, image: Any = None, **kwargs: Any) -> Any:
        """One request on the running engine (see ``VllmEngine.generate`` / ``SimEngine.generate``)."""
        return self._engine().generate(prompt, image, **kwargs)

    def run_images(self, images: str | os.PathLike[str] | Iterable[Any], prompt: str | None = None,
                   **kwargs: Any) -> Any:
        """Send images one at a time; a ``Run`` with one sample per request and rank, written as it goes."""
        self._last_run = self._engine().run_images(images, prompt, **kwargs)
        return self._last_run

    @property
    def last_run(self) -> Any:
        """The newest run made through this session or directly through its engine (``llm.run_images``,
        as the README shows): what ``%mem_plot`` with no argument plots."""
        engine_run = getattr(self.engine, "last_run", None)
        runs = [r for r in (self._last_run, engine_run) if r is not None]
        return max(runs, key=lambda r: getattr(r, "started_at_ns", 0)) if runs else None

    @last_run.setter
    def last_run(self, run: Any) -> None:
        self._last_run = run

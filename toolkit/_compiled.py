"""The compiled twin: which modules ``setup.py`` compiles with Cython, and which copy ``import`` loads.

The hot modules below are compiled from the **same .py files** (Cython's pure-Python mode; nothing is
rewritten), into extension modules that sit next to their sources, so a normal ``import`` loads the
extension. Two rules keep the pure-Python path honest (docs/performance.md, "The compiled twin"):

- ``MEMLAB_PURE_PYTHON=1`` loads every module below from its .py (a meta-path finder, installed only
  when that variable is set or a build is stale). Tests run both on the same streams and require
  identical results (tests/test_compiled_twin.py).
- A stale build is never used silently: the build writes the SHA-256 of each source it compiled into
  ``toolkit/_compiled_manifest.json``; when any .py no longer matches (or a .pxd beside it changed),
  every module below is loaded from its .py, with one warning saying to run ``make build``.

This module is plain Python and is never compiled itself; ``setup.py`` loads it by path (it imports
nothing from the toolkit). ``toolkit.sim``, ``toolkit.replay`` and ``toolkit.snapshot`` import it first, so the
choice is made before any of their hot modules loads, and only by code that uses them.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

# Compiled, in dependency order. Everything on the simulator's hot path (malloc/free, split/merge, the
# free-block index, stats, trace recording, the Ascend driver layer), the replay loop and the opcode prescan.
COMPILED_MODULES: tuple[str, ...] = (
    "toolkit.sim._addresses",
    "toolkit.sim._stats",
    "toolkit.sim._blocks",
    "toolkit.sim._pools",
    "toolkit.sim.ascend.devmm",
    "toolkit.sim.ascend.runtime",
    "toolkit.sim._events",
    "toolkit.sim._expandable",
    "toolkit.sim._release",
    "toolkit.sim.device",
    "toolkit.replay._replayer",
    "toolkit.snapshot._prescan",
)
PURE_ENV = "MEMLAB_PURE_PYTHON"
ROOT = Path(__file__).resolve().parent.parent  # the folder that holds toolkit/
MANIFEST = Path(__file__).resolve().parent / "_compiled_manifest.json"
_STATE: dict[str, Any] = {"pure": set(), "stale": [], "finder": None}


def source_path(module: str, root: Path = ROOT) -> Path:
    return root / (module.replace(".", "/") + ".py")


def source_digest(module: str) -> str:
    """SHA-256 of the module's .py and, when there is one, the .pxd beside it (both shape the extension)."""
    src = source_path(module)
    h = hashlib.sha256(src.read_bytes())
    pxd = src.with_suffix(".pxd")
    if pxd.is_file():
        h.update(b"\0pxd\0" + pxd.read_bytes())
    return h.hexdigest()


def extension_path(module: str, root: Path = ROOT) -> Path | None:
    """The built extension next to the module's .py (under ``root``), if there is one."""
    src = source_path(module, root)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = src.with_name(src.stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def pure_requested(environ: Any = None) -> bool:
    value = (os.environ if environ is None else environ).get(PURE_ENV, "")
    return value.strip().lower() not in ("", "0", "false", "no")


def write_manifest(out_root: Path = ROOT, modules: Sequence[str] = COMPILED_MODULES) -> dict[str, Any]:
    """Record, for every extension built under ``out_root`` (the tree, or a wheel's build folder), the digest
    of the source it was built from (setup.py calls this after building)."""
    entries = {}
    for module in modules:
        ext = extension_path(module, out_root)
        if ext is not None:
            entries[module] = {"source_sha256": source_digest(module),
                               "extension": ext.name, "extension_bytes": ext.stat().st_size}
    (out_root / "toolkit" / MANIFEST.name).write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n",
                                                      encoding="utf-8")
    return entries


def stale_modules() -> list[str]:
    """Built modules whose .py (or .pxd) changed since the build or whose build left no record, and the
    modules that did not build while others did; empty when nothing was built (a pure-Python install)."""
    built = [m for m in COMPILED_MODULES if extension_path(m) is not None]
    if not built:
        return []
    try:
        entries = json.loads(MANIFEST.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        entries = {}
    # a module that did not build while others did is stale too (a mix of the two is never used)
    stale = [m for m in COMPILED_MODULES if m not in built]
    for module in built:
        entry = entries.get(module) or {}
        ext = extension_path(module)
        try:
            same = (entry.get("source_sha256") == source_digest(module)
                    and ext is not None and entry.get("extension") == ext.name
                    and entry.get("extension_bytes") == ext.stat().st_size)
        except OSError:
            same = False
        if not same:
            stale.append(module)
    return stale


class _SourceFinder:
    """Meta-path finder that loads the named toolkit modules from their .py, not their extension."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Any = None, target: ModuleType | None = None) -> Any:
        if fullname not in self.names:
            return None
        src = source_path(fullname)
        if not src.is_file():
            return None
        return importlib.util.spec_from_file_location(fullname, src)


def install() -> None:
    """Run once, when a package holding compiled modules is first imported (below): does nothing unless pure
    Python is asked for or a build is stale. ``import toolkit`` alone never pays for the source digests."""
    if _STATE["finder"] is not None:
        return
    if not pure_requested():
        stale = stale_modules()
        _STATE["stale"] = stale
        if not stale:
            return
        # all or nothing: the compiled modules share extension types, so a mix would be slow (and untested)
        warnings.warn(f"toolkit: the compiled {', '.join(stale)} {'is' if len(stale) == 1 else 'are'} older than "
                      f"{'its' if len(stale) == 1 else 'their'} source; using the pure-Python modules "
                      "(run `make build` to rebuild)", RuntimeWarning, stacklevel=3)
    names = set(COMPILED_MODULES)
    finder = _SourceFinder(names)
    _STATE["pure"], _STATE["finder"] = names, finder
    sys.meta_path.insert(0, finder)


def loaded_kinds() -> dict[str, str]:
    """module -> 'compiled' | 'python' | 'not imported', for the modules above (tests and benchmarks)."""
    kinds = {}
    for module in COMPILED_MODULES:
        mod = sys.modules.get(module)
        if mod is None:
            kinds[module] = "not imported"
        else:
            origin = getattr(mod, "__file__", "") or ""
            kinds[module] = "python" if origin.endswith(".py") else "compiled"
    return kinds


def import_all() -> dict[str, str]:
    """Import every module above and say which copy each is."""
    for module in COMPILED_MODULES:
        importlib.import_module(module)
    return loaded_kinds()


if __name__ == "toolkit._compiled":  # imported as the package's module (setup.py loads it under another name)
    install()

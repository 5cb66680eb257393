"""The tree shows the design: internal modules are underscored, and docs/design.md's module map is current.

The rule (docs/design.md, "The public API"): a module that only its own package imports is internal and its
name starts with ``_``; a module without one is a layer's interface (another package imports it) or an entry
point another process loads by name. ``toolkit/_testing/`` is private as a whole.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Loaded by name from another process, never imported by the toolkit itself.
ENTRY_POINTS = {
    "toolkit.cli.main",  # the console script (pyproject [project.scripts])
    "toolkit.worker.extension",  # vLLM loads worker_extension_cls by qualname inside its workers
    "toolkit.worker.probe",  # python -m toolkit.worker.probe (baseline, in a throw-away child)
    "toolkit.worker.record_program",  # python -m toolkit.worker.record_program (make record)
}


def _module_map() -> object:
    spec = importlib.util.spec_from_file_location("module_map", ROOT / "scripts" / "module_map.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_design_module_map_is_current() -> None:
    mm = _module_map()
    text = mm.DESIGN.read_text(encoding="utf-8")  # type: ignore[attr-defined]
    assert mm.updated(text) == text, "docs/design.md's module map is stale: run python scripts/module_map.py"  # type: ignore[attr-defined]


def _layout() -> tuple[list[tuple[str, bool, set[str]]], set[str]]:
    grimp = pytest.importorskip("grimp")
    sys.path.insert(0, str(ROOT))
    try:
        graph = grimp.build_graph("toolkit", cache_dir=None)
    finally:
        sys.path.remove(str(ROOT))
    packages = {m for m in graph.modules if any(o.startswith(m + ".") for o in graph.modules)}
    rows = []
    for mod in sorted(graph.modules - packages):
        parent, leaf = mod.rsplit(".", 1)
        if parent == "toolkit" or mod.startswith("toolkit._testing"):
            continue
        outside = {i for i in graph.find_modules_that_directly_import(mod) if not i.startswith(parent + ".")}
        rows.append((mod, leaf.startswith("_"), outside - {parent}))
    return rows, packages


def test_internal_modules_are_underscored_and_interfaces_are_not() -> None:
    rows, _ = _layout()
    assert len(rows) > 50  # the walk saw the tree
    wrongly_public = [m for m, private, outside in rows if not private and not outside and m not in ENTRY_POINTS]
    wrongly_private = [f"{m} (imported by {sorted(outside)[0]})" for m, private, outside in rows if private and outside]
    assert not wrongly_public, f"only their own package imports these: underscore them: {wrongly_public}"
    assert not wrongly_private, f"other packages import these internal modules: {wrongly_private}"

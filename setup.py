"""Build the compiled twin of the simulator's hot modules (Cython, pure-Python mode: the same .py files).

``pip install -e '.[dev]'`` (the Makefile's install line) runs this and builds the extensions in place
next to their sources; ``python setup.py build_ext --inplace`` (``make build``) rebuilds them. Every
extension is optional: without Cython or a C compiler the package installs and runs as pure Python.
See docs/performance.md ("The compiled twin").
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent

def _compiled() -> Any:
    """toolkit/_compiled.py, loaded by path (building must not import the package)."""
    spec = importlib.util.spec_from_file_location("_memlab_compiled", ROOT / "toolkit" / "_compiled.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


COMPILED = _compiled()


class OptionalBuildExt(build_ext):
    """Build what compiles; a missing compiler or a failed module leaves the pure-Python module in use."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - no compiler at all: stay pure Python
            print(f"WARNING: the compiled twin was not built ({exc}); toolkit runs as pure Python", file=sys.stderr)
        COMPILED.write_manifest(ROOT if self.inplace else Path(self.build_lib))

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            print(f"WARNING: {ext.name} not compiled ({exc}); its .py is used", file=sys.stderr)


def extensions() -> list:
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("WARNING: Cython is not installed; toolkit runs as pure Python", file=sys.stderr)
        return []
    from setuptools import Extension

    exts = [Extension(name, [str(COMPILED.source_path(name).relative_to(ROOT))], optional=True, extra_compile_args=["-g0"])
            for name in COMPILED.COMPILED_MODULES]
    try:
        return cythonize(exts, language_level=3, quiet=True, nthreads=0,
                         compiler_directives={"annotation_typing": False, "binding": True})
    except Exception as exc:  # noqa: BLE001 - a Cython that cannot translate them: stay pure Python
        print(f"WARNING: Cython could not translate the hot modules ({exc}); toolkit runs as pure Python",
              file=sys.stderr)
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})

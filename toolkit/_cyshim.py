"""Stand-in for the ``cython`` module when Cython is not installed (plain-Python runs of the hot modules).

The hot modules (toolkit/_compiled.py) declare a few local types with ``@cython.locals``; compiled, Cython
reads them; as plain Python they are these no-ops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
compiled = False


def locals(**_types: Any) -> Callable[[F], F]:  # noqa: A001 - cython.locals' name
    return lambda fn: fn
Py_ssize_t = int  # cython.Py_ssize_t
longlong = int  # cython.longlong

"""A pickle reader that builds plain data and nothing else.

A snapshot pickle recorded by someone else is untrusted input: ``pickle.load`` would import and call
whatever the file names (``posix.system``, ``builtins.exec`` ...). PyTorch's ``_dump_snapshot`` writes
``pickle.dump(_snapshot())`` of dicts, lists, tuples, strs, ints, floats and bools (the real trace in
``shared/data/traces`` uses no GLOBAL/REDUCE opcode at all), so this reader refuses every opcode that
would look up a global (GLOBAL, STACK_GLOBAL, INST, OBJ and EXT1/2/4 go through ``find_class``; see
``loads_plain`` for the one EXT shortcut) or a persistent id. Without a global there is nothing callable on the stack, so REDUCE/BUILD/NEWOBJ can only
fail, never run code.

The only names it accepts are replaced by our own pure functions (the named module is never imported):

- ``_codecs.encode(str, "latin1")``: how protocols 0-2 spell ``bytes``;
- ``torch.jit._pickle.restore_type_tag`` / ``build_intlist`` / ``build_doublelist`` /
  ``build_boollist``: what TorchScript's pickler (torch/csrc/jit/serialization/pickler.cpp) may emit for
  typed containers; they only wrap plain lists/dicts.
"""

from __future__ import annotations

import _compat_pickle  # stdlib: the Python 2 -> 3 name map pickle applies for protocols 0-2
import copyreg
import io
import pickle
from collections.abc import Callable
from typing import Any

from toolkit.core.errors import bounded_repr
from toolkit.snapshot._prescan import prescan


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for something other than plain data (a global or a persistent id)."""


def _latin1_bytes(text: object, encoding: object = "latin1", *_: object) -> bytes:
    # protocol 0-2 pickle bytes as _codecs.encode(<latin-1 str>, "latin1"); nothing else is allowed
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"refused _codecs.encode{(type(text).__name__, encoding)!r}")
    return text.encode("latin1")


def _restore_type_tag(value: object, _type_str: object = None) -> object:
    if not isinstance(value, (list, dict, str, int, float, bytes)) and value is not None:
        raise UnsafePickleError(f"refused restore_type_tag on {type(value).__name__}")
    return value


def _plain_list(items: object) -> list[Any]:
    if not isinstance(items, list):
        raise UnsafePickleError(f"refused list builder on {type(items).__name__}")
    return list(items)


_SAFE_GLOBALS: dict[tuple[str, str], Callable[..., object]] = {
    ("_codecs", "encode"): _latin1_bytes,
    ("torch.jit._pickle", "restore_type_tag"): _restore_type_tag,
    ("torch.jit._pickle", "build_intlist"): _plain_list,
    ("torch.jit._pickle", "build_doublelist"): _plain_list,
    ("torch.jit._pickle", "build_boollist"): _plain_list,
}


class _SafeCall:
    """What ``find_class`` hands out: a fresh, attribute-less wrapper around one of our pure functions.

    A pickle's BUILD on it (which would ``setattr`` e.g. ``__defaults__`` on a shared function, changing
    the loader for the rest of the process) calls ``__setstate__``, which refuses; the prescan refuses
    BUILD before that. Each load gets new wrappers, so nothing a pickle does to one outlives the load.
    """

    __slots__ = ("_fn",)
    _fn: Callable[..., object]

    def __init__(self, fn: Callable[..., object]) -> None:
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args: object) -> object:
        return self._fn(*args)

    def __setattr__(self, name: str, value: object) -> None:
        raise UnsafePickleError("a pickle tried to change an allowed function")

    def __setstate__(self, state: object) -> None:
        raise UnsafePickleError("BUILD on an allowed function")


class PlainDataUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` (C implementation, full speed) that refuses every global and persistent id."""

    def find_class(self, module: str, name: str) -> Any:
        # protocols 0-2 write Python 2 names ('__builtin__.exec'): report and match the Python 3 name
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        safe = _SAFE_GLOBALS.get((module, name))
        if safe is None:
            raise UnsafePickleError(f"'{module:.60}.{name:.60}'")
        return _SafeCall(safe)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"persistent id {bounded_repr(pid)}")  # pickle's hook for external objects


def _refuse_extension(self: pickle.Unpickler) -> None:
    raise UnsafePickleError("an extension-registry object (EXT opcode)")


class _PurePlainDataUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """Pure-Python fallback that also refuses EXT1/2/4 outright (used when the C path is not safe)."""

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]
    for _op in (pickle.EXT1, pickle.EXT2, pickle.EXT4):
        dispatch[_op[0]] = _refuse_extension
    del _op
    find_class = PlainDataUnpickler.find_class
    persistent_load = PlainDataUnpickler.persistent_load


def loads_plain(data: bytes) -> Any:
    """Unpickle ``data`` into plain Python data, raising ``UnsafePickleError`` for anything else.

    ``prescan`` runs first (``PickleShapeError`` for shapes no snapshot has; see prescan.py).

    The C unpickler serves EXT opcodes from ``copyreg._extension_cache`` *without* calling
    ``find_class`` (Modules/_pickle.c ``load_extension``). The cache is empty unless this process has
    unpickled a registered extension code, so the fast C path is used only while it is empty; otherwise
    the pure-Python reader (about 20x slower) refuses EXT opcodes itself.
    """
    prescan(data)  # linear, refuses memo abuse, shared tuples, DUP, sets, BUILD, huge ints (prescan.py)
    if copyreg._extension_cache:  # type: ignore[attr-defined]
        return _PurePlainDataUnpickler(io.BytesIO(data)).load()
    return PlainDataUnpickler(io.BytesIO(data)).load()

"""A linear pre-scan of a pickle's opcode stream that refuses the shapes real snapshots never use.

The C unpickler is fast and never runs code once ``find_class`` refuses every global, but a tiny file can
still make it, or whatever looks at its result, do unbounded work:

- a memo index far beyond what was memoized (``LONG_BINPUT 0xffffffff``): CPython's
  Modules/_pickle.c ``_Unpickler_MemoPut`` grows the memo array to ``2 * index`` pointers at once;
- a memoized tuple fetched again (``BINGET``) or a ``DUP``: a 700-byte file builds a tuple DAG whose
  expansion is 2**100 items; tuples hash (and ``repr``) recursively, without caching, so using one as a
  dict key or printing it never returns;
- sets / frozensets, ``LONG4`` and ints wider than 64 bits (a dict of integer keys that collide modulo
  2**61 - 1, CPython's Python/pyhash.c ``_PyHASH_MODULUS``, inserts in quadratic time; within 64 bits
  only a dozen ints share a hash);
- ``BUILD`` (sets attributes on the object below it: on an allowed function that would change its
  defaults for the rest of the process) and out-of-band buffers.

``pickle.dump`` memoizes sequentially (Lib/pickle.py ``Pickler.memoize``: index = ``len(memo)``) and
PyTorch's ``_dump_snapshot`` pickles fresh dicts, lists, strs, ints, floats, bools and ``(0, 0)``
pool-id tuples, sharing dicts and lists (frames) but never a tuple; every recording in
``shared/data/traces`` passes (``tests/hostile/test_loader_bounds.py`` checks them all).

The scan is one pass of a table-driven loop (about 0.1 us per opcode); it does not build any object.
"""

from __future__ import annotations

import pickle
import struct

__all__ = ["PickleShapeError", "prescan"]


class PickleShapeError(pickle.UnpicklingError):
    """The pickle uses a shape no real snapshot has (memo abuse, DUP, sets, BUILD, huge ints...)."""


# arg kinds (negative: handled by the slow path)
_REFUSE = -100
_TABLE = [_REFUSE] * 256
_REASON: dict[int, str] = {}


def _op(code: bytes, arg: int) -> None:
    _TABLE[code[0]] = arg


# no argument
for _c in list(b"(01NRade}l]ostu\x81\x88\x89\x92\x93Q"):  # list(): ints when compiled too (Cython iterates bytes)
    _TABLE[_c] = 0
# fixed-size argument
for _code, _n in ((b"J", 4), (b"K", 1), (b"M", 2), (b"G", 8), (b"\x82", 1), (b"\x83", 2), (b"\x84", 4),
                  (b"\x80", 1)):
    _op(_code, _n)
_MEMOIZE, _BINGET, _LONG_BINGET, _BINPUT, _LONG_BINPUT = -1, -2, -3, -4, -5
_LEN1, _LEN4, _LEN8, _LONG1, _FRAME, _LINE, _LINE2, _GET, _PUT, _STOP, _INTLINE = (
    -6, -7, -8, -9, -10, -11, -12, -13, -14, -15, -16)
_SMALL_TUPLE = -17
for _code in (b"\x85", b"\x86", b"\x87", b")"):  # TUPLE1..3, EMPTY_TUPLE: see _FLAT_TUPLE
    _op(_code, _SMALL_TUPLE)
_op(b"\x94", _MEMOIZE)
_op(b"h", _BINGET)
_op(b"j", _LONG_BINGET)
_op(b"q", _BINPUT)
_op(b"r", _LONG_BINPUT)
for _code in (b"\x8c", b"C", b"U"):  # SHORT_BINUNICODE, SHORT_BINBYTES, SHORT_BINSTRING
    _op(_code, _LEN1)
for _code in (b"X", b"B", b"T"):  # BINUNICODE, BINBYTES, BINSTRING
    _op(_code, _LEN4)
for _code in (b"\x8d", b"\x8e", b"\x96"):  # BINUNICODE8, BINBYTES8, BYTEARRAY8
    _op(_code, _LEN8)
_op(b"\x8a", _LONG1)
_op(b"\x95", _FRAME)
for _code in (b"F", b"S", b"V", b"P"):  # FLOAT, STRING, UNICODE, PERSID: one text line
    _op(_code, _LINE)
for _code in (b"I", b"L"):  # INT, LONG: one text line of digits
    _op(_code, _INTLINE)
for _code in (b"c", b"i"):  # GLOBAL, INST: module and name lines (find_class refuses them later)
    _op(_code, _LINE2)
_op(b"g", _GET)
_op(b"p", _PUT)
_op(b".", _STOP)
_REASON.update({
    ord("2"): "a DUP opcode (pickle.dump never writes it; it shares objects without the memo)",
    ord("b"): "a BUILD opcode (it would set attributes on the object below it); not a plain-data pickle",
    0x8F: "a set (EMPTY_SET)", 0x90: "a set (ADDITEMS)", 0x91: "a frozenset (FROZENSET)",
    0x8B: "a LONG4 integer (wider than any address or size)",
    0x97: "an out-of-band buffer (NEXT_BUFFER)", 0x98: "an out-of-band buffer (READONLY_BUFFER)",
})
# A tuple of up to 3 scalars (the (0, 0) pool id the simulator shares between segments) may be fetched
# again: hashing it costs 3 steps. Any other tuple (TUPLE with MARK, or one holding a container) may not.
_FLAT_TUPLE = 0xF0  # not an opcode: the kind recorded for such a tuple
_SHARED_FORBIDDEN = frozenset(b"t\x85\x86\x87")
_SCALAR_OPS = frozenset(b"JKM\x8aGN\x88\x89\x8cX\x8dCB\x8eUTILFSV")
_SCALAR = bytes(1 if c in _SCALAR_OPS else 0 for c in range(256))
_MAX_LONG1_BYTES = 9  # an unsigned 64-bit value needs 9 bytes of two's complement
_MAX_INT_DIGITS = 24
_U4 = struct.Struct("<I")
_U8 = struct.Struct("<Q")
_I4 = struct.Struct("<i")


def prescan(data: bytes) -> int:
    """Check the opcode stream of ``data``; return how many objects it memoizes.

    Raises ``PickleShapeError`` naming the opcode and its offset for a shape real snapshots never use,
    ``pickle.UnpicklingError`` for a stream that is truncated or not a pickle.
    """
    table = _TABLE
    kinds = bytearray()  # opcode that produced each memo entry
    memoize = kinds.append
    u4 = _U4.unpack_from
    top = p1 = p2 = 0  # kind of the last three values pushed (MEMOIZE, PUT and FRAME push nothing)
    scalar = _SCALAR
    pos = 0
    n = len(data)
    try:
        while True:
            op = data[pos]
            k = table[op]
            if k >= 0:
                pos += 1 + k
                p2 = p1
                p1 = top
                top = op
                continue
            if k == _BINGET:
                i = data[pos + 1]
                pos += 2
            elif k == _MEMOIZE:
                memoize(top)
                pos += 1
                continue
            elif k == _LONG_BINGET:
                i = u4(data, pos + 1)[0]
                pos += 5
            elif k == _LONG1:
                m = data[pos + 1]
                if m > _MAX_LONG1_BYTES:
                    raise PickleShapeError(f"a {m}-byte integer (LONG1) at offset {pos}: wider than 64 bits")
                pos += 2 + m
                p2, p1, top = p1, top, op
                continue
            elif k == _LEN1:
                pos += 2 + data[pos + 1]
                p2, p1, top = p1, top, op
                continue
            elif k == _LEN4:
                m = (_I4 if op == 0x54 else _U4).unpack_from(data, pos + 1)[0]
                if m < 0:
                    raise PickleShapeError(f"a negative string length at offset {pos}")
                pos += 5 + m
                p2, p1, top = p1, top, op
                continue
            elif k == _LEN8:
                pos += 9 + _U8.unpack_from(data, pos + 1)[0]
                p2, p1, top = p1, top, op
                continue
            elif k == _BINPUT or k == _LONG_BINPUT or k == _PUT:
                if k == _BINPUT:
                    i, pos = data[pos + 1], pos + 2
                elif k == _LONG_BINPUT:
                    i, pos = u4(data, pos + 1)[0], pos + 5
                else:
                    i, pos = _line_int(data, pos)
                if i != len(kinds):
                    raise PickleShapeError(
                        f"memo index {i} at offset {pos} but {len(kinds)} objects memoized so far "
                        "(pickle.dump numbers them in order)")
                memoize(top)
                continue
            elif k == _GET:
                i, pos = _line_int(data, pos)
            elif k == _FRAME:
                m = _U8.unpack_from(data, pos + 1)[0]
                if m > n - pos - 9:
                    raise pickle.UnpicklingError("pickle data was truncated (frame longer than the file)")
                pos += 9
                continue
            elif k == _INTLINE:
                end = data.index(b"\n", pos)
                if end - pos > _MAX_INT_DIGITS:
                    raise PickleShapeError(f"a {end - pos - 1}-digit integer at offset {pos}")
                pos = end + 1
                p2, p1, top = p1, top, op
                continue
            elif k == _LINE:
                pos = data.index(b"\n", pos) + 1
                p2, p1, top = p1, top, op
                continue
            elif k == _LINE2:
                pos = data.index(b"\n", data.index(b"\n", pos) + 1) + 1
                p2, p1, top = p1, top, op
                continue
            elif k == _SMALL_TUPLE:  # its items are the last 0-3 values pushed when those were scalars
                items = (top, p1, p2)[: (0x85, 0x86, 0x87).index(op) + 1] if op != 0x29 else ()
                kind = _FLAT_TUPLE if all(scalar[x] for x in items) else op
                pos += 1
                p2, p1, top = p1, top, kind
                continue
            elif k == _STOP:
                return len(kinds)
            else:
                why = _REASON.get(op)
                if why is None:
                    raise pickle.UnpicklingError(f"invalid load key {bytes([op])!r} at offset {pos}")
                raise PickleShapeError(f"{why} at offset {pos}")
            # a GET: the index must name an object memoized before, and not a tuple
            if i >= len(kinds):
                raise PickleShapeError(f"memo index {i} fetched at offset {pos} but only {len(kinds)} "
                                       "objects were memoized")
            p2, p1, top = p1, top, kinds[i]
            if top in _SHARED_FORBIDDEN:
                raise PickleShapeError(f"a memoized tuple fetched again (memo index {i}) at offset {pos}: "
                                       "real snapshots never share tuples")
    except (IndexError, ValueError, struct.error):  # ran off the end, or no newline where one must be
        raise pickle.UnpicklingError("pickle data was truncated") from None


def _line_int(data: bytes, pos: int) -> tuple[int, int]:
    end = data.index(b"\n", pos)
    text = data[pos + 1:end]
    if not text.isdigit() or len(text) > _MAX_INT_DIGITS:
        raise PickleShapeError(f"memo index {text[:24]!r} at offset {pos} is not a small number")
    return int(text), end + 1

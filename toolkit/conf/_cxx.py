"""Exact models of the C++ string-to-number calls the allocator parsers make (pure).

``std::stoi/stoul/stoull/stod`` (libstdc++) wrap ``strtol/strtoul/strtoull/strtod`` (glibc, "C" locale):
leading ``isspace`` is skipped, the longest valid prefix is converted and the rest ignored
(``"512MB"`` -> 512), no digits -> ``std::invalid_argument``, ``errno == ERANGE`` -> ``std::out_of_range``
(stoi also when the long does not fit an int). Unsigned conversions accept a ``-`` and negate modulo
2**64 (``"-1"`` -> 2**64-1). strtod also reads hex floats (``0x1p-1``), ``inf``/``infinity``/``nan(...)``
and sets ERANGE on overflow and on *inexact* results below DBL_MIN (so ``1e-310`` fails but the exact
subnormal ``0x1p-1074`` does not) -- checked against glibc and torch 2.13's ``stod`` on this machine.
"""

from __future__ import annotations

import math
import re
import sys

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
U64_MAX = 2**64 - 1
_DBL_MIN = sys.float_info.min  # smallest normal double

_SPACE = " \t\n\v\f\r"  # isspace() in the "C" locale
_INT_RE = re.compile(r"[ \t\n\v\f\r]*([+-]?)([0-9]+)")
_FLOAT_RE = re.compile(
    r"""[ \t\n\v\f\r]*(?P<sign>[+-]?)(?:
      0[xX](?P<hex>[0-9a-fA-F]+(?:\.[0-9a-fA-F]*)?|\.[0-9a-fA-F]+)(?:[pP](?P<hexp>[+-]?[0-9]+))?
    | (?P<dec>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
    | (?P<inf>[iI][nN][fF](?:[iI][nN][iI][tT][yY])?)
    | (?P<nan>[nN][aA][nN](?:\([0-9A-Za-z_]*\))?)
    )""",
    re.X,
)


class CxxConversionError(Exception):
    """A std::sto* call threw. ``kind`` is "invalid_argument" or "out_of_range"; ``func`` e.g. "stoull"."""

    def __init__(self, func: str, kind: str) -> None:
        super().__init__(func)
        self.func = func
        self.kind = kind

    @property
    def python_type(self) -> str:
        # pybind11's translation of the std exceptions that reach Python.
        return "ValueError" if self.kind == "invalid_argument" else "IndexError"


def _digits(text: str, func: str) -> tuple[str, str, int]:
    m = _INT_RE.match(text)
    if m is None:
        raise CxxConversionError(func, "invalid_argument")
    return m.group(1), m.group(2).lstrip("0") or "0", m.end()


def stoi(text: str) -> tuple[int, int]:
    """``std::stoi`` -> (value, characters consumed)."""
    sign, digits, end = _digits(text, "stoi")
    if len(digits) > 10:  # guard int(): anything this long is out of range anyway
        raise CxxConversionError("stoi", "out_of_range")
    value = -int(digits) if sign == "-" else int(digits)
    if not INT_MIN <= value <= INT_MAX:
        raise CxxConversionError("stoi", "out_of_range")
    return value, end


def stoull(text: str, func: str = "stoull") -> tuple[int, int]:
    """``std::stoull`` (and ``std::stoul`` on LP64, pass ``func="stoul"``) -> (value, consumed)."""
    sign, digits, end = _digits(text, func)
    if len(digits) > 20 or int(digits) > U64_MAX:
        raise CxxConversionError(func, "out_of_range")
    value = int(digits)
    return ((-value) % 2**64 if sign == "-" else value), end


def stod(text: str) -> tuple[float, int]:
    """``std::stod`` -> (value, consumed)."""
    m = _FLOAT_RE.match(text)
    if m is None:
        raise CxxConversionError("stod", "invalid_argument")
    negative = m.group("sign") == "-"
    if m.group("inf") is not None:
        return (-math.inf if negative else math.inf), m.end()
    if m.group("nan") is not None:
        return math.nan, m.end()
    if m.group("hex") is not None:
        mantissa = m.group("hex")
        exponent = int(m.group("hexp") or "0")
        try:
            value = float.fromhex(f"0x{mantissa}p{exponent}")
        except OverflowError:
            raise CxxConversionError("stod", "out_of_range") from None
        if _tiny_and_inexact(value, lambda: _hex_exact(mantissa, exponent)):
            raise CxxConversionError("stod", "out_of_range")
    else:
        literal = m.group("dec")
        value = float(literal)
        if math.isinf(value):
            raise CxxConversionError("stod", "out_of_range")
        if _tiny_and_inexact(value, lambda: _dec_exact(literal)):
            raise CxxConversionError("stod", "out_of_range")
    return (-value if negative else value), m.end()


def _tiny_and_inexact(value: float, exact) -> bool:
    """glibc sets ERANGE when the result is below DBL_MIN (or 0) and differs from the true value."""
    if value != 0.0 and abs(value) >= _DBL_MIN:
        return False
    true_value = exact()
    if true_value == 0:
        return False  # "0e-999" is exactly zero: no ERANGE
    if value == 0.0:
        return True  # a non-zero value that underflowed to zero
    from fractions import Fraction

    return Fraction(value) != true_value


def _dec_exact(literal: str):
    from fractions import Fraction

    mantissa, _, exp = literal.lower().partition("e")
    if mantissa.replace(".", "").strip("0") == "":
        return 0
    if exp and abs(int(exp)) > 100_000:
        # only reached when the value is subnormal or zero: such an exponent cannot give an exact subnormal
        return Fraction(1, 3)
    return Fraction(literal)


def _hex_exact(mantissa: str, exponent: int):
    from fractions import Fraction

    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac) or "0"
    m = int(digits, 16)
    if m == 0:
        return 0
    if abs(exponent) > 100_000:
        return Fraction(1, 3)
    return Fraction(m) * Fraction(2) ** (exponent - 4 * len(frac))


def is_all_digits(text: str) -> bool:
    """torch_npu's ``isDigit``: non-empty and every char passes C ``isdigit`` (ASCII 0-9 only)."""
    return bool(text) and all("0" <= c <= "9" for c in text)


def is_power_of_two(value: int) -> bool:
    """``llvm::isPowerOf2_64`` / ``std::has_single_bit`` on a size_t (0 is not a power of two)."""
    return value > 0 and value & (value - 1) == 0


def bit_floor_log2(value: int) -> int:
    """``63 - countLeadingZeros(v)`` == ``std::bit_width(v) - 1`` for v > 0."""
    return value.bit_length() - 1


def to_size_t(value: int) -> int:
    """``static_cast<size_t>(int)``: negative ints wrap modulo 2**64."""
    return value % 2**64

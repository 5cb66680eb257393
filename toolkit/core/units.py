"""Byte formatting at the edge. Bytes are ints everywhere else (`*_bytes`)."""

from __future__ import annotations

KiB = 1024
MiB = 1024**2
GiB = 1024**3


def format_size(nbytes: int) -> str:
    """Format like c10's ``format_size`` (used in allocator OOM messages).

    <= 1 KiB -> "N bytes"; <= 1 MiB -> "%.2f KiB"; <= 1 GiB -> "%.2f MiB"; else "%.2f GiB"
    (boundaries inclusive, as upstream). Example: ``format_size(20 * MiB) == "20.00 MiB"``.
    """
    if nbytes <= KiB:
        return f"{nbytes} bytes"
    if nbytes <= MiB:
        return f"{nbytes / KiB:.2f} KiB"
    if nbytes <= GiB:
        return f"{nbytes / MiB:.2f} MiB"
    return f"{nbytes / GiB:.2f} GiB"


def format_bytes(nbytes: int | None) -> str:
    """Human-readable size for tables and plots ("1.50 GiB"); None -> "n/a"."""
    if nbytes is None:
        return "n/a"
    sign = "-" if nbytes < 0 else ""
    n = abs(nbytes)
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= scale:
            return f"{sign}{n / scale:.2f} {unit}"
    return f"{sign}{n} B"

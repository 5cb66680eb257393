"""Every benchmark figure printed next to the floor it must clear, with FAIL when it does not.

A benchmark that reports a number without saying what it should be lets a regression (or a loaded
machine) pass unnoticed. Each figure goes through ``check``: it prints the figure, its floor and
``ok`` / ``FAIL``, and a missed floor makes the benchmark exit with ``FLOOR_MISSED_EXIT`` so
``run_all.py`` can list it. ``--quick`` runs (the test suite's smoke) print the figures but check nothing:
their sizes are too small to time.
"""

from __future__ import annotations

import sys

FLOOR_MISSED_EXIT = 3
_missed: list[str] = []
_quick = False


def set_quick(quick: bool) -> None:
    """Quick runs print their figures but judge none (too small to time)."""
    global _quick
    _quick = quick


def check(label: str, value: float, floor: float, unit: str, *, higher_is_better: bool = True,
          fmt: str = ",.1f") -> bool:
    """Print ``label: value unit (floor ...) ok|FAIL``; returns whether the floor was cleared."""
    ok = value >= floor if higher_is_better else value <= floor
    sign = ">=" if higher_is_better else "<="
    if _quick:
        verdict = "(quick run: not judged)"
    else:
        verdict = "ok" if ok else "FAIL: below its floor"
        if not ok:
            _missed.append(f"{label}: {value:{fmt}} {unit}, floor {sign} {floor:{fmt}} {unit}")
    print(f"   {label:52s} {value:>12{fmt}} {unit:10s} floor {sign} {floor:{fmt}} {unit}   {verdict}", flush=True)
    return ok


def finish() -> int:
    """The exit status: 0, or ``FLOOR_MISSED_EXIT`` after listing every missed floor."""
    if _missed:
        print("\nFLOORS MISSED (a shared or loaded machine lowers every figure; rerun on an idle one before "
              "blaming the code):", file=sys.stderr)
        for line in _missed:
            print(f"  FAIL {line}", file=sys.stderr)
        return FLOOR_MISSED_EXIT
    return 0

"""Run the hostile-input cases (tests/hostile) against a source tree and print the counts per area.

    python scripts/hostile_report.py                 # this checkout
    python scripts/hostile_report.py --tree /path/to/other/checkout --details

Each case runs in a child process with an address-space limit and a per-case timeout (see
tests/hostile/hostile_runner.py). Outcomes: clear (one-line toolkit error), ok (accepted where that is
fine), silent (accepted what must be refused), crash (other exception, multi-line message, side effect,
dead worker), hang (no answer within the timeout).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "hostile"))

from hostile_runner import run_cases, summarize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout whose toolkit/ is tested")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per case before it counts as a hang")
    parser.add_argument("--area", action="append", help="only these areas (repeatable)")
    parser.add_argument("--details", action="store_true", help="list every case that is not clear/ok")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests" / "hostile"))
    from hostile_cases import all_cases

    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        cases = all_cases(tmp)
        only = [i for i, c in enumerate(cases) if not args.area or c.area in args.area]
        t0 = time.perf_counter()
        results = run_cases(tmp, args.tree, timeout_s=args.timeout, only=only)
        print(f"hostile inputs against {args.tree} ({time.perf_counter() - t0:.0f} s):")
        print(summarize(results))
        if args.details:
            for r in results:
                if r.outcome not in ("clear", "ok"):
                    print(f"  {r.outcome:6s} {r.area}/{r.name}: {r.message[:150]}")


if __name__ == "__main__":
    main()

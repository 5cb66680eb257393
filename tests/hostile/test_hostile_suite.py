"""Every hostile input (tests/hostile/hostile_cases.py) answered in one line, within time and memory bounds.

Each case runs in a child process (``hostile_runner.py``) with an address-space cap; a case that does not
answer within 10 s is a hang, one that takes over 5 s or grows the peak RSS by over 512 MiB fails too.
The summary (tried / clear / ok / silent / crash / hang per area) is printed: ``pytest -s`` shows it.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from hostile_cases import all_cases
from hostile_runner import run_cases, summarize

REPO = HERE.parents[1]


def test_every_hostile_input_is_refused_in_one_line_within_bounds(tmp_path: Path) -> None:
    results = run_cases(tmp_path, REPO, timeout_s=10.0)
    print("\n" + summarize(results))
    bad = [f"{r.outcome} {r.area}/{r.name}: {r.message[:120]}" for r in results if r.outcome not in ("clear", "ok")]
    assert not bad, "\n".join(bad)
    areas = {r.area for r in results}
    assert {"pickle", "files", "types", "json", "runfile", "replay", "cli", "magic", "canary"} <= areas
    assert len(results) > 600
    assert not (tmp_path / "CANARY-code-ran").exists()


def test_the_suite_fails_on_a_loader_that_hangs_crashes_or_runs_code(tmp_path: Path) -> None:
    """The runner itself can fail: a fake toolkit whose loader misbehaves is scored hang / crash / silent."""
    tree = tmp_path / "tree"
    pkg = tree / "toolkit"
    for sub in ("", "core", "snapshot"):
        (pkg / sub).mkdir(parents=True, exist_ok=True)
        (pkg / sub / "__init__.py").touch()
    (pkg / "core" / "errors.py").write_text("class ToolkitError(Exception):\n    pass\n")
    (pkg / "core" / "records.py").write_text("def load_run(path):\n    return None\n")
    (pkg / "snapshot" / "__init__.py").write_text(textwrap.dedent("""
        import os, time
        def load_snapshot(path):
            name = os.path.basename(str(path))
            if name.startswith("tuple-dag-mark"):
                time.sleep(60)                     # a hang
            if name.startswith("memo-long-binput-128M"):
                b = bytearray(900 << 20)           # 900 MiB, touched
                b[::4096] = b"x" * len(b[::4096])
                raise ValueError("used memory")
            if name.startswith("global-os-system"):
                open(os.environ.get("X", "") or os.path.join(os.path.dirname(os.path.dirname(path)),
                     "CANARY-code-ran"), "w").close()   # "code ran"
            if name.startswith("dup-bomb"):
                return {}                          # silently accepted
            raise TypeError("deep\\ntraceback")
    """))
    cases = all_cases(tmp_path / "work")
    pick = {c.name: i for i, c in enumerate(cases) if c.area == "pickle"}
    names = ["tuple-dag-mark-100", "memo-long-binput-128M", "global-os-system", "dup-bomb", "empty"]
    results = run_cases(tmp_path / "work", tree, timeout_s=3.0, only=[pick[n] for n in names])
    got = {r.name: r.outcome for r in results}
    assert got["tuple-dag-mark-100"] == "hang"
    assert got["memo-long-binput-128M"] == "crash"
    assert got["global-os-system"] == "crash"
    assert got["dup-bomb"] == "silent"
    assert got["empty"] == "crash"
    assert any(r.area == "canary" and r.outcome == "crash" for r in results)  # the canary saw the code run

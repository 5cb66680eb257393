"""Regenerate the "Module map" of docs/design.md: one line per module, its docstring's first line.

Run ``python scripts/module_map.py`` after adding, renaming or re-documenting a module;
``tests/test_module_layout.py`` fails while the map is stale. Reads the files with ``ast``: nothing is imported.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
START, END = "## Module map\n", "\n## "
WIDTH = 150


def first_line(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    line = " ".join(doc.split("\n\n")[0].split())
    return line if len(line) <= WIDTH else line[: WIDTH - 1].rstrip() + " …"


def module_map() -> str:
    """The section's body: one ``### folder`` heading per package, one ``- file: line`` per module."""
    out = []
    for pkg in sorted(p.parent for p in (ROOT / "toolkit").rglob("__init__.py")):
        rel = pkg.relative_to(ROOT).as_posix()
        out.append(f"### `{rel}/`\n")
        files = sorted(pkg.glob("*.py"), key=lambda p: (p.name != "__init__.py", p.name))
        out.extend(f"- `{f.name}`: {first_line(f)}" for f in files)
        out.append("")
    return "\n".join(out)


def updated(text: str) -> str:
    """``text`` with its module map replaced (everything from the map's heading to the next ``## ``)."""
    head, rest = text.split(START, 1)
    end = rest.find(END)
    return f"{head}{START}\n{module_map()}{rest[end:] if end >= 0 else ''}"


def main() -> int:
    text = DESIGN.read_text(encoding="utf-8")
    new = updated(text)
    if new != text:
        DESIGN.write_text(new, encoding="utf-8")
        print(f"updated {DESIGN.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Every ``docs/<name>.md`` a docstring, comment or README cites is a file of this repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXTERNAL = {"chromium_browser_vs_google_chrome.md", "user_data_dir.md"}  # Chromium's own docs, cited by URL


def test_cited_docs_exist() -> None:
    files = subprocess.run(["git", "ls-files", "toolkit", "tests", "scripts", "vllm_ascend", "benchmarks", "notebooks",
                            "README.md"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    missing = set()
    for f in files:
        path = ROOT / f
        if path.suffix not in (".py", ".md", ".ipynb", ".sh", ".mjs") or not path.is_file():
            continue
        for name in re.findall(r"docs/([A-Za-z0-9_.-]+\.md)", path.read_text(errors="replace")):
            if name not in EXTERNAL and not (ROOT / "docs" / name).is_file():
                missing.add(f"{f}: docs/{name}")
    assert not missing, sorted(missing)

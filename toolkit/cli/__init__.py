"""The command line (``python -m toolkit`` / ``ascend-memlab``)."""

from __future__ import annotations

from toolkit.cli.main import main

__all__ = ["main"]

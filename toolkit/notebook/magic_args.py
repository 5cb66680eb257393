"""Argument parsing shared by every magic: argparse, but errors are one-line ``UsageError``s.

argparse would call ``sys.exit`` on bad input, which in a kernel prints a traceback-like SystemExit; here
every problem becomes ``UsageError: %magic: ... (see %magic?)``.
"""

from __future__ import annotations

import argparse
import shlex
from typing import NoReturn

from IPython.core.error import UsageError


class MagicArgumentParser(argparse.ArgumentParser):
    """argparse that reports problems as one-line ``UsageError``s instead of exiting the kernel."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"%{self.prog}: {message} (see %{self.prog}?)")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise UsageError(message or f"%{self.prog}: see %{self.prog}?")


def split_line(line: str, prog: str) -> list[str]:
    """Shell-like split of a magic's line (quotes group words); unbalanced quotes are a UsageError."""
    try:
        return shlex.split(line)
    except ValueError as err:
        raise UsageError(f"%{prog}: could not read the line: {err}") from None

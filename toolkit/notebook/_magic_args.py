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


def strip_comment(line: str) -> str:
    """``line`` without its trailing ``# comment``, as a shell reads it.

    IPython hands a line magic everything after its name, comment included, so a README line such as
    ``%alloc_conf  # show the conf`` would reach the parser as two arguments. A ``#`` starts a comment
    only outside quotes, unescaped, and at the start of a word (``a#b`` stays one word), the rule of
    POSIX sh (XCU 2.3, "Token Recognition", rule 9).
    """
    quote: str | None = None
    escaped = False
    for i, ch in enumerate(line):
        if escaped:
            escaped = False
        elif ch == "\\" and quote != "'":
            escaped = True
        elif quote is not None:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def split_line(line: str, prog: str) -> list[str]:
    """Shell-like split of a magic's line (quotes group words, a trailing ``# comment`` is dropped);
    unbalanced quotes are a UsageError."""
    try:
        return shlex.split(strip_comment(line))
    except ValueError as err:
        raise UsageError(f"%{prog}: could not read the line: {err}") from None

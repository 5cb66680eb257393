"""Two-column tables for every view: HTML for notebooks, aligned text for terminals (pure, stdlib only)."""

from __future__ import annotations

import html
from collections.abc import Sequence


def rows_html(rows: Sequence[tuple[str, str]], header: tuple[str, str] = ("", "")) -> str:
    """Two-column HTML table (keys in code font), escaped: what every toolkit view shows in a notebook."""
    head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in header)
    body = "".join(
        f"<tr><td style='text-align:left'><code>{html.escape(k)}</code></td>"
        f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
        for k, v in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def rows_text(rows: Sequence[tuple[str, str]]) -> str:
    """The same rows as aligned plain text, for terminals and scripts."""
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)

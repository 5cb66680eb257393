"""Displayable results of the conf API (conf status, policy): plain text for terminals and scripts, HTML for notebooks.

Views only format; they never compute. Magics return them so ``_``, assignment and terminal IPython work.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from toolkit.core.tables import rows_html, rows_text

if TYPE_CHECKING:
    from toolkit.conf import AllocConf
    from toolkit.conf.policy import PolicyResult


def _option_rows(conf: AllocConf) -> list[tuple[str, str]]:
    from toolkit.conf import explain

    return [(str(row[0]), str(row[1])) for row in explain(conf)]


@dataclass(frozen=True)
class PolicyView:
    """vllm-ascend's rewrite of the environment, the conf the workers then get, and the toolkit's advice."""

    upstream: PolicyResult
    effective: Any  # toolkit.conf effective-conf object, or None when it does not parse
    error: str | None
    recommended: PolicyResult

    def _rows(self) -> list[tuple[str, str]]:
        rows = [(k, repr(v)) for k, v in self.upstream.after.items()] or [("(no variable)", "")]
        if self.effective is not None:
            rows.append(("engine runs with", str(self.effective.conf) or "(defaults)"))
        if self.error:
            rows.append(("engine fails", self.error))
        rows += [(f"quirk: {q.code}", q.message) for q in self.upstream.quirks]
        if self.recommended.after != self.upstream.after:
            rec = ", ".join(f"{k}={v!r}" for k, v in self.recommended.after.items()) or "(unset)"
            rows.append(("toolkit would set", rec))
        return rows

    def __str__(self) -> str:
        return f"After {self.upstream.policy}:\n{rows_text(self._rows())}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return f"<b>After {html.escape(self.upstream.policy)}</b>" + rows_html(self._rows())


@dataclass(frozen=True)
class ConfStatus:
    """The allocator variables, the conf a new process would read, and what vllm-ascend makes of it."""

    platform: str
    version: str | None
    variables: dict[str, str | None] = field(default_factory=dict)
    effective: Any = None
    error: str | None = None
    after_policy: PolicyView | None = None
    notes: tuple[str, ...] = ()
    checked: AllocConf | None = None  # set by ``for_check``: validation only, environment untouched
    defaults: tuple[tuple[str, str], ...] = ()  # what stays in force between calls (the session's target)

    @classmethod
    def for_check(cls, conf: AllocConf) -> ConfStatus:
        return cls(platform=conf.platform, version=conf.version, checked=conf, notes=("valid (not applied)",))

    @property
    def conf(self) -> AllocConf | None:
        if self.checked is not None:
            return self.checked
        return None if self.effective is None else self.effective.conf

    def _sections(self) -> list[tuple[str, list[tuple[str, str]]]]:
        sections: list[tuple[str, list[tuple[str, str]]]] = []
        title = f"{self.platform} allocator conf" + (f" (version {self.version})" if self.version else "")
        if self.checked is None:
            sections.append((
                f"{title}: environment",
                [(k, "unset" if v is None else repr(v)) for k, v in self.variables.items()],
            ))
            if self.error:
                sections.append(("a process started now fails", [("error", self.error)]))
            elif self.effective is not None:
                read = self.effective.variable or "(none set: defaults)"
                sections.append((f"a process started now reads {read}", _option_rows(self.effective.conf)))
                sections.append(("notes", [("note", n) for n in self.effective.notes]))
        else:
            sections.append((f"{title}: {str(self.checked) or '(defaults)'}", _option_rows(self.checked)))
        # warnings are part of the rows of toolkit.conf.explain (one row per warning)
        if self.notes:
            sections.append(("", [("note", n) for n in self.notes]))
        if self.defaults:
            sections.append(("kept between calls", list(self.defaults)))
        return [(t, rows) for t, rows in sections if rows]

    def __str__(self) -> str:
        parts = []
        for title, rows in self._sections():
            parts.append((f"{title}\n" if title else "") + rows_text(rows))
        if self.after_policy is not None:
            parts.append(str(self.after_policy))
        return "\n".join(parts)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        parts = [
            (f"<b>{html.escape(title)}</b>" if title else "") + rows_html(rows)
            for title, rows in self._sections()
        ]
        if self.after_policy is not None:
            parts.append(self.after_policy._repr_html_())
        return "<div class='memlab-conf'>" + "".join(parts) + "</div>"

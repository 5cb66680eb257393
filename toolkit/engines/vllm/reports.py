"""What the real engines report back: views that hold plain data only, never a reference to the engine.

Kept apart from ``engine`` so that holding a report (``Out[]``, ``_``) can never keep an engine alive,
and so the engine module stays about the engine's lifecycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from toolkit.core.vocab import CONF_VARS as ALLOC_VARS
from toolkit.core.vocab import WRITE_VAR
from toolkit.core.tables import rows_html, rows_text


@dataclass(frozen=True)
class ConfReadback:
    """The allocator conf: as the user asked, as given to the engine (after the policy), as each worker sees it."""

    platform: str  # the allocator the conf targets: "npu" | "cuda"
    backend: str
    requested: dict[str, str | None]  # allocator variables before the start (what %alloc_conf left)
    given: dict[str, str | None]  # after the policy: what the engine processes inherited
    workers: tuple[dict[str, Any], ...]  # memlab_effective_conf of every rank
    policy_notes: tuple[str, ...] = ()

    @property
    def variable(self) -> str:
        return WRITE_VAR.get(self.platform, WRITE_VAR["npu"])

    @property
    def requested_conf(self) -> str | None:
        return self.requested.get(self.variable)

    @property
    def effective_conf(self) -> str | None:
        """The value of the platform's variable inside rank 0 (what its allocator reads)."""
        return self.workers[0]["environ"].get(self.variable) if self.workers else None

    @property
    def differences(self) -> tuple[str, ...]:
        """Every place where what a worker runs with differs from what the user asked for."""
        out = []
        for w in self.workers:
            for var in ALLOC_VARS:
                asked, seen = self.requested.get(var), w["environ"].get(var)
                if asked != seen:
                    out.append(f"rank {w['rank']}: {var} is {seen!r}, you asked for {asked!r}")
            seg = w.get("segments", {})
            if seg.get("known") and self._wants_expandable(w) != seg.get("expandable"):
                out.append(f"rank {w['rank']}: segments are {'' if seg['expandable'] else 'not '}expandable, "
                           f"but the conf says expandable_segments:{self._wants_expandable(w)} (torch_npu falls "
                           "back silently when aclrtReserveMemAddress fails)")
        return tuple(out)

    def _wants_expandable(self, worker: Mapping[str, Any]) -> bool:
        conf = worker["environ"].get(self.variable) or ""
        items = dict(item.split(":", 1) for item in conf.split(",") if ":" in item)
        return items.get("expandable_segments", "").strip() == "True"

    def rows(self) -> list[tuple[str, str]]:
        var = self.variable
        rows = [(f"{var} (you asked)", repr(self.requested.get(var))),
                (f"{var} (given to the engine)", repr(self.given.get(var)))]
        rows += [("policy", n) for n in self.policy_notes]
        for w in self.workers:
            r = w["rank"]
            rows.append((f"rank {r} (pid {w['pid']}) sees", repr(w["environ"].get(var))))
            if w.get("allocator_settings"):
                rows.append((f"rank {r} allocator parsed", w["allocator_settings"]))
            seg = w.get("segments", {})
            if seg.get("known"):
                rows.append((f"rank {r} segments", f"{seg['expandable_segments']}/{seg['segments']} expandable"))
            else:
                rows.append((f"rank {r} segments", f"unknown: {seg.get('reason', 'n/a')}"))
        if self.backend == "cpu":
            rows.append(("note", "the CPU backend allocates host memory: the conf reaches the workers but no "
                                 "caching allocator reads it"))
        rows += [("DIFFERS", d) for d in self.differences] or [("differences", "none")]
        return rows

    def __str__(self) -> str:
        return "allocator conf, read back from the workers\n" + rows_text(self.rows())

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return "<b>allocator conf, read back from the workers</b>" + rows_html(self.rows())


@dataclass(frozen=True)
class StopReport:
    """What ``stop`` did: processes that exited or had to be killed, references that outlived the engine."""

    name: str
    engine_pids: tuple[int, ...] = ()
    exited: tuple[int, ...] = ()
    killed: tuple[int, ...] = ()
    seconds: float = 0.0
    released: bool = True  # the vllm.LLM object was freed
    notes: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return not self.killed and set(self.exited) == set(self.engine_pids)

    def rows(self) -> list[tuple[str, str]]:
        rows = [("engine", self.name), ("processes", ", ".join(map(str, self.engine_pids)) or "none (in-process)"),
                ("exited", ", ".join(map(str, self.exited)) or "-"), ("stopped in", f"{self.seconds:.2f} s")]
        if self.killed:
            rows.append(("KILLED (did not exit)", ", ".join(map(str, self.killed))))
        rows.append(("vllm.LLM freed", "yes" if self.released else "no: something still references it"))
        rows += [("note", n) for n in self.notes]
        return rows

    def __str__(self) -> str:
        return "engine stopped\n" + rows_text(self.rows())

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return "<b>engine stopped</b>" + rows_html(self.rows())

"""The command-line subcommands that run things: the seed scenario, replays of recorded snapshots, the demo.

Imported lazily by ``toolkit.cli.main`` so that ``ascend-memlab conf ...`` stays instant.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from toolkit.core.units import GiB, format_bytes


def _cmd_scenario(args: argparse.Namespace) -> int:
    from toolkit.viz.report import write_html_report
    from toolkit.engines.scenarios import SEED_CONFS, ScenarioConf, seed_scenario

    confs = [ScenarioConf(c) for c in args.conf] if args.conf else list(SEED_CONFS)
    out = Path(args.out)
    result = seed_scenario(args.photos, confs, out, seed=args.seed, progress=not args.quiet)
    report = write_html_report(list(result.runs.values()), out / "report.html",
                               title="Seed scenario: Qwen3-VL-8B, TP 2, 64 GiB NPUs — simulated")
    print(result.format_table())
    print(f"\nruns:   {out / 'runs'}\nreport: {report}  (self-contained, opens offline)")
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from toolkit.replay import replay
    from toolkit.snapshot import load_snapshot

    snapshot = load_snapshot(args.snapshot)  # once: each conf replays the same loaded data
    capacity = int(args.capacity_gib * GiB) if args.capacity_gib else None
    rows = [("conf", "events", "outcome", "peak reserved", "peak fragmentation", "final reserved", "retries")]
    notes = []
    for text in args.conf or ["recorded"]:
        result = replay(snapshot, None if text == "recorded" else text, args.platform, capacity_bytes=capacity,
                        device=args.device)
        s = result.summary()
        notes.append(f"{text}: {result.fidelity().line()}")
        outcome = "completed" if s["completed"] else (
            f"OOM at event {s['oom_event']}" if s["oom_event"] is not None else f"stopped: {result.stop_reason}")
        rows.append((text if text != "recorded" else f"recorded ({s['conf'] or 'defaults'})",
                     f"{s['events']}", outcome, format_bytes(s["peak_reserved_bytes"]),
                     format_bytes(s["peak_fragmentation_bytes"]), format_bytes(s["final_reserved_bytes"]),
                     str(s["num_alloc_retries"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"[simulated] replay of {args.snapshot}, device {args.device}: torch {result.torch_version or '?'} "
          f"({result.torch_version_source}); capacity {format_bytes(result.device.capacity_bytes)} "
          f"({result.capacity_source})")
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print("\n".join(notes))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``scenario``, ``demo`` and ``replay`` on the top-level parser."""
    for name, help_text in (("scenario", "run the seed scenario (Qwen3-VL multi-modal OOM) under several confs"),
                            ("demo", "the main job: the seed scenario under 4 confs, an HTML report, a summary")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--photos", type=int, default=300, help="photos in the generated set (default 300)")
        p.add_argument("--conf", action="append", metavar="CONF",
                       help="a conf to run (repeatable; default: the 4 confs of the seed scenario)")
        p.add_argument("--out", default=f"out/{name}", help="folder for photos, run files and report.html")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.set_defaults(handler=_cmd_scenario)
    r = sub.add_parser("replay", help="replay a recorded snapshot (.pickle/.json) under other confs")
    r.add_argument("snapshot", help="file from torch.cuda.memory._dump_snapshot or torch_npu's equivalent")
    r.add_argument("--conf", action="append", metavar="CONF",
                   help="conf to replay under (repeatable; 'recorded' = the recorded conf, the default)")
    r.add_argument("--platform", choices=("cuda", "npu"), default=None, help="allocator model (default: recorder's)")
    r.add_argument("--capacity-gib", type=float, default=None, help="device memory, for OOM under other confs")
    r.add_argument("--device", type=int, default=0, help="which device trace of the snapshot (default 0)")
    r.set_defaults(handler=_cmd_replay)
